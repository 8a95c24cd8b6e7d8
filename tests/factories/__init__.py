"""Factories that seed SQL and DuckDB through the real ingest path, so route and page tests need no model.

`ingest_result` writes result rows exactly as a worker would (validated against the contract's row
models, Parquet in the artifact store, a manifest) and ingests them with the API's own
`StatsStore.ingest`; `add_checkpoint` records a trained RM's row without training one. Domain
factories (`tests/factories/<domain>.py`) build realistic rows on top of these two.
"""

from __future__ import annotations

import uuid
from typing import Any

from app.core.db import Checkpoint, Job, Run
from app.core.services import Services
from workers.contract.artifacts import ResultManifest, artifact_uri, checkpoint_key, job_key
from workers.contract.results import ResultRow
from workers.contract.vocab import JobKind
from workers.jobs.io import rows_table


def ingest_result(services: Services, kind: JobKind, tables: dict[type[ResultRow], list[dict[str, Any]]], *,
                  params: dict[str, Any] | None = None, summary: dict[str, Any] | None = None,
                  result_key: str | None = None, checkpoint: str | None = None) -> str:
    """Store `tables` as one finished job of `kind` (job row, run row, DuckDB rows); returns its result key."""
    return ingest_tables(services, kind, {model.TABLE: rows_table(model, rows) for model, rows in tables.items()},
                         params=params, summary=summary, result_key=result_key, checkpoint=checkpoint)


def ingest_tables(services: Services, kind: JobKind, tables: dict[str, Any], *,
                  params: dict[str, Any] | None = None, summary: dict[str, Any] | None = None,
                  result_key: str | None = None, checkpoint: str | None = None) -> str:
    """`ingest_result` for columnar data: `tables` maps a result table's name to an Arrow table already in its
    row model's schema (`workers.jobs.io.arrow_schema`), for results too large to build row by row."""
    import io

    import pyarrow.parquet as pq

    from workers.contract.artifacts import ResultTable

    job_id = uuid.uuid4().hex[:16]
    key = result_key or uuid.uuid4().hex
    store = services.settings.artifact_store_client()
    prefix = job_key(job_id)
    written = []
    for name, table in tables.items():
        buf = io.BytesIO()
        pq.write_table(table, buf)
        table_key = f"{prefix}/{name}.parquet"
        store.write_bytes(table_key, buf.getvalue())
        written.append(ResultTable(table=name, key=table_key, rows=table.num_rows))
    manifest = ResultManifest(job_id=job_id, kind=kind, result_key=key, tables=written, summary=summary or {},
                              checkpoint=checkpoint)
    services.store.ingest(manifest, store, prefix)
    with services.db.session() as s:
        s.add(Job(id=job_id, kind=str(kind), params=params or {}, result_key=key, status="succeeded", progress=1.0,
                  message="done", metrics={}, executor="factory", output_dir=prefix))
        s.add(Run(result_key=key, kind=str(kind), job_id=job_id, params=params or {}, summary=summary or {}))
    return key


def add_checkpoint(services: Services, *, base_model: str = "tiny-gpt2", regime: str = "mixed", seed: int = 0,
                   preset: str = "demo", checkpoint: str | None = None, meta: dict[str, Any] | None = None) -> str:
    """A checkpoint row as a finished training job records it (no weights: for pages and queries)."""
    ck = checkpoint or uuid.uuid4().hex[:32]
    with services.db.session() as s:
        s.add(Checkpoint(id=ck, base_model=base_model, regime=regime, seed=seed, preset=preset, job_id=None,
                         meta=meta or {}, path=artifact_uri(checkpoint_key(ck))))
    return ck
