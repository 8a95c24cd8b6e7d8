"""One module per job kind; each exposes `run(job: JobIO, progress) -> ResultManifest`."""

from __future__ import annotations

from collections.abc import Callable

from workers.contract.artifacts import ResultManifest
from workers.contract.vocab import JobKind
from workers.jobs.io import JobIO
from workers.progress import Progress

Capability = Callable[[JobIO, Progress], ResultManifest]


def _lazy(module: str) -> Capability:
    def call(job: JobIO, progress: Progress) -> ResultManifest:
        import importlib

        return importlib.import_module(f"workers.jobs.{module}").run(job, progress)  # type: ignore[no-any-return]

    return call


CAPABILITIES: dict[JobKind, Capability] = {kind: _lazy(kind.value) for kind in JobKind}
