"""Progress and heartbeat reporting through the artifact store, so it works for local processes and Ray alike."""

from __future__ import annotations

import time
from typing import Any

from workers.contract.artifacts import PROGRESS_FILE, ProgressReport
from workers.storage import ArtifactStore


class Progress:
    """Write `<job>/progress.json` (a `ProgressReport`) atomically; the API polls it. Throttled."""

    def __init__(self, store: ArtifactStore | None, job_prefix: str = "", min_interval: float = 0.5) -> None:
        self.store = store
        self.key = f"{job_prefix}/{PROGRESS_FILE}" if job_prefix else PROGRESS_FILE
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
        if self.store is None:
            return
        report = ProgressReport(fraction=max(0.0, min(1.0, float(fraction))), message=message, heartbeat=now,
                                metrics={k: _plain(v) for k, v in self.metrics.items()})
        self.store.write_bytes(self.key, report.model_dump_json().encode())

    def sub(self, start: float, end: float) -> SubProgress:
        return SubProgress(self, start, end)


def _plain(v: Any) -> float | int | str | None:
    if v is None or isinstance(v, int | float | str):
        return v
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


class SubProgress:
    """A slice [start, end] of a parent progress, so nested steps report a coherent fraction."""

    def __init__(self, parent: Progress, start: float, end: float) -> None:
        self.parent, self.start, self.end = parent, start, end

    def update(self, fraction: float, message: str = "", force: bool = False, **metrics: Any) -> None:
        self.parent.update(self.start + (self.end - self.start) * fraction, message, force, **metrics)


NULL_PROGRESS = Progress(None)
