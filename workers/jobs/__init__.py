"""One module per job kind; each exposes `run(spec, progress) -> ResultManifest`."""

from __future__ import annotations

from collections.abc import Callable

from workers.progress import Progress
from workers.specs import JobKind, JobSpec, ResultManifest


def _lazy(module: str) -> Callable[[JobSpec, Progress], ResultManifest]:
    def call(spec: JobSpec, progress: Progress) -> ResultManifest:
        import importlib

        return importlib.import_module(f"workers.jobs.{module}").run(spec, progress)

    return call


CAPABILITIES: dict[JobKind, Callable[[JobSpec, Progress], ResultManifest]] = {
    JobKind.score: _lazy("score"),
    JobKind.train: _lazy("train"),
    JobKind.evaluate: _lazy("evaluate"),
    JobKind.capture: _lazy("capture"),
    JobKind.ablate: _lazy("ablate"),
}
