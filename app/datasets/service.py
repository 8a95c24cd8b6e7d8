"""Uploaded datasets: validated on arrival, stored under their content revision, never half-written."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from app.core.db import Dataset
from app.core.errors import Invalid, TooLarge
from workers.contract.artifacts import artifact_uri
from workers.data.loaders import DatasetFormatError, load_pairs_file

if TYPE_CHECKING:
    from app.core.services import Services

ALLOWED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def _suffix(filename: str) -> str:
    for suf in ALLOWED_SUFFIXES:
        if filename.lower().endswith(suf):
            return suf
    raise Invalid(f"{filename}: unsupported file type; use one of {', '.join(ALLOWED_SUFFIXES)}")


def store_upload(services: Services, stream: BinaryIO, filename: str, fmt: str = "auto",
                 name: str | None = None, objective: str | None = None) -> Dataset:
    """Copy to a temp file, validate every line, then put it into the artifact store under its hash."""
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "upload").name)[:120] or "upload"
    suffix = _suffix(safe_name)
    root = services.settings.data_dir / "uploads"
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
            pairs = load_pairs_file(tmp, fmt, objective=objective)  # type: ignore[arg-type]
        except DatasetFormatError as exc:
            raise Invalid(f"{safe_name}: {_strip_path(str(exc), tmp)}") from exc
        except ValueError as exc:
            raise Invalid(f"{safe_name}: {exc}") from exc
        if not pairs:
            raise Invalid(f"{safe_name}: the file holds no preference pairs")
        rev = digest.hexdigest()[:16]
        key = f"datasets/{rev}{suffix}"
        with services.db.session() as s:
            existing = s.get(Dataset, rev)
            if existing is not None:
                return existing
            services.settings.artifact_store_client().put_file(tmp, key)
            ds = Dataset(id=rev, name=name or safe_name, format=fmt, path=artifact_uri(key), n_pairs=len(pairs),
                         objectives=sorted({p.objective for p in pairs}),
                         subsets=sorted({p.subset for p in pairs}))
            s.add(ds)
        return ds
    finally:
        tmp.unlink(missing_ok=True)


def _strip_path(message: str, tmp: Path) -> str:
    return message.replace(str(tmp), "").lstrip(", :")


def list_datasets(services: Services) -> list[Dataset]:
    from sqlalchemy import select

    with services.db.session() as s:
        return list(s.scalars(select(Dataset).order_by(Dataset.created_at.desc())))
