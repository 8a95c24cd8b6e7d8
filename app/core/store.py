"""Neuron-statistics store: versioned schema, atomic idempotent ingest of worker result files."""

from __future__ import annotations

import json
import re
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from workers.contract.artifacts import ResultManifest
from workers.storage import ArtifactStore

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "migrations" / "duckdb"
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


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
            if not _IDENT.match(t.table) or t.table not in known or t.table in {"ingested_results", "schema_version"}:
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
                self.conn.execute(
                    "INSERT INTO ingested_results (result_key, job_id, kind, manifest) VALUES (?, ?, ?, ?)",
                    [manifest.result_key, manifest.job_id, str(manifest.kind), manifest.model_dump_json()],
                )
                self.conn.execute("COMMIT")
            except Exception as exc:
                self.conn.execute("ROLLBACK")
                raise IngestError(f"ingest of {manifest.result_key} failed, nothing stored: {exc}") from exc
        return True

    # -- queries ----------------------------------------------------------------------------------
    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        with self._lock:
            cur = self.conn.execute(sql, params or [])
            cols = [d[0] for d in cur.description] if cur.description else []
            return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]

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
