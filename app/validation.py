"""Torch-free checks shared by job kinds: model names, checkpoints, datasets -> clear 4xx messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.db import Checkpoint, Dataset
from app.jobs.service import JobError
from workers.data.loaders import DatasetFormatError, dataset_revision, load_dataset
from workers.data.schema import PreferencePair
from workers.models.names import UnknownModelError, check_model_name
from workers.specs import DatasetRef

if TYPE_CHECKING:
    from app.services import Services


def check_model(name: str) -> None:
    try:
        check_model_name(name)
    except UnknownModelError as exc:
        raise JobError(str(exc), 400) from exc


def check_checkpoint(services: Services, checkpoint_id: str) -> Checkpoint:
    with services.db.session() as s:
        ck = s.get(Checkpoint, checkpoint_id)
    if ck is None:
        raise JobError(f"unknown checkpoint {checkpoint_id!r}; train one first or list them with "
                       "`tension runs list`", 404)
    return ck


def resolve_dataset(services: Services, ref: DatasetRef) -> DatasetRef:
    """`dataset:<id>` names an uploaded dataset; turn it into the stored file's path."""
    if ref.source.startswith("dataset:"):
        with services.db.session() as s:
            ds = s.get(Dataset, ref.source.split(":", 1)[1])
        if ds is None:
            raise JobError(f"unknown dataset {ref.source!r}", 404)
        return ref.model_copy(update={"source": ds.path})
    return ref


def load_checked_dataset(services: Services, ref: DatasetRef) -> tuple[list[PreferencePair], str]:
    """Load the pairs a job will see, or fail at submission with the file, line and problem."""
    ref = resolve_dataset(services, ref)
    try:
        pairs = load_dataset(ref)
        revision = dataset_revision(ref.source)
    except DatasetFormatError as exc:
        raise JobError(f"dataset error: {exc}", 400) from exc
    except FileNotFoundError as exc:
        raise JobError(f"dataset file not found: {ref.source}", 400) from exc
    except ValueError as exc:
        raise JobError(f"dataset error: {exc}", 400) from exc
    if not pairs:
        raise JobError(f"dataset {ref.source!r} has no pairs for split={ref.split}, "
                       f"objectives={ref.objectives}, subsets={ref.subsets}", 400)
    return pairs, revision
