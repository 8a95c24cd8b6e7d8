"""Real jobs for the neuron tests: train tiny-bert RMs in the three regimes, then capture each.

Shared by tests/app/neurons/test_routes.py (TestClient) and tests/e2e/test_neuron_pages.py (live server);
`http` is any httpx-style client (TestClient is one).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import make_settings, wait_job
from tests.factories.http import app_client

REGIMES = ("helpful", "harmless", "mixed")
TRAIN_DATA = {"source": "bundled", "split": "train", "limit": 16}
CAPTURE_DATA = {"source": "bundled", "split": "train", "limit": 8}


def _get(http: Any):  # type: ignore[no-untyped-def]
    return lambda job_id: http.get(f"/api/jobs/{job_id}").json()


def _run(http: Any, kind: str, params: dict[str, Any]) -> str:
    r = http.post("/api/jobs", json={"kind": kind, "params": params})
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _finished(http: Any, job_id: str, timeout: float) -> dict[str, Any]:
    job = wait_job(_get(http), job_id, timeout=timeout)
    assert job["status"] == "succeeded", (f"{job['kind']} job {job_id} {job['status']}: {job.get('error')}\n"
                                          f"{job.get('log_tail', '')}")
    return job


def train_three(http: Any, model: str = "tiny-bert", seed: int = 0, timeout: float = 600) -> dict[str, str]:
    """Train the helpful, harmless and mixed RMs; returns {regime: checkpoint id}."""
    trains = {r: _run(http, "train", {"model": model, "regime": r, "preset": "custom", "epochs": 1,
                                      "seed": seed, "max_length": 64, "dataset": TRAIN_DATA})
              for r in REGIMES}
    checkpoints: dict[str, str] = {}
    for regime, job_id in trains.items():
        job = _finished(http, job_id, timeout)
        manifest = http.get(f"/api/results/{job['result_key']}").json()
        checkpoints[regime] = manifest["checkpoint"]
    return checkpoints


def capture_all(http: Any, checkpoints: dict[str, str], capture_data: dict[str, Any] | None = None,
                model: str = "tiny-bert", timeout: float = 600) -> None:
    captures = [_run(http, "capture", {"checkpoint": ck, "base_model": model,
                                       "dataset": capture_data or CAPTURE_DATA, "max_length": 64})
                for ck in checkpoints.values()]
    for job_id in captures:
        _finished(http, job_id, timeout)


def train_and_capture(http: Any, capture_data: dict[str, Any] | None = None, model: str = "tiny-bert",
                      seed: int = 0, timeout: float = 600) -> dict[str, str]:
    """Train the helpful, harmless and mixed RMs, capture each; returns {regime: checkpoint id}."""
    checkpoints = train_three(http, model=model, seed=seed, timeout=timeout)
    capture_all(http, checkpoints, capture_data, model=model, timeout=timeout)
    return checkpoints


@dataclass(frozen=True)
class RealRMs:
    """Snapshots of a data dir after real jobs: `trained` (the three RMs of `train_three`), `captured`
    (the same, each captured by `capture_all` on the default data)."""

    trained: Path
    captured: Path
    checkpoints: dict[str, str]


def build_real_rms(root: Path) -> RealRMs:
    """Run the real train and capture jobs once and keep the data dir after each stage. A test that starts
    from a copy (`settings_from`) and asks for the same jobs gets cache hits: the results are those of
    real jobs, computed once per test session instead of once per test module."""

    from app.main import create_app

    work = root / "work"
    with app_client(create_app(make_settings(work))) as client:
        checkpoints = train_three(client)
        trained = _snapshot(work, root / "trained", client)
        capture_all(client, checkpoints)
        captured = _snapshot(work, root / "captured", client)
    return RealRMs(trained=trained, captured=captured, checkpoints=checkpoints)


def _snapshot(work: Path, dst: Path, client: Any) -> Path:
    """Copy the data dir while the app is quiet (no job running; DuckDB checkpointed)."""
    client.app.state.services.store.conn.execute("CHECKPOINT")
    shutil.copytree(work / "var", dst / "var")
    return dst


def settings_from(snapshot: Path, tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    """Settings over a private copy of a `RealRMs` snapshot."""
    shutil.copytree(snapshot / "var", tmp_path / "var")
    return make_settings(tmp_path, **overrides)
