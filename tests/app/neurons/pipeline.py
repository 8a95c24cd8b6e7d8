"""Real jobs for the neuron tests: train tiny-bert RMs in the three regimes, then capture each.

Shared by tests/app/neurons/test_routes.py (TestClient) and tests/e2e/test_neuron_pages.py (live server);
`http` is any httpx-style client (TestClient is one).
"""

from __future__ import annotations

from typing import Any

from tests.conftest import wait_job

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


def train_and_capture(http: Any, capture_data: dict[str, Any] | None = None, model: str = "tiny-bert",
                      seed: int = 0, timeout: float = 600) -> dict[str, str]:
    """Train the helpful, harmless and mixed RMs, capture each; returns {regime: checkpoint id}."""
    trains = {r: _run(http, "train", {"model": model, "regime": r, "preset": "custom", "epochs": 1,
                                      "seed": seed, "max_length": 64, "dataset": TRAIN_DATA})
              for r in REGIMES}
    checkpoints: dict[str, str] = {}
    for regime, job_id in trains.items():
        job = _finished(http, job_id, timeout)
        manifest = http.get(f"/api/results/{job['result_key']}").json()
        checkpoints[regime] = manifest["checkpoint"]
    captures = [_run(http, "capture", {"checkpoint": ck, "base_model": model,
                                       "dataset": capture_data or CAPTURE_DATA, "max_length": 64})
                for ck in checkpoints.values()]
    for job_id in captures:
        _finished(http, job_id, timeout)
    return checkpoints
