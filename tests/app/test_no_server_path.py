"""No request reaches a file on the server except through an operator's data roots (issue 10).

The defect: `POST /api/jobs` with the server's own `meta.db` as `dataset.source` made the API open and close
that file in its own process, which drops SQLite's POSIX locks; rows committed afterwards were lost when the
API was later SIGKILLed. A JSON file named as a source echoed its keys. Here a real API process is started,
rows are committed, the store files are named every way a request can name a file, the API is SIGKILLed and
restarted, and every committed row must be there. In-process tests spy on every Python-level open.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.conftest import free_port, make_settings
from tests.factories import add_checkpoint
from tests.factories.http import app_client

ROOT = Path(__file__).resolve().parents[2]
GOOD = {"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away.", "objective": "helpful", "split": "test"}
SECRETS = {"api_token": "tok-51f0c0ffee", "password": "hunter2-secret", "aws_secret_access_key": "AKIAXXXXSECRET"}


def dataset_bytes(tag: str, n: int = 2) -> bytes:
    return b"".join(json.dumps(GOOD | {"pair_id": f"{tag}-{i}", "prompt": f"{tag} {i}?"}).encode() + b"\n"
                    for i in range(n))


class ApiProcess:
    """`uvicorn app.main:create_app` as its own process on loopback, with its own data dir and data roots."""

    def __init__(self, data_dir: Path, roots: list[Path] | None = None, **env: str) -> None:
        self.data_dir, self.port = data_dir, free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "TENSION_DATA_DIR": str(data_dir), "TENSION_HOST": "127.0.0.1",
                    "TENSION_PORT": str(self.port), "TENSION_DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
                    "TENSION_DATA_ROOTS": ",".join(str(r) for r in roots or []), **env}
        self.env.pop("TENSION_DATABASE_URL", None)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ApiProcess:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env["TENSION_PORT"] = str(self.port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "app.main:create_app", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited: {self.proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("API did not start")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.get(self.url + path, timeout=60, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return httpx.post(self.url + path, timeout=60, **kw)

    def rss(self) -> int:
        """Resident memory of the API process, bytes."""
        return _status_kb(self.pid, "VmRSS") * 1024

    def sigkill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


@pytest.fixture
def roots(tmp_path: Path) -> Path:
    """A data root holding one good dataset, a secrets file, and links toward the server's own files."""
    root = tmp_path / "roots" / "shared-data"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "good.jsonl").write_bytes(dataset_bytes("root"))
    (root / "secrets.json").write_text(json.dumps(SECRETS))
    (root / "secrets.jsonl").write_text(json.dumps(SECRETS) + "\n")
    return root


def _store_paths(data_dir: Path) -> list[Path]:
    return [(data_dir / "meta.db").resolve(), (data_dir / "stats.duckdb").resolve()]


def _sources_naming(path: Path) -> list[str]:
    """Every way a job's `dataset.source` could try to name a file on the server."""
    return [str(path), f"file://{path}", f"sqlite:///{path}", f"artifact:{path}", f"artifact:../../{path.name}",
            f"hf:{path}", f"dataset:{path}", f"root:0/../../../{path.name}", f"root:0/{path}", "~/" + path.name,
            path.name]


# -- a real API process ----------------------------------------------------------------------------------------
def test_store_files_as_sources_are_refused_and_committed_rows_survive_sigkill(tmp_path: Path, roots: Path) -> None:
    data_dir = tmp_path / "var"
    (roots / "meta-link.jsonl").symlink_to(data_dir / "meta.db")  # a link inside the root, out to the store
    api = ApiProcess(data_dir, [roots.parent / "shared-data"]).start()
    try:
        committed = [api.post("/api/datasets", files={"file": (f"d{i}.jsonl", dataset_bytes(f"before{i}"))})
                     for i in range(3)]
        assert [r.status_code for r in committed] == [201] * 3, [r.text for r in committed]
        ids = [r.json()["id"] for r in committed]
        meta_db, stats_db = _store_paths(data_dir)
        assert meta_db.is_file() and stats_db.is_file()
        os.link(meta_db, roots / "meta-hardlink.jsonl")  # same inode, innocent name

        for store_file in (meta_db, stats_db):
            for source in _sources_naming(store_file):
                r = api.post("/api/jobs", json={"kind": "score", "params": {
                    "model": "tiny-bert", "dataset": {"source": source}}})
                assert 400 <= r.status_code < 500 and r.status_code != 413, (source, r.text)
                assert "dataset" in r.json()["detail"] or "root" in r.json()["detail"], r.text
            r = api.post("/api/jobs", json={"kind": "score", "params": {"model": str(store_file.parent)}})
            assert r.status_code == 422 and "unknown model" in r.json()["detail"], r.text
        for path in ("meta-link.jsonl", "meta-hardlink.jsonl", "../../var/meta.db", str(meta_db)):
            r = api.post("/api/datasets/from-root", json={"root": "0", "path": path})
            assert r.status_code == 422, (path, r.text)
        listed = api.get("/api/datasets/roots").json()
        assert listed == [{"root": "0", "name": "shared-data", "truncated": False,
                           "files": ["secrets.json", "secrets.jsonl", "sub/good.jsonl"]}]
        r = api.post("/api/jobs", json={"kind": "score", "params": {"model": "tiny-bert",
                                                                    "dataset": {"source": "/etc/passwd"}}})
        assert r.status_code == 422 and "paths on the server are not read" in r.json()["detail"]
        assert api.get("/api/jobs").json() == []  # nothing was queued

        committed = [api.post("/api/datasets", files={"file": (f"e{i}.jsonl", dataset_bytes(f"after{i}"))})
                     for i in range(3)]
        assert [r.status_code for r in committed] == [201] * 3
        ids += [r.json()["id"] for r in committed]
        imported = api.post("/api/datasets/from-root", json={"root": "shared-data", "path": "sub/good.jsonl"})
        assert imported.status_code == 201, imported.text
        ids.append(imported.json()["id"])
        api.sigkill()

        again = ApiProcess(data_dir, [roots]).start()
        try:
            assert sorted(d["id"] for d in again.get("/api/datasets").json()) == sorted(ids)
        finally:
            again.stop()
    finally:
        api.stop()
    import sqlite3

    with sqlite3.connect(data_dir / "meta.db") as c:
        assert c.execute("PRAGMA integrity_check").fetchone() == ("ok",)


# -- the same, in process, with every Python-level open watched -------------------------------------------------
@pytest.fixture
def watched(tmp_path: Path, roots: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, list[str]]]:
    """A client whose process records every `open` / `os.open` of the metadata or statistics store."""
    settings = make_settings(tmp_path, data_roots=[roots])
    opened: list[str] = []
    guarded = {str(p) for p in _store_paths(settings.data_dir)}

    def spy(real: Any) -> Any:
        def wrapper(file: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(file, str | os.PathLike) and os.path.realpath(file) in guarded:
                opened.append(os.fspath(file))
            return real(file, *args, **kwargs)
        return wrapper

    with app_client(create_app(settings, start_supervisor=False)) as client:
        for target, name in ((builtins, "open"), (io, "open"), (os, "open")):
            monkeypatch.setattr(target, name, spy(getattr(target, name)))
        yield client, opened


def test_no_request_opens_a_store_file(watched: tuple[TestClient, list[str]], roots: Path) -> None:
    client, opened = watched
    data_dir = client.app.state.services.settings.data_dir  # type: ignore[attr-defined]
    meta_db, stats_db = _store_paths(data_dir)
    (roots / "stats-link.parquet").symlink_to(stats_db)
    os.link(meta_db, roots / "meta-hardlink.jsonl")
    for store_file in (meta_db, stats_db):
        for source in _sources_naming(store_file):
            for kind, params in (("score", {"model": "tiny-bert"}), ("train", {"model": "tiny-bert"})):
                r = client.post("/api/jobs", json={"kind": kind, "params": {**params, "dataset": {"source": source}}})
                assert 400 <= r.status_code < 500, (source, r.text)
        for model in (str(store_file), str(store_file.parent), "~", "./var", "../"):
            r = client.post("/api/jobs", json={"kind": "score", "params": {"model": model}})
            assert r.status_code == 422, (model, r.text)
    for path in ("stats-link.parquet", "meta-hardlink.jsonl", "../var/meta.db", str(meta_db), "sub/../../x.jsonl"):
        r = client.post("/api/datasets/from-root", json={"root": "0", "path": path})
        assert r.status_code == 422, (path, r.text)
    assert client.get("/api/datasets/roots").json()[0]["files"] == ["secrets.json", "secrets.jsonl",
                                                                     "sub/good.jsonl"]
    assert opened == []


def test_a_file_of_secrets_named_as_a_source_never_shows_its_keys(watched: tuple[TestClient, list[str]],
                                                                   roots: Path, tmp_path: Path) -> None:
    client, _ = watched
    elsewhere = tmp_path / "config.json"
    elsewhere.write_text(json.dumps(SECRETS))
    answers = [client.post("/api/jobs", json={"kind": "score", "params": {"model": "tiny-bert",
                                                                          "dataset": {"source": str(src)}}})
               for src in (elsewhere, roots / "secrets.json", f"root:0/{elsewhere}")]
    answers += [client.post("/api/jobs", json={"kind": "score", "params": {
        "model": "tiny-bert", "dataset": {"source": f"root:0/{name}"}}}) for name in ("secrets.json", "secrets.jsonl")]
    answers += [client.post("/api/datasets/from-root", json={"root": "0", "path": name, "format": fmt})
                for name in ("secrets.json", "secrets.jsonl") for fmt in ("auto", "canonical", "rm-bench")]
    for r in answers:
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        for key, value in SECRETS.items():
            assert key not in detail and value not in detail, detail
    assert "cannot tell the layout" in answers[-1].json()["detail"] or "missing key" in answers[-1].json()["detail"]
    assert client.get("/api/datasets").json() == []


def test_a_root_file_becomes_an_artifact_dataset(watched: tuple[TestClient, list[str]], roots: Path) -> None:
    client, _ = watched
    r = client.post("/api/datasets/from-root", json={"root": "shared-data", "path": "sub/good.jsonl"})
    assert r.status_code == 201, r.text
    ds = r.json()
    assert ds["n_pairs"] == 2 and ds["name"] == "shared-data/sub/good.jsonl"
    job = client.post("/api/jobs", json={"kind": "score", "params": {
        "model": "tiny-bert", "dataset": {"source": "root:0/sub/good.jsonl", "objectives": ["helpful"]}}})
    assert job.status_code == 202, job.text
    assert job.json()["params"]["dataset"]["source"].startswith("artifact:datasets/")  # workers see the artifact
    assert len(client.get("/api/datasets").json()) == 1  # the same content: the same dataset
    page = client.get("/datasets")
    assert page.status_code == 200 and 'value="0/sub/good.jsonl"' in page.text
    ui = client.post("/ui/datasets/from-root", data={"file": "0/sub/good.jsonl"}, headers={"HX-Request": "true"})
    assert ui.status_code == 200 and f"dataset:{ds['id']}" in ui.text
    for body, status in (({"root": "9", "path": "x.jsonl"}, 404), ({"root": "0", "path": "nope.jsonl"}, 404),
                         ({"root": "0", "path": "sub"}, 422), ({"root": "0", "path": "/etc/passwd"}, 422),
                         ({"root": "..", "path": "x.jsonl"}, 422), ({"root": "0", "path": "a\\..\\b.jsonl"}, 422)):
        r = client.post("/api/datasets/from-root", json=body)
        assert r.status_code == status, (body, r.text)
        assert "root" in r.json()["detail"] or "path" in r.json()["detail"]


def test_without_data_roots_nothing_on_disk_is_reachable(client: TestClient) -> None:
    assert client.get("/api/datasets/roots").json() == []
    r = client.post("/api/datasets/from-root", json={"root": "0", "path": "x.jsonl"})
    assert r.status_code == 404 and "TENSION_DATA_ROOTS" in r.json()["detail"]


def test_model_directories_only_inside_a_data_root(tmp_path: Path, roots: Path) -> None:
    model_dir = roots / "models" / "my-rm"
    model_dir.mkdir(parents=True)
    (model_dir / "config.json").write_text('{"model_type": "gpt2"}')
    outside = tmp_path / "outside-model"
    outside.mkdir()
    (roots / "models" / "escape").symlink_to(outside)
    settings = make_settings(tmp_path, data_roots=[roots])
    with app_client(create_app(settings, start_supervisor=False)) as client:
        def score(model: str) -> httpx.Response:
            return client.post("/api/jobs", json={"kind": "score", "params": {"model": model}})

        ok = score(str(model_dir))
        assert ok.status_code == 202, ok.text
        assert ok.json()["params"]["model"] == os.path.realpath(model_dir)
        for model in (str(outside), str(roots / "models" / "escape"), str(roots / "models" / ".." / ".." / "x"),
                      str(roots), "workers/data", "/etc", "~", "shared-data/models/my-rm"):
            r = score(model)
            assert r.status_code == 422 and "unknown model" in r.json()["detail"], (model, r.text)
        assert score("openai-community/gpt2").status_code == 202  # a hub id that names nothing here


def test_server_fields_of_a_request_are_dropped(settings: Any) -> None:
    """`inputs` (the arrays an ablate job reads) is the API's to set: a request naming another artifact is
    ignored, so a worker only ever loads what the API wrote."""
    with app_client(create_app(settings, start_supervisor=False)) as client:
        ck = add_checkpoint(client.app.state.services, base_model="tiny-bert")  # type: ignore[attr-defined]
        r = client.post("/api/jobs", json={"kind": "ablate", "params": {
            "checkpoint": ck, "neuron_set": {"0": [1]}, "inputs": "artifact:datasets/0123456789abcdef.jsonl",
            "helpful_checkpoint": ck, "dataset": {"limit": 2}}})
        assert r.status_code == 202, r.text
        params = r.json()["params"]
        assert params["inputs"] is None and params["helpful_checkpoint"] is None


def test_hub_ids_that_name_a_local_path_are_refused(client: TestClient) -> None:
    for source in ("hf:workers/data", "hf:tests/app", "hf:../etc", "hf:a/../../etc", "hf:/etc/passwd"):
        r = client.post("/api/jobs", json={"kind": "score", "params": {"model": "tiny-bert",
                                                                      "dataset": {"source": source}}})
        assert r.status_code == 422, (source, r.text)
        assert "dataset.source" in r.json()["detail"]
