"""What a running job may touch: its spec and the artifact store, nothing of the API's disk.

`JobIO` resolves a job's inputs by artifact key or URI (checkpoints, datasets, arrays) and writes its
result tables, validated against the row models of `workers.contract.results`, under the job's prefix.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workers.contract.artifacts import ResultManifest, ResultTable, checkpoint_key, key_of
from workers.contract.jobs import DatasetRef, JobSpec
from workers.contract.results import ResultRow
from workers.data.schema import PreferencePair
from workers.storage import ArtifactStore

_ARROW = {str: pa.string(), int: pa.int64(), float: pa.float64(), bool: pa.bool_()}


def arrow_schema(row_model: type[ResultRow]) -> pa.Schema:
    """The Parquet schema of a result table, from its row model (X | None is a nullable X)."""
    fields = []
    for name, f in row_model.model_fields.items():
        ann = f.annotation
        args = [a for a in getattr(ann, "__args__", ()) if a is not type(None)]
        base = args[0] if args else ann
        if not isinstance(base, type) or base not in _ARROW:
            raise TypeError(f"{row_model.__name__}.{name}: no Parquet type for {ann!r}")
        fields.append(pa.field(name, _ARROW[base], nullable=bool(args)))
    return pa.schema(fields)


def rows_table(row_model: type[ResultRow], rows: list[dict[str, Any]]) -> pa.Table:
    """An Arrow table of `rows` in the model's columns; a missing or unknown column is an error."""
    cols = row_model.columns()
    seen: set[str] = set()
    for r in rows:
        seen.update(r)
    extra, missing = seen - set(cols), set(cols) - seen if rows else set()
    if extra or missing:
        raise ValueError(f"{row_model.TABLE}: rows do not fit the table (unknown {sorted(extra)}, "
                         f"missing {sorted(missing)})")
    return pa.Table.from_pylist(rows, schema=arrow_schema(row_model))


@dataclass
class JobIO:
    spec: JobSpec
    store: ArtifactStore = field(init=False)

    def __post_init__(self) -> None:
        self.store = ArtifactStore(self.spec.store_url)

    # -- inputs -------------------------------------------------------------------------------------
    def checkpoint_dir(self, checkpoint: str) -> Path:
        """A local directory with the checkpoint (the store's own, or a download for a remote store)."""
        try:
            return self.store.local_dir(checkpoint_key(checkpoint))
        except FileNotFoundError as exc:
            raise FileNotFoundError(f"checkpoint {checkpoint!r} is not in the artifact store") from exc

    def checkpoint_meta(self, checkpoint: str) -> dict[str, Any]:
        raw = self.store.read_json(f"{checkpoint_key(checkpoint)}/meta.json") or {}
        return {"base_model": raw.get("base_model") or raw.get("model") or "unknown",
                "regime": raw.get("regime", "unknown"), "seed": int(raw.get("seed", 0))}

    def pairs(self, ref: DatasetRef) -> list[PreferencePair]:
        from workers.data.loaders import load_dataset

        return load_dataset(ref, store=self.store)

    def arrays(self, uri: str | None) -> dict[str, np.ndarray]:
        """The arrays of an `.npz` artifact (empty when no URI was given)."""
        if not uri:
            return {}
        with np.load(io.BytesIO(self.store.read_bytes(key_of(uri)))) as data:
            return {k: data[k] for k in data.files}

    # -- outputs ------------------------------------------------------------------------------------
    def write_table(self, row_model: type[ResultRow], rows: list[dict[str, Any]]) -> ResultTable:
        table = rows_table(row_model, rows)
        key = f"{self.spec.output}/{row_model.TABLE}.parquet"
        buf = io.BytesIO()
        pq.write_table(table, buf)
        self.store.write_bytes(key, buf.getvalue())
        return ResultTable(table=row_model.TABLE, key=key, rows=len(rows))

    def manifest(self, tables: list[ResultTable], summary: dict[str, Any],
                 checkpoint: str | None = None) -> ResultManifest:
        return ResultManifest(job_id=self.spec.job_id, kind=self.spec.kind, result_key=self.spec.result_key,
                              tables=tables, summary=json.loads(json.dumps(summary, default=_plain)),
                              checkpoint=checkpoint)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)
