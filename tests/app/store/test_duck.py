"""DuckDB store: versioned schema, atomic and idempotent ingest, single-process ownership."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.core.store import IngestError, StatsStore
from workers.contract.artifacts import ResultManifest, ResultTable
from workers.storage import ArtifactStore

JOB = "jobs/j"


def _rewards(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"pair_id": [f"p{i}" for i in range(n)], "side": ["chosen"] * n,
                             "reward": [float(i) for i in range(n)]}), path)


def _manifest(key: str, *tables: tuple[str, str, int]) -> ResultManifest:
    return ResultManifest(job_id="j", kind="score", result_key=key,
                          tables=[ResultTable(table=t, key=f"{JOB}/{p}", rows=r) for t, p, r in tables])


def _ingest(store: StatsStore, manifest: ResultManifest, root: Path) -> bool:
    return store.ingest(manifest, ArtifactStore(root), JOB)


def test_schema_versioned_and_reopen_keeps_data(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    v = store.schema_version
    assert v >= 1
    _rewards(tmp_path / "jobs" / "j" / "r.parquet", 3)
    assert _ingest(store, _manifest("k", ("rewards", "r.parquet", 3)), tmp_path)
    store.close()
    again = StatsStore(tmp_path / "s.duckdb")
    assert again.schema_version == v
    assert again.scalar("SELECT count(*) FROM rewards WHERE result_key='k'") == 3
    assert again.scalar("SELECT count(*) FROM schema_version") == v
    again.close()


def test_ingest_is_idempotent(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    _rewards(tmp_path / "jobs" / "j" / "r.parquet", 5)
    m = _manifest("k1", ("rewards", "r.parquet", 5))
    assert _ingest(store, m, tmp_path) is True
    assert _ingest(store, m, tmp_path) is False
    assert store.scalar("SELECT count(*) FROM rewards") == 5
    assert store.scalar("SELECT sum(reward) FROM rewards") == pytest.approx(10.0)
    store.close()


def test_failure_mid_ingest_leaves_nothing(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    _rewards(tmp_path / "jobs" / "j" / "good.parquet", 4)
    # The second file lacks the NOT NULL reward column: the insert of table two fails after table one.
    pq.write_table(pa.table({"pair_id": ["x"], "side": ["chosen"]}), tmp_path / "jobs" / "j" / "bad.parquet")
    m = _manifest("k2", ("rewards", "good.parquet", 4), ("rewards", "bad.parquet", 1))
    with pytest.raises(IngestError, match="nothing stored"):
        _ingest(store, m, tmp_path)
    assert store.scalar("SELECT count(*) FROM rewards") == 0
    assert not store.is_ingested("k2")
    # and a clean retry then works
    assert _ingest(store, _manifest("k2", ("rewards", "good.parquet", 4)), tmp_path)
    assert store.scalar("SELECT count(*) FROM rewards") == 4
    store.close()


@pytest.mark.parametrize("table,key", [("schema_version", f"{JOB}/r.parquet"),
                                       ("rewards; DROP TABLE x", f"{JOB}/r.parquet"),
                                       ("rewards", "jobs/other/r.parquet"), ("rewards", f"{JOB}/missing.parquet")])
def test_manifest_cannot_escape(tmp_path: Path, table: str, key: str) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    _rewards(tmp_path / "jobs" / "j" / "r.parquet", 2)
    _rewards(tmp_path / "jobs" / "other" / "r.parquet", 2)
    manifest = ResultManifest(job_id="j", kind="score", result_key="k",
                              tables=[ResultTable(table=table, key=key, rows=2)])
    with pytest.raises(IngestError):
        _ingest(store, manifest, tmp_path)
    assert store.scalar("SELECT count(*) FROM rewards") == 0
    store.close()


def test_second_process_cannot_open_the_file(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    code = f"import duckdb; duckdb.connect({str(tmp_path / 's.duckdb')!r}, read_only=True)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "lock" in proc.stderr.lower()
    store.close()
