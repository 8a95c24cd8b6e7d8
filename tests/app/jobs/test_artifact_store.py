"""Jobs are location-independent: a worker needs only its spec and the artifact store's URL.

The API's data dir and the artifact store are different directories here; every job kind that reads
or writes artifacts (train, score, capture, with an uploaded dataset) runs through the store alone,
and no path of the API's data dir appears in any spec.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.conftest import make_settings, wait_job
from tests.factories.http import app_client
from workers.storage import ArtifactStore

PAIRS = [{"prompt": f"Question {i}?", "chosen": f"A careful answer {i}.", "rejected": "no", "objective": o,
          "subset": f"{o}-mine", "split": s}
         for i in range(6) for o in ("helpful", "harmless") for s in ("train", "test")]


def _run(c: TestClient, kind: str, params: dict) -> dict:  # type: ignore[type-arg]
    r = c.post("/api/jobs", json={"kind": kind, "params": params})
    assert r.status_code == 202, r.text
    job = wait_job(lambda j: c.get(f"/api/jobs/{j}").json(), r.json()["id"], timeout=600)
    assert job["status"] == "succeeded", f"{job.get('error')}\n{job.get('log_tail')}"
    return job  # type: ignore[no-any-return]


@pytest.mark.slow
def test_jobs_run_from_spec_and_store_alone(tmp_path: Path) -> None:
    data_dir, store_dir = tmp_path / "api-var", tmp_path / "elsewhere" / "store"
    settings = make_settings(tmp_path, data_dir=data_dir, artifact_store=str(store_dir))
    from app.main import create_app

    with app_client(create_app(settings)) as c:
        upload = c.post("/api/datasets", files={"file": ("mine.jsonl", "\n".join(json.dumps(p) for p in PAIRS))})
        assert upload.status_code in (200, 201), upload.text
        source = f"dataset:{upload.json()['id']}"
        train = _run(c, "train", {"model": "tiny-gpt2", "regime": "mixed", "preset": "custom", "epochs": 1,
                                  "max_length": 32, "dataset": {"source": source, "split": "train"}})
        checkpoint = c.get(f"/api/results/{train['result_key']}").json()["checkpoint"]
        capture = _run(c, "capture", {"checkpoint": checkpoint, "dataset": {"source": source, "split": "train"},
                                      "max_length": 32, "top_k_examples": 2})
        score = _run(c, "score", {"model": "tiny-gpt2", "checkpoint": checkpoint, "max_length": 32,
                                  "dataset": {"source": source, "split": "test"}})
        services = c.app.state.services  # type: ignore[attr-defined]
        n_stats = services.store.scalar("SELECT count(*) FROM neuron_stats WHERE result_key = ?",
                                        [capture["result_key"]])
        n_rewards = services.store.scalar("SELECT count(*) FROM rewards WHERE result_key = ?", [score["result_key"]])

    store = ArtifactStore(store_dir)
    assert store.exists(f"checkpoints/{checkpoint}/meta.json")
    assert not (data_dir / "artifacts").exists() or not any((data_dir / "artifacts").iterdir())
    for job in (train, capture, score):
        spec_text = store.read_bytes(f"jobs/{job['id']}/spec.json").decode()
        spec = json.loads(spec_text)
        assert str(data_dir) not in spec_text and str(data_dir.resolve()) not in spec_text
        assert spec["store_url"] == store.url and spec["output"] == f"jobs/{job['id']}"
        assert "artifact:datasets/" in spec_text
    # 2 layers x 2 objectives x 2 sides of tiny-gpt2's MLP neurons, and one reward per text of the test split
    assert n_stats > 0 and n_stats % 4 == 0
    assert n_rewards == 2 * 6 * 2
