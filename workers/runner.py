"""Run a job spec: dispatch to its kind, heartbeat, write manifest.json on success, error.json on failure.

Everything goes through the artifact store named in the spec, so the same runner works in a local
process and on a Ray node that shares no disk with the API.
"""

from __future__ import annotations

import threading
import time
import traceback

import fsspec

from workers import runtime
from workers.contract.artifacts import ERROR_FILE, MANIFEST_FILE, ErrorReport, ResultManifest
from workers.contract.jobs import JobSpec
from workers.jobs import CAPABILITIES  # each capability imports its module (and torch) only when its job runs
from workers.jobs.io import JobIO
from workers.progress import Progress


def _heartbeat(progress: Progress, stop: threading.Event, every: float = 5.0) -> None:
    while not stop.wait(every):
        progress.update(progress.last_fraction, progress.last_message, force=True)


def run(spec: JobSpec) -> ResultManifest:
    """Run the spec's kind; the runtime record is final before the manifest, whose presence ends the job."""
    job = JobIO(spec)
    progress = Progress(job.store, spec.output)
    progress.update(0.0, "starting", force=True)
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(progress, stop), daemon=True)
    beat.start()
    try:
        manifest = CAPABILITIES[spec.kind](job, progress)
    finally:
        stop.set()
    progress.update(1.0, "done", force=True)
    runtime.record(job.store, spec.output, finished=True)
    job.store.write_bytes(f"{spec.output}/{MANIFEST_FILE}", manifest.model_dump_json(indent=2).encode())
    return manifest


def read_spec(location: str) -> JobSpec:
    """A spec from a local file or any fsspec URL."""
    with fsspec.open(location, "rb") as f:
        return JobSpec.model_validate_json(f.read())


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m workers SPEC (a spec.json path or fsspec URL)", flush=True)
        return 2
    spec = read_spec(argv[0])
    started = time.time()
    from workers.contract.version import code_version

    store = JobIO(spec).store
    runtime.record(store, spec.output, finished=False)  # the node is known even if the job dies hard
    try:
        if spec.code_version != code_version():
            raise RuntimeError(f"this worker runs code {code_version()}, the job was keyed for {spec.code_version}; "
                               "deploy the API's worker code to this machine")
        run(spec)
    except Exception as exc:  # report the cause to the API, not just a dead process
        traceback.print_exc()
        runtime.record(store, spec.output, finished=True)
        report = ErrorReport(error=f"{type(exc).__name__}: {exc}", elapsed_s=time.time() - started)
        store.write_bytes(f"{spec.output}/{ERROR_FILE}", report.model_dump_json().encode())
        return 1
    print(f"job {spec.job_id} finished in {time.time() - started:.1f} s", flush=True)
    return 0
