"""Uploaded datasets: validated on arrival, stored under their content revision, never half-written."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from app.db import Dataset
from app.jobs.service import JobError
from workers.data.loaders import DatasetFormatError, load_pairs_file

if TYPE_CHECKING:
    from app.services import Services

ALLOWED_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".parquet")
MAX_UPLOAD_BYTES = 512 * 1024 * 1024


def _suffix(filename: str) -> str:
    for suf in ALLOWED_SUFFIXES:
        if filename.lower().endswith(suf):
            return suf
    raise JobError(f"{filename}: unsupported file type; use one of {', '.join(ALLOWED_SUFFIXES)}", 400)


def store_upload(services: Services, stream: BinaryIO, filename: str, fmt: str = "auto",
                 name: str | None = None, objective: str | None = None) -> Dataset:
    """Copy to a temp file, validate every line, then move into place under its hash."""
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "upload").name)[:120] or "upload"
    suffix = _suffix(safe_name)
    root = services.settings.resolved_artifact_dir / "datasets"
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
                    raise JobError(f"{safe_name}: file larger than {MAX_UPLOAD_BYTES >> 20} MiB", 413)
                digest.update(chunk)
                f.write(chunk)
        try:
            pairs = load_pairs_file(tmp, fmt, objective=objective)  # type: ignore[arg-type]
        except DatasetFormatError as exc:
            raise JobError(f"{safe_name}: {_strip_path(str(exc), tmp)}", 400) from exc
        except ValueError as exc:
            raise JobError(f"{safe_name}: {exc}", 400) from exc
        if not pairs:
            raise JobError(f"{safe_name}: the file holds no preference pairs", 400)
        rev = digest.hexdigest()[:16]
        final = root / f"{rev}{suffix}"
        with services.db.session() as s:
            existing = s.get(Dataset, rev)
            if existing is not None:
                return existing
            shutil.move(str(tmp), final)
            ds = Dataset(id=rev, name=name or safe_name, format=fmt, path=str(final), n_pairs=len(pairs),
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
