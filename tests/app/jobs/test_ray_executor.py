"""The `ray` executor against a real Ray cluster (a head and a worker node with a `gpu_label` resource on
127.0.0.1, token authentication on, started by .ci/run): score and capture jobs end to end with the artifact
store outside the API's data dir and the worker code shipped by runtime_env, identical to `local`; the
runtime record (node, peak memory) and the sized resource request on the job; cancel; a job no node can
place, or a cluster that refuses the API's token, is refused at submission; an API restart re-attaches."""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.core.db import Job
from app.jobs.sizing import memory_bytes
from tests.conftest import make_settings, wait_job
from tests.factories.http import app_client

RAY_ADDRESS = os.environ.get("TENSION_TEST_RAY_ADDRESS")
RAY_TOKEN = os.environ.get("TENSION_TEST_RAY_TOKEN")
ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.skipif(not RAY_ADDRESS, reason="TENSION_TEST_RAY_ADDRESS not set (.ci/run sets it)")

SMALL = {"model": "tiny-bert", "max_length": 32, "dataset": {"source": "bundled", "split": "test", "limit": 8}}
# Long enough to be caught running: many pairs, one text a batch.
LONG = {"model": "tiny-bert", "max_length": 32, "batch_size": 1,
        "dataset": {"source": "bundled", "split": "test", "limit": 400}}


MB = 1024 * 1024


def _settings(tmp_path: Path, name: str, **overrides: object):  # type: ignore[no-untyped-def]
    """The API's data dir and the artifact store are separate directories."""
    base: dict[str, object] = {"data_dir": tmp_path / name / "api-var",
                               "artifact_store": str(tmp_path / name / "store"), "executor": "ray",
                               "ray_address": RAY_ADDRESS, "ray_token": RAY_TOKEN}
    base.update(overrides)
    return make_settings(tmp_path, **base)


def _app(settings: Any) -> TestClient:
    from app.main import create_app

    return app_client(create_app(settings))


def _get(c: TestClient) -> Callable[[str], dict[str, Any]]:
    return lambda job_id: c.get(f"/api/jobs/{job_id}").json()  # type: ignore[no-any-return]


def _ray() -> Any:
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(RAY_ADDRESS, headers={"Authorization": f"Bearer {RAY_TOKEN}"} if RAY_TOKEN else None)


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


def _submit(c: TestClient, params: dict[str, Any], kind: str = "score") -> str:
    r = c.post("/api/jobs", json={"kind": kind, "params": params})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _run(c: TestClient, params: dict[str, Any], kind: str = "score") -> dict[str, Any]:
    job = wait_job(_get(c), _submit(c, params, kind), timeout=300)
    assert job["status"] == "succeeded", f"{job['error']}\n{job['log_tail']}"
    return job


def _assert_ran_under_ray(job: dict[str, Any]) -> None:
    """The runtime record: Ray's ids and node, the worker's host and peak memory, code from the shipped copy."""
    rt = job["runtime"]
    assert rt["placement"]["ray_submission_id"] == f"tension-{job['id']}"
    assert len(rt["placement"]["ray_node_id"]) == 56  # Ray's hex node id
    worker = rt["worker"]
    assert worker["finished"] and worker["ray_submission_id"] == f"tension-{job['id']}"
    assert worker["hostname"] == socket.gethostname()
    assert worker["node_ip"] == rt["placement"]["ray_node_ip"]
    assert 100 * MB < worker["peak_rss_bytes"] < 8 * 1024 * MB  # torch + a tiny model, measured by the worker
    # shipped by runtime_env: imported from Ray's runtime-resources copy, never from this checkout
    assert "/runtime_resources/" in worker["code_path"], worker["code_path"]
    assert not worker["code_path"].startswith(str(ROOT))


def test_score_job_through_ray_matches_local(tmp_path: Path) -> None:
    settings = _settings(tmp_path, "ray", ray_dashboard_url="http://dash.example:8265")
    with _app(settings) as c:
        job = _run(c, SMALL)
        with c.app.state.services.db.session() as s:  # type: ignore[attr-defined]
            assert s.get(Job, job["id"]).executor == "ray"
        via_ray = _rewards(c, job["result_key"])
        assert _ray_status(job["id"]) == "SUCCEEDED"
        assert (settings.log_dir / f"{job['id']}.log").exists()
        # sized from tiny-bert's 2,057,601 parameters (app.jobs.sizing); the cluster has no GPU
        assert job["runtime"]["request"] == {"CPU": 1.0, "memory": float(memory_bytes("score", 2_057_601))}
        assert job["runtime"]["parameters"] == 2_057_601
        _assert_ran_under_ray(job)
        page = c.get(f"/jobs/{job['id']}").text
        assert f"Ran on <span class=\"runtime-host\">{socket.gethostname()}</span>" in page
        assert "peak memory" in page and job["runtime"]["placement"]["ray_node_id"][:12] in page
        assert f'href="http://dash.example:8265/#/jobs/tension-{job["id"]}"' in page
        assert RAY_TOKEN is None or RAY_TOKEN not in page
    assert not (settings.data_dir / "artifacts").exists() or not any((settings.data_dir / "artifacts").iterdir())
    with _app(_settings(tmp_path, "local", executor="local")) as c:
        local = _run(c, SMALL)
        assert local["result_key"] == job["result_key"]
        assert _rewards(c, local["result_key"]) == via_ray
        assert local["runtime"]["request"] == {} and local["runtime"]["placement"] == {}
        assert local["runtime"]["worker"]["code_path"] == str(ROOT / "workers")
        assert "Ray dashboard" not in c.get(f"/jobs/{local['id']}").text  # no dashboard URL set
    assert len(via_ray) == 32  # 8 pairs x 2 objectives x 2 sides


def test_ship_code_off_runs_the_code_at_the_same_path_on_the_node(tmp_path: Path) -> None:
    with _app(_settings(tmp_path, "ray", ray_ship_code=False)) as c:
        job = _run(c, SMALL)
        assert job["runtime"]["worker"]["code_path"] == str(ROOT / "workers")
        assert job["runtime"]["worker"]["ray_submission_id"] == f"tension-{job['id']}"


def _neuron_stats(c: TestClient, key: str) -> list[tuple[Any, ...]]:
    store = c.app.state.services.store  # type: ignore[attr-defined]
    rows = store.query("SELECT * EXCLUDE (result_key) FROM neuron_stats WHERE result_key = ? ORDER BY ALL", [key])
    return [tuple(r.values()) for r in rows]


def test_capture_job_through_ray_matches_local(tmp_path: Path) -> None:
    """A checkpoint trained locally into a shared store, captured by `local` and by `ray`: the same statistics."""
    from app.core.db import Checkpoint
    from tests.factories import add_checkpoint

    store = str(tmp_path / "shared-store")
    train = {"model": "tiny-bert", "regime": "mixed", "preset": "custom", "epochs": 1, "max_length": 32,
             "dataset": {"source": "bundled", "split": "train", "limit": 8}}
    capture = {"max_length": 32, "top_k_examples": 2, "dataset": {"source": "bundled", "split": "train", "limit": 6}}
    with _app(_settings(tmp_path, "local", executor="local", artifact_store=store)) as c:
        trained = _run(c, train, "train")
        ck = c.get(f"/api/results/{trained['result_key']}").json()["checkpoint"]
        local = _run(c, {**capture, "checkpoint": ck}, "capture")
        local_stats = _neuron_stats(c, local["result_key"])
        with c.app.state.services.db.session() as s:  # type: ignore[attr-defined]
            row = s.get(Checkpoint, ck)
            ck_row = {"base_model": row.base_model, "regime": row.regime, "seed": row.seed, "preset": row.preset,
                      "meta": dict(row.meta)}
    with _app(_settings(tmp_path, "ray", artifact_store=store)) as c:
        add_checkpoint(c.app.state.services, checkpoint=ck, **ck_row)  # type: ignore[attr-defined, arg-type]
        job = _run(c, {**capture, "checkpoint": ck}, "capture")
        assert job["result_key"] == local["result_key"]
        assert _neuron_stats(c, job["result_key"]) == local_stats
        # sized from the checkpoint's base model, tiny-bert, at capture's 12 B a parameter
        assert job["runtime"]["request"]["memory"] == float(memory_bytes("capture", 2_057_601))
        _assert_ran_under_ray(job)
    assert len(local_stats) > 0 and len(local_stats) % 4 == 0  # 2 layers x 2 objectives of 128 neurons...


def test_cluster_refusing_the_token_is_a_clear_refusal(tmp_path: Path) -> None:
    if not RAY_TOKEN:
        pytest.skip("the cluster has no token authentication")
    for token in (None, "not-the-token"):
        with _app(_settings(tmp_path, f"token-{token}", ray_token=token)) as c:
            r = c.post("/api/jobs", json={"kind": "score", "params": SMALL})
            assert r.status_code == 422, r.text
            assert "token authentication" in r.text and "TENSION_RAY_TOKEN" in r.text
            assert ("no token was sent" if token is None else "not accepted") in r.text
            with c.app.state.services.db.session() as s:  # type: ignore[attr-defined]
                assert s.query(Job).count() == 0


def test_request_too_large_for_any_node_is_refused_naming_it(tmp_path: Path) -> None:
    """Memory sized from a (local) model's config no node has, and a GPU the cluster lacks: 422 naming each."""
    roots = tmp_path / "models"
    big = roots / "big-llama"
    big.mkdir(parents=True)
    big.joinpath("config.json").write_text(json.dumps({
        "model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 48, "vocab_size": 32000,
        "intermediate_size": 28672}))
    with _app(_settings(tmp_path, "big", data_roots=[str(roots)])) as c:
        r = c.post("/api/jobs", json={"kind": "score", "params": {**SMALL, "model": str(big)}})
        assert r.status_code == 422, r.text
        assert "'memory'" in r.text and "sized from the model" in r.text
    with _app(_settings(tmp_path, "gpu", ray_gpus="on")) as c:
        r = c.post("/api/jobs", json={"kind": "score", "params": SMALL})
        assert r.status_code == 422, r.text
        assert "'GPU'" in r.text


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

    placeable = RayExecutor(str(RAY_ADDRESS), resources=resources, token=RAY_TOKEN)
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
