"""Malformed dataset files get a 4xx (or CLI error) naming file, line and problem; nothing stored changes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.factories.http import app_client

GOOD = {"pair_id": "p1", "prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away.", "objective": "helpful",
        "source": "test", "subset": "mine", "split": "test"}


def _lines(*objs: object) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


BAD_FILES = {
    "broken.jsonl": (_lines(GOOD) + b'{"pair_id": "p2", "prompt": \n', "line 2"),
    "missing.jsonl": (_lines(GOOD, {k: v for k, v in GOOD.items() if k != "chosen"} | {"pair_id": "p2"}),
                      "chosen"),
    "empty.jsonl": (b"", "empty"),
    "latin1.jsonl": (_lines(GOOD) + b'{"pair_id": "caf\xe9"}\n', "UTF-8"),
}


def _stored_state(client: TestClient) -> tuple[int, int]:
    services = client.app.state.services  # type: ignore[attr-defined]
    n_ds = len(client.get("/api/datasets").json())
    return n_ds, services.store.scalar("SELECT count(*) FROM rewards")


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_malformed_upload_is_rejected_with_file_line_problem(client: TestClient, name: str) -> None:
    ok = client.post("/api/datasets", files={"file": ("good.jsonl", _lines(GOOD, GOOD | {"pair_id": "p2"}))})
    assert ok.status_code == 201, ok.text
    before = _stored_state(client)
    content, needle = BAD_FILES[name]
    r = client.post("/api/datasets", files={"file": (name, content)})
    assert 422 <= r.status_code < 500, r.text
    detail = r.json()["detail"]
    assert name in detail and needle.lower() in detail.lower(), detail
    assert _stored_state(client) == before
    datasets_dir = client.app.state.services.settings.resolved_artifact_dir / "datasets"  # type: ignore[attr-defined]
    assert len(list(datasets_dir.iterdir())) == 1  # no partial file left behind


@pytest.mark.slow
def test_fifty_megabyte_line(client: TestClient, tmp_path: Path) -> None:
    big = tmp_path / "huge.jsonl"
    with open(big, "wb") as f:
        f.write(_lines(GOOD))
        f.write(b'{"pair_id": "x", "prompt": "' + b"a" * (50 * 1024 * 1024) + b'"}\n')
    with open(big, "rb") as fh:
        r = client.post("/api/datasets", files={"file": ("huge.jsonl", fh)})
    assert r.status_code == 422
    assert "huge.jsonl" in r.json()["detail"] and "line 2" in r.json()["detail"]


def test_valid_upload_becomes_a_job_source(settings) -> None:  # type: ignore[no-untyped-def]
    from app.main import create_app

    with app_client(create_app(settings, start_supervisor=False)) as client:  # submission only: no worker runs
        _upload_then_submit(client)


def _upload_then_submit(client: TestClient) -> None:
    r = client.post("/api/datasets", files={"file": ("mine.jsonl", _lines(GOOD, GOOD | {"pair_id": "p2"}))})
    ds = r.json()
    assert ds["n_pairs"] == 2 and ds["objectives"] == ["helpful"] and ds["subsets"] == ["mine"]
    again = client.post("/api/datasets", files={"file": ("mine.jsonl", _lines(GOOD, GOOD | {"pair_id": "p2"}))})
    assert again.json()["id"] == ds["id"]  # content-addressed
    job = client.post("/api/jobs", json={"kind": "score", "params": {
        "model": "tiny-bert", "dataset": {"source": ds["source"], "objectives": ["helpful"]}}})
    assert job.status_code == 202, job.text
    missing = client.post("/api/jobs", json={"kind": "score", "params": {
        "model": "tiny-bert", "dataset": {"source": ds["source"], "objectives": ["harmless"]}}})
    assert missing.status_code == 422 and "harmless" in missing.json()["detail"]


def test_cli_names_file_line_and_problem(tmp_path: Path, settings) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(BAD_FILES["broken.jsonl"][0])
    env = {**__import__("os").environ, "TENSION_DATA_DIR": str(settings.data_dir), "TENSION_PORT": "1"}
    out = subprocess.run([sys.executable, "-m", "app.cli", "score", "--model", "tiny-bert", "--source", str(bad),
                          "--json"], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 2
    assert "bad.jsonl" in out.stderr and "line 2" in out.stderr
    assert "Traceback" not in out.stderr
