"""The workspace image on the engine before a launch (the Docker backend's
`prepare_image`, which the Swarm backend inherits): already there, being
built on this host by ./scripts/run (services/workspaces/image_build.py), or
pulled as WORKSPACE_PULL_POLICY says, with progress for the student; and
what the operator is told at start-up when it is missing."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import AsyncIterator

from services.docker import DockerEngine, DockerError, DockerUnavailable
from services.settings import Settings
from services.workspaces import image_build
from services.workspaces.backend import BackendError, BackendUnavailable, Progress
from services.workspaces.docker.support import engine_errors
from services.workspaces.pull import PullProgress

log = logging.getLogger("apranova.workspaces")


async def ensure_image(engine: DockerEngine, settings: Settings, title: str) -> AsyncIterator[Progress]:
    """`settings.workspace_image` present on the engine; `title` names the
    engine in a refusal ("Docker refused ...")."""
    image, policy = settings.workspace_image, settings.workspace_pull_policy
    refusal = f"{title} refused to create the workspace"
    yield Progress(0, f"Checking the image {image}")
    with engine_errors(refusal):
        present = await engine.image_exists(image)
    if not present:  # ./scripts/run may be building it behind the server (a first run)
        async for progress in _wait_for_build(engine, image, settings.workspace_image_build_dir, refusal):
            yield progress
        with engine_errors(refusal):
            present = await engine.image_exists(image)
    if not present and policy == "never":
        raise BackendError(f"The workspace image {image} is not on the Docker host and the pull policy "
                           "is 'never'.")
    if not present or policy == "always":
        yield Progress(4, f"Pulling the image {image}")
        progress = PullProgress()
        try:
            async for message in engine.pull(image):
                percent = progress.update(message)
                yield Progress(4 + percent * 96 // 100, f"Pulling the image {image}: {percent}%")
        except DockerUnavailable as exc:
            raise BackendUnavailable(str(exc)) from None
        except DockerError as exc:
            if not await engine.image_exists(image):
                raise BackendError(f"The workspace image {image} could not be pulled: {exc.message}") from None
            log.warning("pull of %s failed (%s); using the local copy", image, exc.message)
    yield Progress(100, "Image is available")


async def _wait_for_build(engine: DockerEngine, image: str, directory: str, refusal: str) -> AsyncIterator[Progress]:
    """While ./scripts/run builds `image` on this host (image_build), its
    progress: elapsed and an estimate, until the image is there."""
    while (build := image_build.current(directory, image)) is not None:
        if build.failed:
            raise BackendError(f"The build of the workspace image {image} failed; see {build.log}.")
        with engine_errors(refusal):
            if await engine.image_exists(image):
                return
        elapsed = time.time() - build.started
        percent = min(95, int(elapsed * 100 / max(build.estimate, 1)))
        # messages.image_step words it for the student ("Preparing the IDE software ... first time").
        yield Progress(percent, f"Building the image {image} on this server ({image_build.words(elapsed)} "
                                f"so far, about {image_build.words(max(build.estimate - elapsed, 60))} left): "
                                f"{percent}%")
        await asyncio.sleep(2)


async def image_notes(engine: DockerEngine, settings: Settings) -> list[str]:
    """For the operator at start-up (the backend's `check`): what the first
    workspace would meet if WORKSPACE_IMAGE is not on the engine."""
    image, policy = settings.workspace_image, settings.workspace_pull_policy
    if await engine.image_exists(image):
        return []
    build = image_build.current(settings.workspace_image_build_dir, image)
    if build is not None and not build.failed:
        return [f"WORKSPACE_IMAGE {image} is being built on this server (log: {build.log}); workspaces "
                "created meanwhile wait for it."]
    if policy == "never":
        return [f"WORKSPACE_IMAGE {image} is not on the Docker host and WORKSPACE_PULL_POLICY is 'never': "
                "every workspace will fail until the image is built or loaded there."]
    return [f"WORKSPACE_IMAGE {image} is not on the Docker host; the first workspace will pull it."]
