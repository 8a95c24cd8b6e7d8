"""Jobs through the API and CLI: one real scoring job end to end (slow); the lifecycle (SIGKILL, cancel,
queueing, recovery, CLI) with a stand-in worker process that writes real result tables without a model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from app.core.db import Job
from app.main import create_app
from tests.conftest import LiveServer, make_settings, wait_job
from tests.factories.http import app_client
from tests.factories.jobs import fake_worker, set_worker_seconds

SLICE = {"source": "bundled", "split": "test", "limit": 16}  # 16 per objective: a 32-pair slice


def _get(client: TestClient):  # type: ignore[no-untyped-def]
    return lambda job_id: client.get(f"/api/jobs/{job_id}").json()


@pytest.mark.slow
def test_score_job_through_http_api_reads_rewards_back_from_duckdb(client: TestClient) -> None:
    r = client.post("/api/jobs", json={"kind": "score", "params": {"model": "minilm-l6", "dataset": SLICE}})
    assert r.status_code == 202, r.text
    job = wait_job(_get(client), r.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    assert job["progress"] == 1.0 and job["attempts"] == 1
    key = job["result_key"]
    store = client.app.state.services.store  # type: ignore[attr-defined]
    rows = store.query("SELECT pair_id, side, objective, reward FROM rewards WHERE result_key = ?", [key])
    assert len(rows) == 64
    assert {r["side"] for r in rows} == {"chosen", "rejected"}
    assert sum(r["objective"] == "helpful" for r in rows) == 32
    rewards = np.array([r["reward"] for r in rows])
    assert np.isfinite(rewards).all() and rewards.std() > 0
    api = client.get(f"/api/results/{key}/rewards").json()
    assert len(api["rows"]) == 64 and {s["objective"] for s in api["summary"]} == {"helpful", "harmless"}
    # The stored numbers are the model's: recompute three texts directly in this process.
    from workers.contract.jobs import DatasetRef
    from workers.data.loaders import load_dataset
    from workers.data.text import pair_texts
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts

    pairs = load_dataset(DatasetRef(**SLICE))
    loaded = load_reward_model("minilm-l6", device="cpu", seed=0)
    direct = score_texts(loaded, list(pair_texts(pairs[0])), max_length=128, batch_size=2)
    stored = {(r["pair_id"], r["side"]): r["reward"] for r in rows}
    assert stored[(pairs[0].pair_id, "chosen")] == pytest.approx(float(direct[0]), abs=1e-4)
    assert stored[(pairs[0].pair_id, "rejected")] == pytest.approx(float(direct[1]), abs=1e-4)
    # Same inputs, same key: a second submission is a cache hit on the same job.
    again = client.post("/api/jobs", json={"kind": "score", "params": {"model": "minilm-l6", "dataset": SLICE}})
    assert again.json()["cached"] is True and again.json()["id"] == job["id"]


def _fake_client(tmp_path: Path, seconds: float, **overrides: object) -> tuple[TestClient, Path]:
    worker = fake_worker(tmp_path, seconds=seconds)
    return app_client(create_app(make_settings(tmp_path, python=str(worker), **overrides))), worker


def test_score_job_through_cli_json(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, seconds=0.0)
    with LiveServer(make_settings(tmp_path, python=str(worker))) as live:
        cmd = [sys.executable, "-m", "app.cli", "score", "--model", "tiny-bert", "--limit", "16", "--json",
               "--url", live.url]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        data = json.loads(out.stdout)
        assert data["job"]["status"] == "succeeded"
        assert len(data["result"]["rows"]) == 64  # 16 pairs x 2 objectives x 2 sides
        key = data["job"]["result_key"]
        assert live.services.store.scalar("SELECT count(*) FROM rewards WHERE result_key = ?", [key]) == 64
        listed = subprocess.run([sys.executable, "-m", "app.cli", "jobs", "list", "--json", "--url", live.url],
                                capture_output=True, text=True, timeout=60)
        assert [j["id"] for j in json.loads(listed.stdout)] == [data["job"]["id"]]


def _wait_until(pred, timeout: float = 120.0):  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise TimeoutError


def test_sigkilled_worker_fails_with_reason_stores_nothing_and_retry_succeeds(tmp_path: Path) -> None:
    c, worker = _fake_client(tmp_path, seconds=60)
    with c as client:
        params = {"model": "tiny-bert", "dataset": {**SLICE, "limit": 40}}
        job = client.post("/api/jobs", json={"kind": "score", "params": params}).json()
        running = _wait_until(lambda: (j := _get(client)(job["id"]))["status"] == "running"
                              and "scoring" in j["message"] and j)
        services = client.app.state.services  # type: ignore[attr-defined]
        with services.db.session() as s:
            pid = s.get(Job, job["id"]).pid
        assert pid and running
        os.kill(pid, signal.SIGKILL)
        failed = wait_job(_get(client), job["id"])
        assert failed["status"] == "failed"
        assert "SIGKILL" in failed["error"]
        assert services.store.scalar("SELECT count(*) FROM rewards WHERE result_key = ?", [job["result_key"]]) == 0
        assert not services.store.is_ingested(job["result_key"])
        assert client.get("/healthz").status_code == 200
        set_worker_seconds(worker, 0.0)
        retried = client.post(f"/api/jobs/{job['id']}/retry").json()
        assert retried["status"] == "queued"
        done = wait_job(_get(client), job["id"])
        assert done["status"] == "succeeded" and done["attempts"] == 2 and done["error"] is None
        assert services.store.scalar("SELECT count(*) FROM rewards WHERE result_key = ?", [job["result_key"]]) == 160


def test_cancel_terminates_process_group(tmp_path: Path) -> None:
    c, _ = _fake_client(tmp_path, seconds=60)
    with c as client:
        params = {"model": "tiny-bert", "dataset": {**SLICE, "limit": 200}}
        job = client.post("/api/jobs", json={"kind": "score", "params": params}).json()
        _wait_until(lambda: _get(client)(job["id"])["status"] == "running")
        services = client.app.state.services  # type: ignore[attr-defined]
        with services.db.session() as s:
            pid = s.get(Job, job["id"]).pid
        r = client.post(f"/api/jobs/{job['id']}/cancel")
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        _wait_until(lambda: not Path(f"/proc/{pid}").exists() or
                    Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", timeout=20)
        assert client.post(f"/api/jobs/{job['id']}/cancel").status_code == 409
        time.sleep(0.5)
        assert _get(client)(job["id"])["status"] == "cancelled"
        assert not services.store.is_ingested(job["result_key"])


def test_concurrency_limit_and_queue_order(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, seconds=0.5)
    settings = make_settings(tmp_path, concurrency=1, python=str(worker))
    with app_client(create_app(settings, start_supervisor=False)) as c:
        jobs = c.app.state.services.jobs  # type: ignore[attr-defined]
        a, _ = jobs.submit("score", {"model": "tiny-bert", "dataset": {**SLICE, "limit": 2}})
        b, _ = jobs.submit("score", {"model": "tiny-gpt2", "dataset": {**SLICE, "limit": 2}})
        jobs.tick()
        assert [jobs.get(a.id).status, jobs.get(b.id).status] == ["running", "queued"]
        deadline = time.time() + 60
        while time.time() < deadline and jobs.get(b.id).status != "succeeded":
            jobs.tick()
            if jobs.get(a.id).status == "running":
                assert jobs.get(b.id).status == "queued"
            time.sleep(0.05)
        assert jobs.get(a.id).status == "succeeded" and jobs.get(b.id).status == "succeeded"


def test_recovery_at_startup(tmp_path: Path) -> None:
    worker = fake_worker(tmp_path, seconds=0.0)
    settings = make_settings(tmp_path, python=str(worker))
    with app_client(create_app(settings, start_supervisor=False)) as c:
        services = c.app.state.services  # type: ignore[attr-defined]
        dead = subprocess.Popen(["true"])
        dead.wait()
        job, _ = services.jobs.submit("score", {"model": "tiny-bert", "dataset": {**SLICE, "limit": 2}})
        with services.db.session() as s:
            row = s.get(Job, job.id)
            row.status, row.pid = "running", dead.pid
    with app_client(create_app(settings)) as c:  # a restart: recovery runs in the lifespan
        j = c.get(f"/api/jobs/{job.id}").json()
        assert j["status"] == "failed" and "died while the API was down" in j["error"]
        assert c.post(f"/api/jobs/{job.id}/retry").status_code == 200
        assert wait_job(_get(c), job.id)["status"] == "succeeded"


@pytest.mark.parametrize("params,status,needle", [
    ({"model": "no-such-model"}, 422, "no-such-model"),
    ({"model": "tiny-bert", "dataset": {"source": "/nonexistent/file.jsonl"}}, 422, "/nonexistent/file.jsonl"),
    ({"model": "tiny-bert", "dataset": {"subsets": ["nope/none"]}}, 422, "no pairs"),
    ({"model": "tiny-bert", "max_length": 2}, 422, "max_length"),
    ({"model": "tiny-bert", "bogus": 1}, 422, "bogus"),
    ({"model": "tiny-bert", "checkpoint": "deadbeef"}, 404, "deadbeef"),
])
def test_bad_submissions_get_clear_4xx(client: TestClient, params: dict, status: int, needle: str) -> None:  # type: ignore[type-arg]
    r = client.post("/api/jobs", json={"kind": "score", "params": params})
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]
    assert client.get("/api/jobs").json() == []


def test_unknown_kind_and_job_are_4xx(client: TestClient) -> None:
    assert client.post("/api/jobs", json={"kind": "dance", "params": {}}).status_code == 422
    r = client.get("/api/jobs/nope")
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    assert client.post("/api/jobs/nope/retry").status_code == 404


def test_healthz_reports_schema_versions(client: TestClient) -> None:
    r = client.get("/healthz")
    assert r.status_code == 200
    body = r.json()
    assert body["schema"]["metadata"] == "0005" and body["schema"]["duckdb"] >= 1


def test_training_key_follows_resolved_settings(tmp_path: Path) -> None:
    """A checkpoint's key covers the preset's resolved values, not just the preset's name."""
    with app_client(create_app(make_settings(tmp_path), start_supervisor=False)) as c:
        jobs = c.app.state.services.jobs  # type: ignore[attr-defined]
        base = {"model": "tiny-bert", "regime": "mixed", "preset": "custom", "epochs": 1,
                "dataset": {"source": "bundled", "split": "train", "limit": 4}}
        a, _ = jobs.submit("train", base)
        same, cached = jobs.submit("train", dict(base))
        other, _ = jobs.submit("train", {**base, "epochs": 2})
        assert cached and same.id == a.id
        assert other.result_key != a.result_key
        r = c.post("/api/jobs", json={"kind": "train", "params": {**base, "learning_rate": -1}})
        assert r.status_code == 422 and "learning_rate" in r.json()["detail"]
