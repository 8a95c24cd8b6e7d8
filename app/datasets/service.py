"""Datasets: uploaded or imported from a data root, validated on arrival within the size limits, stored
under their content revision in the artifact store, never half-written."""

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
from app.datasets import roots
from workers.contract.artifacts import artifact_uri
from workers.contract.vocab import DatasetFormat, Objective
from workers.data.loaders import (
    DatasetFormatError,
    DatasetTooLarge,
    ReadLimits,
    load_bundled,
    summarize_pairs_file,
)

ALLOWED_SUFFIXES = roots.ALLOWED_SUFFIXES


def setting_hint(field: str, value: int) -> str:
    """How a limit is named in a message: the setting, its value and the variable that changes it."""
    return f"limit {field} = {value:,}; the operator may raise TENSION_{field.upper()}"


def _suffix(filename: str) -> str:
    suffix = roots.allowed_suffix(filename)
    if suffix is None:
        raise Invalid(f"{filename}: unsupported file type; use one of {', '.join(ALLOWED_SUFFIXES)}")
    return suffix


def read_limits(settings: Settings, *, quote: bool = True) -> ReadLimits:
    """The bounds an incoming dataset is read within (settings max_decompressed_bytes, max_pairs)."""
    return ReadLimits(max_bytes=settings.max_decompressed_bytes, max_pairs=settings.max_pairs, quote=quote)


def store_upload(*, db: Database, settings: Settings, stream: BinaryIO, filename: str,
                 fmt: DatasetFormat = DatasetFormat.auto, name: str | None = None,
                 objective: Objective | None = None, quote: bool = True) -> Dataset:
    """Copy to a temp file (at most max_upload_bytes), validate every record as it streams by (at most
    max_decompressed_bytes and max_pairs), then put it into the artifact store under its hash.

    `quote`: whether error messages may quote the file's keys and values (not for a file the requester did
    not send, such as one in a data root).
    """
    safe_name = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(filename or "upload").name)[:120] or "upload"
    suffix = _suffix(safe_name)
    root = settings.data_dir / "uploads"
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    fd, tmp_name = tempfile.mkstemp(dir=root, suffix=".part" + suffix)
    tmp = Path(tmp_name)
    try:
        size, limit = 0, settings.max_upload_bytes
        with os.fdopen(fd, "wb") as f:
            while chunk := stream.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    raise TooLarge(f"{safe_name}: larger than {limit:,} bytes as sent "
                                   f"({setting_hint('max_upload_bytes', limit)})")
                digest.update(chunk)
                f.write(chunk)
        try:
            summary = summarize_pairs_file(tmp, fmt, objective=objective, limits=read_limits(settings, quote=quote),
                                           name=safe_name)
        except DatasetTooLarge as exc:
            raise TooLarge(f"{safe_name}: {exc.problem} ({setting_hint(exc.limit, exc.value)})") from exc
        except DatasetFormatError as exc:
            raise Invalid(f"{safe_name}: {_strip_path(str(exc), tmp)}") from exc
        except ValueError as exc:
            raise Invalid(f"{safe_name}: {exc}") from exc
        if not summary.n_pairs:
            raise Invalid(f"{safe_name}: the file holds no preference pairs")
        rev = digest.hexdigest()[:16]
        key = f"datasets/{rev}{suffix}"
        with db.session() as s:
            existing = s.get(Dataset, rev)
            if existing is not None:
                return existing
            settings.artifact_store_client().put_file(tmp, key)
            ds = Dataset(id=rev, name=name or safe_name, format=fmt, path=artifact_uri(key), n_pairs=summary.n_pairs,
                         objectives=summary.objectives, subsets=summary.subsets)
            s.add(ds)
        return ds
    finally:
        tmp.unlink(missing_ok=True)


def store_from_root(*, db: Database, settings: Settings, root: str, path: str,
                    fmt: DatasetFormat = DatasetFormat.auto, name: str | None = None,
                    objective: Objective | None = None) -> Dataset:
    """Import a file of an operator's data root exactly as an upload (its messages quote none of its content)."""
    r, target, st = roots.resolve_file(settings, root, path)
    with roots.open_checked(target, st) as stream:
        return store_upload(db=db, settings=settings, stream=stream, filename=Path(path).name, fmt=fmt,
                            name=name or f"{r.name}/{path}", objective=objective, quote=False)


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
