"""Docker pull messages -> one percentage that never goes backwards."""
from __future__ import annotations


class PullProgress:
    """Docker first announces every layer ('Already exists', 'Pulling fs
    layer', 'Waiting'), then reports the transfers. The percentage moves only
    on transfers: computed after the first announcement, a shared base layer
    that already exists would read as 100% before anything was downloaded."""

    def __init__(self) -> None:
        self.layers: dict[str, float] = {}
        self.percent = 0

    def update(self, message: dict) -> int:
        layer, status = message.get("id"), message.get("status", "")
        if layer and (status.startswith("Pulling fs layer") or status.startswith("Waiting")):
            self.layers.setdefault(layer, 0.0)
            return self.percent
        if layer and status == "Already exists":
            self.layers[layer] = 1.0
            return self.percent
        if layer and status.startswith("Downloading"):
            detail = message.get("progressDetail") or {}
            if detail.get("total"):
                self.layers[layer] = 0.8 * min(1.0, detail.get("current", 0) / detail["total"])
        elif layer and status.startswith("Extracting"):
            detail = message.get("progressDetail") or {}
            if detail.get("total"):
                self.layers[layer] = 0.8 + 0.2 * min(1.0, detail.get("current", 0) / detail["total"])
        elif layer and status in ("Download complete", "Verifying Checksum"):
            self.layers[layer] = max(self.layers.get(layer, 0.0), 0.8)
        elif layer and status == "Pull complete":
            self.layers[layer] = 1.0
        if self.layers:
            self.percent = max(self.percent, int(100 * sum(self.layers.values()) / len(self.layers)))
        return self.percent
