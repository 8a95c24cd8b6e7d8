"""Progress and heartbeat reporting through a file, so it works for local processes and Ray alike."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class Progress:
    """Write `progress.json` atomically; the API polls it. Throttled to avoid disk churn."""

    def __init__(self, path: str | Path | None, min_interval: float = 0.5) -> None:
        self.path = Path(path) if path else None
        self.min_interval = min_interval
        self._last = 0.0
        self.metrics: dict[str, Any] = {}
        self.last_fraction = 0.0
        self.last_message = ""

    def update(self, fraction: float, message: str = "", force: bool = False, **metrics: Any) -> None:
        self.metrics.update(metrics)
        self.last_fraction, self.last_message = fraction, message
        now = time.time()
        if not force and now - self._last < self.min_interval:
            return
        self._last = now
        if self.path is None:
            return
        payload = {
            "fraction": max(0.0, min(1.0, float(fraction))),
            "message": message,
            "heartbeat": now,
            "metrics": self.metrics,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(payload, default=float))
        os.replace(tmp, self.path)

    def sub(self, start: float, end: float) -> SubProgress:
        return SubProgress(self, start, end)


class SubProgress:
    """A slice [start, end] of a parent progress, so nested steps report a coherent fraction."""

    def __init__(self, parent: Progress, start: float, end: float) -> None:
        self.parent, self.start, self.end = parent, start, end

    def update(self, fraction: float, message: str = "", force: bool = False, **metrics: Any) -> None:
        self.parent.update(self.start + (self.end - self.start) * fraction, message, force, **metrics)


NULL_PROGRESS = Progress(None)
