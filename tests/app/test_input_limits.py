"""Every input is bounded (issue 10): sizes, counts, nesting, integers and floats; every refusal names the field
or the limit (and the setting that moves it), never a 500.

The defects reproduced: a 1 MB gzip upload expanding to 4.25M pairs (+1.97 GB of memory, the cap counted
compressed bytes); deeply nested JSON in an upload (RecursionError, 500); a neuron index of 1e999 in a live
toggle; `offset` beyond int64 on the rewards page (DuckDB ConversionException, 500); NaN and Infinity in job
parameters accepted with 202.
"""

from __future__ import annotations

import gzip
import io
import json
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from app.datasets.limits import UploadSizeLimit
from app.main import create_app
from tests.app.test_no_server_path import ApiProcess, _status_kb, dataset_bytes
from tests.conftest import make_settings
from tests.factories import add_checkpoint
from tests.factories.ablation import N_LAYERS, N_NEURONS, FakeLivePool, captured_rms
from tests.factories.http import app_client
from tests.factories.jobs import score_result, some_pairs

MB = 1024 * 1024
RECORD = b'{"prompt": "q", "chosen": "a", "rejected": "b", "objective": "helpful"}\n'


def gzip_bomb(n_lines: int = 4_250_000) -> bytes:
    """About 1 MB of gzip that expands to `n_lines` canonical records (each its own pair: ids come from lines)."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = RECORD * 10_000
    return b"".join([*(comp.compress(block) for _ in range(n_lines // 10_000)), comp.flush()])


# -- the gzip bomb, against a real API process -----------------------------------------------------------------
def test_gzip_bomb_is_refused_fast_with_bounded_memory(tmp_path: Path) -> None:
    bomb = gzip_bomb()
    with gzip.open(io.BytesIO(bomb)) as g:
        expanded = sum(len(chunk) for chunk in iter(lambda: g.read(MB), b""))
    assert len(bomb) < 1.1 * MB and expanded > 280 * MB  # 4.25M records
    api = ApiProcess(tmp_path / "var").start()
    try:
        ok = api.post("/api/datasets", files={"file": ("ok.jsonl", dataset_bytes("warm"))})
        assert ok.status_code == 201  # the upload path is warm (imports done) before the baseline is taken
        time.sleep(0.5)
        idle = api.rss()
        peak = [idle]
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                peak[0] = max(peak[0], api.rss())
                time.sleep(0.01)

        watcher = threading.Thread(target=watch)
        watcher.start()
        t0 = time.monotonic()
        try:
            r = api.post("/api/datasets", files={"file": ("bomb.jsonl.gz", bomb)})
        finally:
            elapsed = time.monotonic() - t0
            done.set()
            watcher.join()
        peak[0] = max(peak[0], api.rss())
        hwm = _status_kb(api.pid, "VmHWM") * 1024  # the process's peak ever, startup included
        print(f"gzip bomb ({len(bomb):,} bytes): {r.status_code} in {elapsed:.2f} s; RSS idle {idle / MB:.0f} MB, "
              f"peak while refusing {peak[0] / MB:.0f} MB (+{(peak[0] - idle) / MB:.0f} MB), VmHWM {hwm / MB:.0f} MB")
        assert r.status_code == 413, r.text
        detail = r.json()["detail"]
        assert "bomb.jsonl.gz" in detail and "max_pairs" in detail and "TENSION_MAX_PAIRS" in detail, detail
        assert elapsed < 2.0
        assert peak[0] - idle < 300 * MB
        assert hwm - idle < 300 * MB or hwm == peak[0]
        assert [d["name"] for d in api.get("/api/datasets").json()] == ["ok.jsonl"]  # nothing half-stored
        assert not list((tmp_path / "var" / "uploads").iterdir())  # no temporary copy left behind
    finally:
        api.stop()


# -- in process --------------------------------------------------------------------------------------------------
@pytest.fixture
def small(tmp_path: Path) -> Iterator[TestClient]:
    """An API whose limits are tiny, so each is reached with a few bytes."""
    settings = make_settings(tmp_path, max_upload_bytes=4096, max_decompressed_bytes=8192, max_pairs=5)
    with app_client(create_app(settings, start_supervisor=False)) as client:
        yield client


def _records(n: int) -> list[dict[str, str]]:
    return [json.loads(RECORD) | {"pair_id": f"p{i}"} for i in range(n)]


def _parquet(records: list[dict[str, str]]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), buf)
    return buf.getvalue()


@pytest.mark.parametrize(("name", "content", "limit"), [
    ("many.jsonl", b"".join(json.dumps(r).encode() + b"\n" for r in _records(6)), "max_pairs"),
    ("many.json", json.dumps(_records(6)).encode(), "max_pairs"),
    ("many.parquet", _parquet(_records(6)), "max_pairs"),
    ("rmbench.json", json.dumps([{"id": i, "prompt": "q", "domain": "chat", "chosen": ["a", "b", "c"],
                                  "rejected": ["x", "y", "z"]} for i in range(2)]).encode(), "max_pairs"),
    ("big.jsonl.gz", gzip.compress(b"".join(json.dumps(r | {"prompt": "q" * 2000}).encode() + b"\n"
                                            for r in _records(5))), "max_decompressed_bytes"),
    ("big.json", json.dumps([{"pad": "x" * 5000}]).encode(), "max_upload_bytes"),
])
def test_each_limit_is_a_413_naming_it_and_its_setting(small: TestClient, name: str, content: bytes,
                                                       limit: str) -> None:
    r = small.post("/api/datasets", files={"file": (name, content)})
    assert r.status_code == 413, r.text
    detail = r.json()["detail"]
    assert name in detail and limit in detail and f"TENSION_{limit.upper()}" in detail, detail
    assert small.get("/api/datasets").json() == []
    ok = small.post("/api/datasets", files={"file": ("ok.jsonl", RECORD)})
    assert ok.status_code == 201, ok.text  # the limits leave room for a small dataset


@pytest.mark.parametrize("name", ["deep.jsonl", "deep.json", "deep.jsonl.gz", "deep-item.json", "deep-open.json"])
def test_deeply_nested_json_upload_is_a_422(client: TestClient, name: str) -> None:
    deep = b"[" * 100_000 + b"]" * 100_000
    content = {"deep.jsonl": RECORD + deep + b"\n", "deep.json": deep, "deep.jsonl.gz": gzip.compress(deep),
               "deep-item.json": b"[" + RECORD + b"," + b'{"a": ' * 50_000 + b"1" + b"}" * 50_000 + b"]",
               "deep-open.json": b"[" * 200_000}[name]
    r = client.post("/api/datasets", files={"file": (name, content)})
    assert r.status_code == 422, r.text
    assert name in r.json()["detail"] and "nested deeper than 64 levels" in r.json()["detail"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("limits"))
    with app_client(create_app(settings, start_supervisor=False)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        pool = client.app.state.live_pool = FakeLivePool()  # type: ignore[attr-defined]
        yield SimpleNamespace(client=client, pool=pool, ck=captured_rms(services)["mixed"],
                              rewards=score_result(services, some_pairs()))


@pytest.mark.parametrize("value", ["1e999", str(2**70), "-1e999", str(-2**70), "nan", "1.5"])
def test_huge_neuron_addresses_in_a_live_toggle_are_a_422(world: SimpleNamespace, value: str) -> None:
    ck, client = world.ck, world.client
    n_before = len(world.pool.requests())
    for url in (f"/api/live/{ck}/toggle", f"/ui/live/{ck}"):
        for query, field in (({"neurons": f'{{"0": [{value}]}}'}, "neurons"),
                             ({"neurons": f'{{"{value}": [1]}}'}, "neurons"),
                             ({"part": "shared", "layer": value}, "layer"),
                             ({"part": "shared", "seed": value}, "seed")):
            r = client.get(url, params=query)
            assert r.status_code == 422, (url, query, r.text)
            assert field in r.json()["detail"], r.json()["detail"]
    r = client.get("/ui/ablation/neuron-panel", params={"model": "tiny-bert", "layer": value, "index": 1})
    assert r.status_code == 422 and "layer" in r.text
    r = client.get("/ui/ablation/neuron-panel", params={"model": "tiny-bert", "layer": 0, "index": value})
    assert r.status_code == 422 and "index" in r.text
    assert len(world.pool.requests()) == n_before  # refused before any worker is asked


def test_neuron_addresses_are_checked_against_the_model(world: SimpleNamespace) -> None:
    ck, client = world.ck, world.client
    r = client.get(f"/api/live/{ck}/toggle", params={"neurons": f'{{"0": [{N_NEURONS}]}}'})
    assert r.status_code == 404 and f"neuron {N_NEURONS}" in r.json()["detail"]
    r = client.get(f"/api/live/{ck}/toggle", params={"neurons": f'{{"{N_LAYERS}": [1]}}'})
    assert r.status_code == 404 and f"layer {N_LAYERS}" in r.json()["detail"]
    r = client.get(f"/api/live/{ck}/toggle", params={"neurons": "[" * 1999 + "]" * 1999})
    assert r.status_code == 422 and "query.neurons" in r.json()["detail"] and "nested" in r.json()["detail"]


@pytest.mark.parametrize(("query", "field"), [
    ({"offset": 2**64}, "query.offset"), ({"offset": 2**63}, "query.offset"), ({"offset": -1}, "query.offset"),
    ({"offset": "1e999"}, "query.offset"), ({"limit": 0}, "query.limit"), ({"limit": 2**64}, "query.limit"),
])
def test_pagination_out_of_range_is_a_422(world: SimpleNamespace, query: dict[str, Any], field: str) -> None:
    r = world.client.get(f"/api/results/{world.rewards}/rewards", params=query)
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"]


def test_pagination_at_its_bounds(world: SimpleNamespace) -> None:
    r = world.client.get(f"/api/results/{world.rewards}/rewards", params={"offset": 2**63 - 1, "limit": 100_000})
    assert r.status_code == 200 and r.json()["rows"] == []
    assert len(world.client.get(f"/api/results/{world.rewards}/rewards", params={"offset": 10}).json()["rows"]) == 2
    for url, params, field in (("/api/jobs", {"limit": 2**64}, "query.limit"),
                               ("/api/lab/compare/tiny-bert", {"seed": 2**70}, "query.seed"),
                               ("/api/lab/evaluations/x/flips", {"a": "a", "b": "b", "limit": 10**9}, "query.limit")):
        r = world.client.get(url, params=params)
        assert r.status_code == 422 and field in r.json()["detail"], (url, r.text)


FLOATS = [("train", "learning_rate", {}), ("train", "epochs", {}), ("train", "eval_fraction", {}),
          ("ablate", "scale", {"checkpoint": "x"}), ("ablate", "percents", {"checkpoint": "x"})]


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize(("kind", "field", "extra"), FLOATS)
def test_nan_and_infinity_in_job_params_are_a_422(world: SimpleNamespace, kind: str, field: str,
                                                  extra: dict[str, Any], literal: str) -> None:
    value = f"[{literal}]" if field == "percents" else literal
    given = "".join(f'"{k}": "{v}", ' for k, v in extra.items())
    body = ('{"kind": "' + kind + '", "params": {' + given + f'"{field}": {value}' + "}}").encode()
    r = world.client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert field in r.json()["detail"] and "finite" in r.json()["detail"], r.json()["detail"]


@pytest.mark.parametrize(("kind", "params", "field"), [
    ("score", {"batch_size": 2**70}, "batch_size"),
    ("score", {"dataset": {"limit": 2**70}}, "dataset.limit"),
    ("score", {"dataset": {"seed": 2**64}}, "dataset.seed"),
    ("train", {"seed": -2**70}, "seed"),
    ("ablate", {"checkpoint": "x", "limit_per_objective": 2**70}, "limit_per_objective"),
    ("ablate", {"checkpoint": "x", "random_seeds": [2**70]}, "random_seeds.0"),
    ("ablate", {"checkpoint": "x", "neuron_set": {"0": [2**70]}}, "neuron_set"),
    ("ablate", {"checkpoint": "x", "neuron_set": {str(2**70): [1]}}, "neuron_set"),
    ("ablate", {"checkpoint": "x", "neuron_set": {"0": [1e300]}}, "neuron_set.0.0"),
    ("score", {"dataset": {"subsets": ["x" * 10_000]}}, "dataset.subsets.0"),
    ("score", {"model": "m" * 10_000}, "model"),
])
def test_huge_integers_in_job_params_are_a_422(world: SimpleNamespace, kind: str, params: dict[str, Any],
                                               field: str) -> None:
    r = world.client.post("/api/jobs", json={"kind": kind, "params": params})
    assert r.status_code == 422, r.text
    assert f"{field}:" in r.json()["detail"], r.json()["detail"]


def test_a_bounded_neuron_set_is_accepted(world: SimpleNamespace) -> None:
    ck = add_checkpoint(world.client.app.state.services, base_model="tiny-bert")
    r = world.client.post("/api/jobs", json={"kind": "ablate", "params": {
        "checkpoint": ck, "neuron_set": {"0": [1]}, "dataset": {"limit": 2}}})
    assert r.status_code == 202, r.text


def test_upload_body_is_cut_off_at_the_limit_as_it_arrives() -> None:
    app = FastAPI()
    seen = {"bytes": 0}

    @app.post("/api/datasets")
    async def upload(request: Request) -> dict[str, int]:
        async for chunk in request.stream():
            seen["bytes"] += len(chunk)
        return {"n": seen["bytes"]}

    limited = UploadSizeLimit(app, max_bytes=1024)
    with TestClient(limited) as client:
        assert client.post("/api/datasets", content=b"x" * 1000).json() == {"n": 1000}
        declared = client.post("/api/datasets", content=b"x" * (200 * 1024))
        assert declared.status_code == 413 and "TENSION_MAX_UPLOAD_BYTES" in declared.json()["detail"]

        def chunks() -> Iterator[bytes]:
            for _ in range(100):
                yield b"y" * 4096

        seen["bytes"] = 0
        streamed = client.post("/api/datasets", content=chunks())  # no Content-Length: counted as it arrives
        assert streamed.status_code == 413 and "max_upload_bytes" in streamed.json()["detail"]
        assert seen["bytes"] < 1024 + 64 * 1024 + 4096
        assert client.post("/elsewhere", content=b"x" * (200 * 1024)).status_code == 404  # other routes untouched



def test_upload_limit_in_the_apps_middleware_stack(tmp_path: Path) -> None:
    """What `app.main` gets with `app.add_middleware(UploadSizeLimit, max_bytes=settings.max_upload_bytes)`:
    an oversized upload is a 413 before the multipart body is spooled, through every other middleware."""
    settings = make_settings(tmp_path, max_upload_bytes=1024)
    app = create_app(settings, start_supervisor=False)
    if not any(m.cls is UploadSizeLimit for m in app.user_middleware):
        app.add_middleware(UploadSizeLimit, max_bytes=settings.max_upload_bytes)
    with app_client(app) as client:
        r = client.post("/api/datasets", files={"file": ("big.jsonl", RECORD * 2000)})
        assert r.status_code == 413 and "TENSION_MAX_UPLOAD_BYTES" in r.json()["detail"], r.text
        ok = client.post("/api/datasets", files={"file": ("ok.jsonl", RECORD)})
        assert ok.status_code == 201, ok.text


def test_a_request_body_nested_too_deeply_is_a_422_naming_it(client) -> None:  # type: ignore[no-untyped-def]
    body = '{"kind": "score", "params": ' + "[" * 5000 + "]" * 5000 + "}"
    r = client.post("/api/jobs", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422 and "nested too deeply" in r.json()["detail"]
