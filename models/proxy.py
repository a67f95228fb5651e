"""Shapes of the workspace proxy's API endpoint."""
from __future__ import annotations

from models.base import ResponseModel


class WorkspaceOpenOut(ResponseModel):
    """A workspace URL on its own origin, carrying a one-time ticket."""
    url: str
