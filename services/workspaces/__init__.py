"""Workspaces: one isolated browser IDE per user, and its lifecycle.

Where each rule lives (dependencies run one way, down this list):

* `service`: the facade handlers call (create/get/find/stop/delete, who may
  act on whose, `url`, `endpoint`), and the WORKSPACE_BACKEND selection.
* `reconcile`: the engine-event watcher and start-up reconciliation.
* `provisioner`: provisioning runs, as compare-and-set steps around backend calls.
* `lifecycle`: the `State` enum, the one transition table, the one
  compare-and-set function every change goes through.
* `events`: `subscribe(workspace_id, after)`: replayed then live events,
  across processes.
* `store`: the documents and the event log.
* `backend`: the interface to a container engine (`Backend` Protocol); it
  imports nothing above. `docker`: the Docker engine behind it (a sub-package,
  with `docker/network.py`: the one workspace network, duplicates healed),
  `swarm`: Docker Swarm. `image_build`: waiting for ./scripts/run's image build.
* `identity`: the deployment's id (kept in the database) and which engine
  objects are its own, by label.
"""
from services.workspaces.backend import Endpoint
from services.workspaces.lifecycle import State
from services.workspaces.pull import PullProgress
from services.workspaces.service import WorkspaceService, WorkspaceUnavailable, load_backend, start
from services.workspaces.store import utcnow

__all__ = ["Endpoint", "PullProgress", "State", "WorkspaceService", "WorkspaceUnavailable", "load_backend",
           "start", "utcnow"]
