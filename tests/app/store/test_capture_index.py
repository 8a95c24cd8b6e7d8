"""The capture index `neuron_captures`: kept by ingest in the ingest's transaction, idempotent, and backfilled
by its migration on a store made before it existed. Real DuckDB files, real ingest path, no app."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import app.core.store as store_module
from app.core.store import INTERNAL_TABLES, IngestError, StatsStore
from tests.factories.neurons import stat_rows
from workers.contract.artifacts import ResultManifest, ResultTable
from workers.contract.results import NeuronStatRow
from workers.jobs.io import rows_table
from workers.storage import ArtifactStore

COLUMNS = "result_key, checkpoint, base_model, regime, hook, n_layers, n_neurons, n_rows"


def _write(root: Path, job: str, name: str, rows: list[dict[str, Any]]) -> str:
    path = root / "jobs" / job / f"{name}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(rows_table(NeuronStatRow, rows), path)
    return f"jobs/{job}/{name}.parquet"


def _capture(root: Path, store: StatsStore, job: str, key: str, rows: list[dict[str, Any]]) -> bool:
    table_key = _write(root, job, "neuron_stats", rows)
    manifest = ResultManifest(job_id=job, kind="capture", result_key=key,
                              tables=[ResultTable(table="neuron_stats", key=table_key, rows=len(rows))])
    return store.ingest(manifest, ArtifactStore(root), f"jobs/{job}")


def _index(store: StatsStore) -> list[tuple[Any, ...]]:
    with store.cursor() as conn:
        return conn.execute(f"SELECT {COLUMNS} FROM neuron_captures ORDER BY ALL").fetchall()


def _from_rows(store: StatsStore) -> list[tuple[Any, ...]]:
    """What the index must hold: the statistics grouped per result, checkpoint and hook, by plain SQL."""
    with store.cursor() as conn:
        return conn.execute(
            "SELECT result_key, checkpoint, any_value(base_model), any_value(regime), hook, max(layer) + 1,"
            " max(neuron) + 1, count(*) FROM neuron_stats GROUP BY result_key, checkpoint, hook ORDER BY ALL"
        ).fetchall()


def _two_captures(root: Path, store: StatsStore) -> None:
    # One result holding two hooks of one checkpoint (different shapes), and a second checkpoint.
    rows = stat_rows("ck1", "helpful", shape=(3, 16)) + stat_rows("ck1", "helpful", hook="up_proj_output",
                                                                  shape=(2, 8))
    assert _capture(root, store, "a", "key-a", rows)
    assert _capture(root, store, "b", "key-b", stat_rows("ck2", "mixed", base_model="other", shape=(4, 5)))


def test_ingest_fills_the_index(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    _two_captures(tmp_path, store)
    assert _index(store) == [
        ("key-a", "ck1", "tiny-bert", "helpful", "down_proj_input", 3, 16, 3 * 16 * 4),
        ("key-a", "ck1", "tiny-bert", "helpful", "up_proj_output", 2, 8, 2 * 8 * 4),
        ("key-b", "ck2", "other", "mixed", "down_proj_input", 4, 5, 4 * 5 * 4),
    ]
    assert _index(store) == _from_rows(store)
    store.close()


def test_reingest_and_refresh_are_idempotent(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    _two_captures(tmp_path, store)
    before = _index(store)
    assert not _capture(tmp_path, store, "a", "key-a", stat_rows("ck1", "helpful"))  # already ingested
    with store.cursor():
        store._refresh_index("neuron_captures", "neuron_captures_source", "key-a")
        store._refresh_index("neuron_captures", "neuron_captures_source", "key-a")
    assert _index(store) == before
    store.close()
    again = StatsStore(tmp_path / "s.duckdb")  # reopening migrates nothing twice
    assert _index(again) == before
    again.close()


def test_a_failed_ingest_leaves_no_index_rows(tmp_path: Path) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    good = _write(tmp_path, "c", "good", stat_rows("ck3", "harmless"))
    bad = tmp_path / "jobs" / "c" / "bad.parquet"
    pq.write_table(rows_table(NeuronStatRow, stat_rows("ck3", "harmless")).drop(["layer"]), bad)  # NOT NULL missing
    manifest = ResultManifest(job_id="c", kind="capture", result_key="key-c", tables=[
        ResultTable(table="neuron_stats", key=good, rows=1), ResultTable(table="neuron_stats", key="jobs/c/bad.parquet",
                                                                         rows=1)])
    with pytest.raises(IngestError, match="nothing stored"):
        store.ingest(manifest, ArtifactStore(tmp_path), "jobs/c")
    assert _index(store) == []
    store.close()


@pytest.mark.parametrize("table", sorted(INTERNAL_TABLES - {"schema_version", "ingested_results"}))
def test_a_result_cannot_write_the_index(tmp_path: Path, table: str) -> None:
    store = StatsStore(tmp_path / "s.duckdb")
    key = _write(tmp_path, "d", "x", stat_rows("ck4", "mixed"))
    manifest = ResultManifest(job_id="d", kind="capture", result_key="key-d",
                              tables=[ResultTable(table=table, key=key, rows=1)])
    with pytest.raises(IngestError, match="unknown table"):
        store.ingest(manifest, ArtifactStore(tmp_path), "jobs/d")
    store.close()


def test_the_migration_backfills_a_store_made_without_the_index(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    old_schema = tmp_path / "schema"
    old_schema.mkdir()
    for f in sorted(store_module.SCHEMA_DIR.glob("*.sql")):
        if int(f.name.split("_", 1)[0]) < 5:
            (old_schema / f.name).write_text(f.read_text())
    with monkeypatch.context() as m:  # the store as the code before the index made it
        m.setattr(store_module, "SCHEMA_DIR", old_schema)
        m.setattr(store_module, "INDEXES", {})
        old = StatsStore(tmp_path / "s.duckdb")
        assert old.schema_version == 4 and "neuron_captures" not in old.tables()
        _two_captures(tmp_path, old)
        old.close()
    store = StatsStore(tmp_path / "s.duckdb")
    assert store.schema_version >= 5
    assert len(_index(store)) == 3
    assert _index(store) == _from_rows(store)
    # and ingest keeps it from then on
    assert _capture(tmp_path, store, "e", "key-e", stat_rows("ck5", "harmless", shape=(2, 3)))
    assert ("key-e", "ck5", "tiny-bert", "harmless", "down_proj_input", 2, 3, 24) in _index(store)
    assert _index(store) == _from_rows(store)
    store.close()
