"""What a student reads about their workspace, and what stays for the
operator. A workspace's ``message`` (the status socket's and the REST
answer's) is always the student's text: what happened and what to do,
with a reference to quote (``ws-<user id>-<run>``). The engine's own words
(ports, image names, pull policy, Docker's errors) go in the change's note
as ``detail``, which reaches only the event log, the admin API and the
server log (see models.workspaces.STUDENT_NOTE_KEYS)."""
from __future__ import annotations

# Why a start failed, by the provisioning phase it failed in.
START_FAILED = {
    "port": "Your workspace could not start: the server has no room for another workspace right now.",
    "image": "Your workspace could not start: its software could not be prepared.",
    "volume": "Your workspace could not start: the storage for your files could not be prepared.",
    "container": "Your workspace could not start: its container did not start.",
    "refused": "Your workspace could not start: {engine} refused to create the workspace.",
    "ide": "Your workspace could not start: its IDE did not start.",
    "engine": "Your workspace could not start: the workspace service stopped answering.",
    "internal": "Your workspace could not start because of an error on the server.",
}


def reference(doc: dict) -> str:
    """What a student quotes to a trainer: the owner and the provisioning
    run, enough to find the run's events (each event carries ``run``)."""
    return f"ws-{doc['owner_id']}-{doc.get('run', 1)}"


def start_failed(doc: dict, phase: str, engine: str = "the server") -> str:
    """`phase`: a key of START_FAILED; `engine` names the engine in "refused"."""
    return (f"{START_FAILED.get(phase, START_FAILED['internal']).format(engine=engine)} Try again; if it fails again, tell your "
            f"trainer: reference {reference(doc)}.")


def stopped_unexpectedly(doc: dict, reason: str) -> str:
    """A running workspace that stopped outside anyone's request: ``died``
    (exited, or removed outside) or ``oom``."""
    if reason == "oom":
        what = "Your workspace ran out of memory and was stopped. Your files are kept: start it again, and close " \
               "programs you do not need"
    elif reason == "lost":
        what = "Your workspace stopped: the machine running it went away. Your files are kept on that machine: " \
               "start it again in a while"
    else:
        what = "Your workspace stopped unexpectedly. Your files are kept: start it again"
    return f"{what}; if it keeps happening, tell your trainer: reference {reference(doc)}."


def failure(detail: str, **extra: str) -> dict:
    """The note of a failure: ``detail`` is the operator's text."""
    return {"kind": "failure", "detail": detail, **extra}


def step(name: str, **extra: object) -> dict:
    """The note of a provisioning step students see (``step`` names it, so
    a client can time each step)."""
    return {"kind": "step", "step": name, **extra}


def internal(detail: str) -> dict:
    """The note of a change students need not see (bookkeeping)."""
    return {"kind": "step", "internal": True, "detail": detail}


def image_step(message: str) -> tuple[str, dict]:
    """A backend's image progress ("Checking the image <name>", "Pulling the
    image <name>: 40%", "Image is available") in a student's words; the
    image's name stays in the detail."""
    if message.startswith("Pulling"):
        _, _, percent = message.rpartition(": ")
        text = "Downloading the workspace software" + (f": {percent}" if percent.endswith("%") else "")
        return text, step("download", detail=message)
    if message.startswith("Building"):  # "Building the image <name> on this server (3 min so far, ...): 20%"
        _, _, times = message.partition(" on this server ")
        times = times.rpartition(":")[0] if ":" in times else times
        return f"Preparing the IDE software on this server for the first time {times}".rstrip(), \
            step("image-build", detail=message)
    if message.startswith("Checking"):
        return "Checking the workspace software", step("image", detail=message)
    if message == "Image is available":
        return "The workspace software is ready", step("image-ready")
    return "Preparing the workspace software", step("image", detail=message)
