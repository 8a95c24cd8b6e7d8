"""Dispatch a job spec to its capability; write manifest.json on success, error.json on failure."""

from __future__ import annotations

import json
import os
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from workers.progress import Progress
from workers.specs import JobKind, JobSpec, ResultManifest, checkpoint_dir  # noqa: F401 (re-export)

Capability = Callable[[JobSpec, Progress], ResultManifest]


def _capabilities() -> dict[JobKind, Capability]:
    # Imported lazily: each capability pulls in torch/transformers only when its job runs.
    from workers import jobs

    return jobs.CAPABILITIES


def _heartbeat(progress: Progress, stop: threading.Event, every: float = 5.0) -> None:
    while not stop.wait(every):
        progress.update(progress.last_fraction, progress.last_message, force=True)


def run(spec: JobSpec) -> ResultManifest:
    out = Path(spec.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    progress = Progress(out / "progress.json")
    progress.update(0.0, "starting", force=True)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(progress, stop), daemon=True)
    beat.start()
    try:
        manifest = _capabilities()[spec.kind](spec, progress)
    finally:
        stop.set()
    progress.update(1.0, "done", force=True)
    tmp = out / "manifest.json.tmp"
    tmp.write_text(manifest.model_dump_json(indent=2))
    os.replace(tmp, out / "manifest.json")
    return manifest


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m workers SPEC_FILE", flush=True)
        return 2
    spec = JobSpec.model_validate_json(Path(argv[0]).read_text())
    started = time.time()
    try:
        run(spec)
    except Exception as exc:  # report the cause to the API, not just a dead process
        traceback.print_exc()
        (Path(spec.output_dir) / "error.json").write_text(
            json.dumps({"error": f"{type(exc).__name__}: {exc}", "elapsed_s": time.time() - started})
        )
        return 1
    print(f"job {spec.job_id} finished in {time.time() - started:.1f} s", flush=True)
    return 0
