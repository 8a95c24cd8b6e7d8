"""The `ray` executor against a real Ray cluster (a head and a worker node with a `gpu_label` resource on
127.0.0.1, started by .ci/run): a score job end to end with the artifact store outside the API's data dir,
identical to `local`; cancel; a job no node can place is refused; an API restart re-attaches."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.db import Job
from tests.conftest import make_settings, wait_job
from tests.factories.http import app_client

RAY_ADDRESS = os.environ.get("TENSION_TEST_RAY_ADDRESS")
pytestmark = pytest.mark.skipif(not RAY_ADDRESS, reason="TENSION_TEST_RAY_ADDRESS not set (.ci/run sets it)")

SMALL = {"model": "tiny-bert", "max_length": 32, "dataset": {"source": "bundled", "split": "test", "limit": 8}}
# Long enough to be caught running: many pairs, one text a batch.
LONG = {"model": "tiny-bert", "max_length": 32, "batch_size": 1,
        "dataset": {"source": "bundled", "split": "test", "limit": 400}}


def _settings(tmp_path: Path, name: str, **overrides: object):  # type: ignore[no-untyped-def]
    """The API's data dir and the artifact store are separate directories."""
    base: dict[str, object] = {"data_dir": tmp_path / name / "api-var",
                               "artifact_store": str(tmp_path / name / "store"), "executor": "ray",
                               "ray_address": RAY_ADDRESS}
    base.update(overrides)
    return make_settings(tmp_path, **base)


def _app(settings: Any) -> TestClient:
    from app.main import create_app

    return app_client(create_app(settings))


def _get(c: TestClient) -> Callable[[str], dict[str, Any]]:
    return lambda job_id: c.get(f"/api/jobs/{job_id}").json()  # type: ignore[no-any-return]


def _ray() -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(RAY_ADDRESS)


@pytest.fixture(autouse=True)
def _stop_leftovers() -> Any:
    """A failed test must not leave Ray jobs holding the cluster's two CPUs."""
    yield
    ray = _ray()
    for info in ray.list_jobs():
        if info.submission_id and info.submission_id.startswith("tension-") and not info.status.is_terminal():
            ray.stop_job(info.submission_id)


def _ray_status(job_id: str, attempt: int = 1) -> str | None:
    """Ray's state of our job's Ray job; None until it is submitted."""
    from app.jobs.ray_executor import submission_id

    try:
        return str(_ray().get_job_status(submission_id(job_id, attempt)).value)
    except RuntimeError:
        return None


def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise TimeoutError(what)


def _rewards(c: TestClient, key: str) -> list[tuple[Any, ...]]:
    store = c.app.state.services.store  # type: ignore[attr-defined]
    rows = store.query("SELECT pair_id, side, objective, reward FROM rewards WHERE result_key = ? "
                       "ORDER BY pair_id, side, objective", [key])
    return [(r["pair_id"], r["side"], r["objective"], r["reward"]) for r in rows]


def _submit(c: TestClient, params: dict[str, Any]) -> str:
    r = c.post("/api/jobs", json={"kind": "score", "params": params})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def test_score_job_through_ray_matches_local(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "ray")
    with _app(settings) as c:
        job = wait_job(_get(c), _submit(c, SMALL), timeout=300)
        assert job["status"] == "succeeded", f"{job['error']}\n{job['log_tail']}"
        with c.app.state.services.db.session() as s:  # type: ignore[attr-defined]
            assert s.get(Job, job["id"]).executor == "ray"
        via_ray = _rewards(c, job["result_key"])
        assert _ray_status(job["id"]) == "SUCCEEDED"
        assert (settings.log_dir / f"{job['id']}.log").exists()
    assert not (settings.data_dir / "artifacts").exists() or not any((settings.data_dir / "artifacts").iterdir())
    with _app(_settings(tmp_path, "local", executor="local")) as c:
        local = wait_job(_get(c), _submit(c, SMALL), timeout=300)
        assert local["status"] == "succeeded", local["error"]
        assert local["result_key"] == job["result_key"]
        assert _rewards(c, local["result_key"]) == via_ray
    assert len(via_ray) == 32  # 8 pairs x 2 objectives x 2 sides


def test_cancel_stops_the_ray_job_and_retry_resubmits(tmp_path: Path) -> None:
    with _app(_settings(tmp_path, "ray")) as c:
        job_id = _submit(c, LONG)
        _until(lambda: _get(c)(job_id)["status"] == "running"
               and _ray_status(job_id) == "RUNNING", 120, "job never ran")
        r = c.post(f"/api/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "cancelled"
        _until(lambda: _ray_status(job_id) == "STOPPED", 30, "ray job not stopped")
        time.sleep(1.0)
        assert _get(c)(job_id)["status"] == "cancelled"
        # A retry is a new Ray job, `tension-<id>-2`: Ray may still be tearing down the stopped one.
        assert c.post(f"/api/jobs/{job_id}/retry").status_code == 200
        job = wait_job(_get(c), job_id, timeout=300)
        assert job["status"] == "succeeded", f"{job['error']}\n{job['log_tail']}"
        assert job["attempts"] == 2 and _ray_status(job_id, 2) == "SUCCEEDED"
        assert _ray_status(job_id) == "STOPPED"


def test_job_no_node_can_place_is_refused_naming_the_resource(tmp_path: Path) -> None:
    resources = {"score": {"no_such_resource": 1}, "capture": {"gpu_label": 1}}
    with _app(_settings(tmp_path, "ray", ray_resources=resources)) as c:
        r = c.post("/api/jobs", json={"kind": "score", "params": SMALL})
        assert r.status_code == 422, r.text
        assert "no_such_resource" in r.text
        with c.app.state.services.db.session() as s:  # type: ignore[attr-defined]
            assert s.query(Job).count() == 0  # nothing queued that could never run
    from app.jobs.ray_executor import RayExecutor

    placeable = RayExecutor(str(RAY_ADDRESS), resources=resources)
    placeable.check("capture")  # the worker node's custom resource
    with pytest.raises(ValueError, match="no_such_resource"):
        placeable.check("score")


def test_api_restart_reattaches_to_running_ray_job_and_ingests(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "ray")
    with _app(settings) as c:
        job_id = _submit(c, LONG)
        _until(lambda: _ray_status(job_id) == "RUNNING", 120, "job never ran")
    assert _ray_status(job_id) == "RUNNING"  # outlived the API
    with _app(settings) as c:  # a restart: recovery runs in the lifespan
        job = wait_job(_get(c), job_id, timeout=300)
        assert job["status"] == "succeeded", f"{job['error']}\n{job['log_tail']}"
        assert job["attempts"] == 1
        rows = _rewards(c, job["result_key"])
        assert len(rows) > 1000 and len(rows) % 2 == 0  # every pair's two sides (the split has < 400 of one)
        assert job["log_tail"]


def test_failed_ray_job_fails_our_job_with_rays_message(tmp_path: Path) -> None:
    with _app(_settings(tmp_path, "ray", ray_python="/nonexistent/python")) as c:
        job = wait_job(_get(c), _submit(c, SMALL), timeout=120)
        assert job["status"] == "failed"
        assert "ray job" in job["error"] and "exit code 127" in job["error"], job["error"]
        # (the shell's own line, "/nonexistent/python: not found", is in Ray's message only when Ray's log
        # truncation keeps it: exit code 127, command not found, is what is certain)
        assert len(job["error"]) < 1000
        assert _ray_status(job["id"]) == "FAILED"


def test_job_waiting_for_a_busy_resource_is_not_taken_for_a_dead_worker(tmp_path: Path) -> None:
    """Ray queues a placeable job while its resource is taken: PENDING is waiting, not a missing heartbeat."""
    blocker = _ray().submit_job(entrypoint="sleep 20", entrypoint_num_cpus=0,
                                entrypoint_resources={"gpu_label": 1})
    try:
        settings = _settings(tmp_path, "ray", ray_resources={"score": {"gpu_label": 1}}, heartbeat_timeout_s=10)
        with _app(settings) as c:
            job_id = _submit(c, SMALL)
            _until(lambda: _ray_status(job_id) == "PENDING", 30, "job not pending")
            _until(lambda: "waiting" in _get(c)(job_id)["message"], 10, "no waiting message")
            job = wait_job(_get(c), job_id, timeout=300)
            assert job["status"] == "succeeded", f"{job['error']}\n{job['log_tail']}"
    finally:
        _ray().stop_job(blocker)
