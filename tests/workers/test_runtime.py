"""The worker's runtime record (workers.runtime): where it ran and its peak memory, written at start and at
the end, also when the job fails before running."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from workers import runtime
from workers.contract.artifacts import ERROR_FILE, RUNTIME_FILE, WorkerRuntime
from workers.contract.jobs import JobSpec
from workers.contract.version import code_version
from workers.storage import ArtifactStore

ROOT = Path(__file__).resolve().parents[2]


def test_collect_reports_this_host_this_code_and_a_peak() -> None:
    start = runtime.collect(finished=False)
    assert start.hostname == socket.gethostname() and start.code_path == str(ROOT / "workers")
    assert start.code_version == code_version() and start.peak_rss_bytes is None and not start.finished
    assert start.ray_submission_id is None  # not under Ray
    ballast = bytearray(64 * 1024 * 1024)  # the peak covers memory this process touched
    end = runtime.collect(finished=True)
    assert end.peak_rss_bytes is not None and end.peak_rss_bytes > 64 * 1024 * 1024
    del ballast


def test_ray_submission_id_is_read_from_the_job_config(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", json.dumps({"metadata": {"job_submission_id": "tension-x"}}))
    assert runtime.collect(finished=False).ray_submission_id == "tension-x"
    monkeypatch.setenv("RAY_JOB_CONFIG_JSON_ENV_VAR", "not json")
    assert runtime.collect(finished=False).ray_submission_id is None


def test_a_worker_that_fails_still_records_where_it_ran(tmp_path: Path) -> None:
    """`python -m workers` with a spec keyed for other code: error.json and a finished runtime.json."""
    store = ArtifactStore(tmp_path / "store")
    spec = JobSpec.model_validate({
        "job_id": "j1", "kind": "score", "params": {"model": "tiny-bert"}, "result_key": "k",
        "code_version": "0" * 16, "store_url": store.url, "output": "jobs/j1", "device": "cpu"})
    store.write_bytes("jobs/j1/spec.json", spec.model_dump_json().encode())
    done = subprocess.run([sys.executable, "-m", "workers", f"{store.url}/jobs/j1/spec.json"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "deploy the API's worker code" in store.read_json(f"jobs/j1/{ERROR_FILE}")["error"]
    record = WorkerRuntime.model_validate(store.read_json(f"jobs/j1/{RUNTIME_FILE}"))
    assert record.finished and record.hostname == socket.gethostname() and record.pid != 0
    assert record.peak_rss_bytes is not None and record.peak_rss_bytes > 10 * 1024 * 1024
    assert record.device is None and record.peak_gpu_bytes is None  # no torch was loaded
