"""Uploaded datasets: validated on arrival, stored under their content revision, never half-written."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import select

from app.core.db import Database, Dataset
from app.core.errors import Invalid, TooLarge
from app.core.settings import Settings
from workers.contract.artifacts import artifact_uri
from workers.contract.vocab import DatasetFormat, Objective
from workers.data.loaders import DatasetFormatError, load_bundled, load_pairs_file

ALLOWED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def _suffix(filename: str) -> str:
    for suf in ALLOWED_SUFFIXES:
        if filename.lower().endswith(suf):
            return suf
    raise Invalid(f"{filename}: unsupported file type; use one of {', '.join(ALLOWED_SUFFIXES)}")


def store_upload(*, db: Database, settings: Settings, stream: BinaryIO, filename: str,
                 fmt: DatasetFormat = DatasetFormat.auto, name: str | None = None,
                 objective: Objective | None = None) -> Dataset:
    """Copy to a temp file, validate every line, then put it into the artifact store under its hash."""
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "upload").name)[:120] or "upload"
    suffix = _suffix(safe_name)
    root = settings.data_dir / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=root, suffix=".part" + suffix)
    tmp = Path(tmp_name)
    try:
        size = 0
        with os.fdopen(fd, "wb") as f:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > MAX_UPLOAD_BYTES:
                    raise TooLarge(f"{safe_name}: file larger than {MAX_UPLOAD_BYTES >> 20} MiB")
                digest.update(chunk)
                f.write(chunk)
        try:
            pairs = load_pairs_file(tmp, fmt, objective=objective)
        except DatasetFormatError as exc:
            raise Invalid(f"{safe_name}: {_strip_path(str(exc), tmp)}") from exc
        except ValueError as exc:
            raise Invalid(f"{safe_name}: {exc}") from exc
        if not pairs:
            raise Invalid(f"{safe_name}: the file holds no preference pairs")
        rev = digest.hexdigest()[:16]
        key = f"datasets/{rev}{suffix}"
        with db.session() as s:
            existing = s.get(Dataset, rev)
            if existing is not None:
                return existing
            settings.artifact_store_client().put_file(tmp, key)
            ds = Dataset(id=rev, name=name or safe_name, format=fmt, path=artifact_uri(key), n_pairs=len(pairs),
                         objectives=sorted({p.objective for p in pairs}),
                         subsets=sorted({p.subset for p in pairs}))
            s.add(ds)
        return ds
    finally:
        tmp.unlink(missing_ok=True)


def _strip_path(message: str, tmp: Path) -> str:
    return message.replace(str(tmp), "").lstrip(", :")


def list_datasets(*, db: Database) -> list[Dataset]:
    """Every uploaded dataset, newest first."""
    with db.session() as s:
        return list(s.scalars(select(Dataset).order_by(Dataset.created_at.desc())))


def bundled_summary() -> dict[str, object]:
    """The bundled demo data as the datasets page lists it: pairs, objectives, subsets."""
    bundled = load_bundled()
    present = {p.objective for p in bundled}
    return {"bundled_n": len(bundled), "bundled_objectives": [o for o in Objective if o in present],
            "bundled_subsets": sorted({p.subset for p in bundled})}
