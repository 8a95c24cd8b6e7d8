"""DuckDB store: versioned schema, atomic and idempotent ingest, single-process ownership."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.store import IngestError, StatsStore
from workers.specs import ResultManifest, ResultTable


def _rewards(path: Path, n: int) -> None:
    pq.write_table(pa.table({"pair_id": [f"p{i}" for i in range(n)], "side": ["chosen"] * n,
                             "reward": [float(i) for i in range(n)]}), path)


def _manifest(key: str, *tables: tuple[str, str, int]) -> ResultManifest:
    return ResultManifest(job_id="j", kind="score", result_key=key,
                          tables=[ResultTable(table=t, path=p, rows=r) for t, p, r in tables])


def test_schema_versioned_and_reopen_keeps_data(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    v = store.schema_version
    assert v >= 1
    _rewards(tmp_path / "r.parquet", 3)
    assert store.ingest(_manifest("k", ("rewards", "r.parquet", 3)), tmp_path)
    store.close()
    again = StatsStore(tmp_path / "s.duckdb")
    assert again.schema_version == v
    assert again.scalar("SELECT count(*) FROM rewards WHERE result_key='k'") == 3
    assert again.scalar("SELECT count(*) FROM schema_version") == v
    again.close()


def test_ingest_is_idempotent(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    _rewards(tmp_path / "r.parquet", 5)
    m = _manifest("k1", ("rewards", "r.parquet", 5))
    assert store.ingest(m, tmp_path) is True
    assert store.ingest(m, tmp_path) is False
    assert store.scalar("SELECT count(*) FROM rewards") == 5
    assert store.scalar("SELECT sum(reward) FROM rewards") == pytest.approx(10.0)
    store.close()


def test_failure_mid_ingest_leaves_nothing(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    _rewards(tmp_path / "good.parquet", 4)
    # The second file lacks the NOT NULL reward column: the insert of table two fails after table one.
    pq.write_table(pa.table({"pair_id": ["x"], "side": ["chosen"]}), tmp_path / "bad.parquet")
    m = _manifest("k2", ("rewards", "good.parquet", 4), ("rewards", "bad.parquet", 1))
    with pytest.raises(IngestError, match="nothing stored"):
        store.ingest(m, tmp_path)
    assert store.scalar("SELECT count(*) FROM rewards") == 0
    assert not store.is_ingested("k2")
    # and a clean retry then works
    assert store.ingest(_manifest("k2", ("rewards", "good.parquet", 4)), tmp_path)
    assert store.scalar("SELECT count(*) FROM rewards") == 4
    store.close()


@pytest.mark.parametrize("table,path", [("schema_version", "r.parquet"), ("rewards; DROP TABLE x", "r.parquet"),
                                        ("rewards", "../outside.parquet"), ("rewards", "missing.parquet")])
def test_manifest_cannot_escape(tmp_path: Path, table: str, path: str) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    (tmp_path / "job").mkdir()
    _rewards(tmp_path / "job" / "r.parquet", 2)
    _rewards(tmp_path / "outside.parquet", 2)
    with pytest.raises(IngestError):
        store.ingest(_manifest("k", (table, path, 2)), tmp_path / "job")
    assert store.scalar("SELECT count(*) FROM rewards") == 0
    store.close()


def test_second_process_cannot_open_the_file(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    code = f"import duckdb; duckdb.connect({str(tmp_path / 's.duckdb')!r}, read_only=True)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode != 0
    assert "lock" in proc.stderr.lower()
    store.close()
