"""TRL preference files upload as they are: conversational (explicit or implicit prompt) and standard implicit,
the layout detected, the objective from the upload's option; a file that does not fit is a 422 naming the line."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner


def _lines(*objs: object) -> bytes:
    return b"".join(json.dumps(o).encode() + b"\n" for o in objs)


def _conv(i: int) -> dict[str, object]:
    return {"prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Question {i}?"}],
            "chosen": [{"role": "assistant", "content": f"Answer {i}."}],
            "rejected": [{"role": "assistant", "content": "No."}]}


def _conv_implicit(i: int) -> dict[str, object]:
    ask = {"role": "user", "content": f"Question {i}?"}
    return {"chosen": [ask, {"role": "assistant", "content": f"Answer {i}."}],
            "rejected": [ask, {"role": "assistant", "content": "No."}]}


def test_a_conversational_file_uploads(client: TestClient) -> None:
    r = client.post("/api/datasets", files={"file": ("trl.jsonl", _lines(*map(_conv, range(5))))},
                    data={"objective": "helpful"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert (ds["n_pairs"], ds["objectives"], ds["subsets"], ds["format"]) == (5, ["helpful"], ["custom"], "auto")
    assert [d["id"] for d in client.get("/api/datasets").json()] == [ds["id"]]


def test_a_gzipped_implicit_conversational_file_uploads_with_its_format_named(client: TestClient) -> None:
    body = gzip.compress(_lines(*map(_conv_implicit, range(3))))
    r = client.post("/api/datasets", files={"file": ("trl.jsonl.gz", body)},
                    data={"objective": "harmless", "format": "trl-conversational-implicit"})
    assert r.status_code == 201, r.text
    assert (r.json()["n_pairs"], r.json()["objectives"], r.json()["format"]) == (
        3, ["harmless"], "trl-conversational-implicit")


def test_a_standard_implicit_file_uploads(client: TestClient) -> None:
    body = _lines(*({"chosen": f"The sky is blue {i}.", "rejected": f"The sky is green {i}."} for i in range(4)))
    r = client.post("/api/datasets", files={"file": ("implicit.jsonl", body)}, data={"objective": "helpful"})
    assert r.status_code == 201, r.text
    assert r.json()["n_pairs"] == 4


def test_without_the_objective_option_the_answer_says_so(client: TestClient) -> None:
    r = client.post("/api/datasets", files={"file": ("trl.jsonl", _lines(_conv(1)))})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("trl.jsonl: line 1: a trl-conversational record names no objective; pass "
                             "objective='helpful' or 'harmless'"), detail
    assert "(layout trl-conversational, detected from line 1)" in detail
    assert client.get("/api/datasets").json() == []


def test_a_mixed_or_malformed_file_is_refused_naming_the_line(client: TestClient) -> None:
    mixed = _lines(_conv(1), _conv(2), _conv_implicit(3))
    r = client.post("/api/datasets", files={"file": ("mixed.jsonl", mixed)}, data={"objective": "helpful"})
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert detail.startswith("mixed.jsonl: line 3: the record is in the trl-conversational-implicit layout"), detail
    assert "Question" not in detail  # the file's values are never echoed
    bad = _lines(_conv(1), {**_conv(2), "chosen": [{"role": "assistant"}]})
    r = client.post("/api/datasets", files={"file": ("bad.jsonl", bad)}, data={"objective": "helpful"})
    assert r.status_code == 422
    assert r.json()["detail"] == ("bad.jsonl: line 2: chosen[0] has no 'content' (layout trl-conversational, "
                                  "detected from line 1)")
    assert client.get("/api/datasets").json() == []


def test_the_cli_adds_a_conversational_file(settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from app import cli
    from app.client import EmbeddedBackend

    monkeypatch.setattr(cli, "connect", lambda _settings, url=None: EmbeddedBackend(settings))
    path = tmp_path / "trl.jsonl.gz"
    path.write_bytes(gzip.compress(_lines(*map(_conv_implicit, range(4)))))
    runner = CliRunner()
    result = runner.invoke(cli.app, ["datasets", "add", str(path), "--objective", "helpful", "--json"])
    assert result.exit_code == 0, result.output
    ds = json.loads(result.stdout)
    assert (ds["n_pairs"], ds["objectives"]) == (4, ["helpful"])
    refused = runner.invoke(cli.app, ["datasets", "add", str(path), "--format", "trl-conversational"])
    assert refused.exit_code != 0
    assert "line 1: missing key 'prompt'" in refused.output, refused.output


def test_an_uploaded_conversational_file_is_a_job_source(client: TestClient) -> None:
    r = client.post("/api/datasets", files={"file": ("trl.jsonl", _lines(*map(_conv, range(5))))},
                    data={"objective": "helpful"})
    job = client.post("/api/jobs", json={"kind": "score", "params": {
        "model": "tiny-bert", "dataset": {"source": r.json()["source"], "objectives": ["helpful"], "split": "all"}}})
    assert job.status_code == 202, job.text
