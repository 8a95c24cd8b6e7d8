"""Neuron-statistics store: versioned schema, atomic idempotent ingest of worker result files.

Besides the result tables, the store keeps index tables derived from them (`INDEXES`): each is refreshed
for an ingested result inside the ingest's own transaction, from a view that a migration defines (and
used to backfill stores made before the index). Values computed from stored results can be kept in
`StatsStore.cache` (see `ResultCache`), keyed by the result keys they come from, or by
`StatsStore.generation` for what lists the stored results.
"""

from __future__ import annotations

import json
import re
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np

from workers.contract.artifacts import ResultManifest
from workers.storage import ArtifactStore

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "migrations" / "duckdb"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")
T = TypeVar("T")

INDEXES: dict[str, tuple[tuple[str, str], ...]] = {
    "neuron_stats": (("neuron_captures", "neuron_captures_source"),),
}
"""Result table → its index tables, each with the view (grouped by result_key) it is refreshed from."""
INTERNAL_TABLES: frozenset[str] = frozenset(
    {"schema_version", "ingested_results", *(name for idx in INDEXES.values() for pair in idx for name in pair)})
"""Tables and views of the store that no result may write to: bookkeeping and derived indexes."""
CACHE_BYTES = 256 * 2**20


class ResultCache:
    """Values computed from stored results (score arrays, selections), least recently used out first.

    Invariants: every key names the result keys its value was computed from, or the store's `generation`
    when the value lists stored results; stored results never change and ingest only adds new ones (and
    bumps the generation), so an entry is never stale: a new capture of a checkpoint makes new keys.
    The values' estimated sizes stay within `max_bytes` (a value larger than that is returned, not kept).
    Values are shared between requests: numpy arrays are made read-only before they are kept.
    Thread-safe; concurrent requests for one missing key compute it once.
    """

    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._pending: dict[Hashable, threading.Lock] = {}
        self.bytes = 0
        self.hits = self.misses = 0

    def get(self, key: Hashable, compute: Callable[[], T], size: Callable[[T], int] | None = None) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]  # type: ignore[no-any-return]
            pending = self._pending.setdefault(key, threading.Lock())
        with pending:
            with self._lock:  # computed by another thread while this one waited
                if key in self._items:
                    self._items.move_to_end(key)
                    self.hits += 1
                    return self._items[key][0]  # type: ignore[no-any-return]
                self.misses += 1
            try:
                value = compute()
                nbytes = size(value) if size is not None else _nbytes(value)
                with self._lock:
                    if nbytes <= self.max_bytes:
                        self._items[key] = (value, nbytes)
                        self.bytes += nbytes
                        while self.bytes > self.max_bytes:
                            _, (_, dropped) = self._items.popitem(last=False)
                            self.bytes -= dropped
            finally:
                with self._lock:
                    self._pending.pop(key, None)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.bytes = 0


def _nbytes(value: Any) -> int:
    """Estimated size, read-only-ing numpy arrays on the way (a shared value must not be changed in place)."""
    if isinstance(value, np.ndarray):
        value.setflags(write=False)
        return int(value.nbytes) + 128
    if isinstance(value, tuple | list):
        return sum(_nbytes(v) for v in value) + 64
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values()) + 64
    if hasattr(value, "__dataclass_fields__"):
        return sum(_nbytes(getattr(value, f)) for f in value.__dataclass_fields__) + 64
    return 64


class IngestError(RuntimeError):
    """A result could not be ingested; nothing of it was stored."""


class StatsStore:
    """One connection, guarded by a lock; DuckDB allows a single writing process."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self.conn = duckdb.connect(str(self.path))
        self.schema_version = self._migrate()
        self.cache = ResultCache()
        # Ingests committed since the store was opened: part of the cache key of anything that lists the stored
        # results (this process is DuckDB's single writer, so nothing else adds results).
        self.generation = 0

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    # -- schema -----------------------------------------------------------------------------------
    def _migrate(self) -> int:
        with self._lock:
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY, name VARCHAR,"
                " applied_at TIMESTAMP DEFAULT current_timestamp)"
            )
            done = {r[0] for r in self.conn.execute("SELECT version FROM schema_version").fetchall()}
            for f in sorted(SCHEMA_DIR.glob("*.sql")):
                version = int(f.name.split("_", 1)[0])
                if version in done:
                    continue
                self.conn.execute("BEGIN TRANSACTION")
                try:
                    self.conn.execute(f.read_text())
                    self.conn.execute("INSERT INTO schema_version (version, name) VALUES (?, ?)", [version, f.name])
                    self.conn.execute("COMMIT")
                except Exception:
                    self.conn.execute("ROLLBACK")
                    raise
            row = self.conn.execute("SELECT max(version) FROM schema_version").fetchone()
            return int(row[0]) if row and row[0] is not None else 0

    def tables(self) -> set[str]:
        with self._lock:
            rows = self.conn.execute("SELECT table_name FROM information_schema.tables").fetchall()
        return {r[0] for r in rows}

    # -- ingest -----------------------------------------------------------------------------------
    def is_ingested(self, result_key: str) -> bool:
        with self._lock:
            row = self.conn.execute(
                "SELECT 1 FROM ingested_results WHERE result_key = ?", [result_key]
            ).fetchone()
        return row is not None

    def ingest(self, manifest: ResultManifest, artifacts: ArtifactStore, job_prefix: str) -> bool:
        """Load every table of a manifest in one transaction. Returns False when already ingested.

        Table files are read from the artifact store, only from under the job's own prefix (a remote
        store's files are fetched to a temporary directory first)."""
        known = self.tables()
        for t in manifest.tables:
            if not _IDENT.match(t.table) or t.table not in known or t.table in INTERNAL_TABLES:
                raise IngestError(f"result names an unknown table {t.table!r}")
            if not t.key.startswith(job_prefix.rstrip("/") + "/") or not artifacts.exists(t.key):
                raise IngestError(f"result file {t.key!r} is missing or outside the job's prefix")
        with tempfile.TemporaryDirectory(prefix="tension-ingest-") as tmp:
            try:
                files = [(t.table, artifacts.local_file(t.key, cache_dir=tmp)) for t in manifest.tables]
            except OSError as exc:
                raise IngestError(f"result files could not be read: {exc}") from exc
            return self._ingest_files(manifest, files)

    def _ingest_files(self, manifest: ResultManifest, files: list[tuple[str, Path]]) -> bool:
        with self._lock:
            if self.is_ingested(manifest.result_key):
                return False
            self.conn.execute("BEGIN TRANSACTION")
            try:
                for table, p in files:
                    reader = "read_parquet" if p.suffix == ".parquet" else "read_json_auto"
                    self.conn.execute(
                        f"INSERT INTO {table} BY NAME SELECT ? AS result_key, * EXCLUDE (result_key) "
                        f"FROM (SELECT NULL AS result_key, * FROM {reader}(?))",
                        [manifest.result_key, str(p)],
                    )
                for table in dict.fromkeys(t for t, _ in files):
                    for index, source in INDEXES.get(table, ()):
                        self._refresh_index(index, source, manifest.result_key)
                self.conn.execute(
                    "INSERT INTO ingested_results (result_key, job_id, kind, manifest) VALUES (?, ?, ?, ?)",
                    [manifest.result_key, manifest.job_id, str(manifest.kind), manifest.model_dump_json()],
                )
                self.conn.execute("COMMIT")
                self.generation += 1
            except Exception as exc:
                self.conn.execute("ROLLBACK")
                raise IngestError(f"ingest of {manifest.result_key} failed, nothing stored: {exc}") from exc
        return True

    def _refresh_index(self, index: str, source: str, result_key: str) -> None:
        """The index rows of one result, from its source view; run again, the same rows (idempotent)."""
        self.conn.execute(f"DELETE FROM {index} WHERE result_key = ?", [result_key])
        self.conn.execute(f"INSERT INTO {index} BY NAME SELECT * FROM {source} WHERE result_key = ?", [result_key])

    # -- queries ----------------------------------------------------------------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.conn.execute(sql, params or [])
            cols = [d[0] for d in cur.description] if cur.description else []
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

    def columns(self, sql: str, params: list[Any] | None = None) -> dict[str, np.ndarray]:
        """The result as one numpy array per column, fetched columnar (through Arrow, no Python object per
        value). A column with NULLs comes back as a `numpy.ma.MaskedArray`, NULLs masked.

        Runs on its own cursor (a connection to the same database), so it reads the committed data and does
        not hold the store's lock while DuckDB works."""
        with self._lock:
            cur = self.conn.cursor()
        try:
            table = cur.sql(sql, params=params or None).to_arrow_table()
        finally:
            cur.close()
        out: dict[str, np.ndarray] = {}
        for name in table.column_names:
            col = table.column(name).combine_chunks()
            values = col.to_numpy(zero_copy_only=False)
            out[name] = np.ma.MaskedArray(values, col.is_null().to_numpy(zero_copy_only=False)) \
                if col.null_count else values
        return out

    def scalar(self, sql: str, params: list[Any] | None = None) -> Any:
        with self._lock:
            row = self.conn.execute(sql, params or []).fetchone()
        return row[0] if row else None

    @contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        with self._lock:
            yield self.conn

    def manifest(self, result_key: str) -> dict[str, Any] | None:
        raw = self.scalar("SELECT manifest FROM ingested_results WHERE result_key = ?", [result_key])
        return json.loads(raw) if raw else None
