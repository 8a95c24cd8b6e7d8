"""Torch-free checks shared by job kinds: model names, checkpoints, datasets -> clear 4xx messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import select

from app.core.db import Checkpoint, Dataset
from app.core.errors import Invalid, NotFound
from workers.contract.jobs import DatasetRef
from workers.data.loaders import DatasetFormatError, dataset_revision, load_dataset
from workers.data.schema import PreferencePair
from workers.models.names import UnknownModelError, check_model_name

if TYPE_CHECKING:
    from app.core.services import Services


def check_model(name: str) -> None:
    try:
        check_model_name(name)
    except UnknownModelError as exc:
        raise Invalid(str(exc)) from exc


def check_checkpoint(services: Services, checkpoint_id: str) -> Checkpoint:
    with services.db.session() as s:
        ck = s.get(Checkpoint, checkpoint_id)
    if ck is None:
        raise NotFound(f"unknown checkpoint {checkpoint_id!r}; train one first or list them with "
                       "`tension jobs list --kind train`")
    return ck


def resolve_dataset(services: Services, ref: DatasetRef) -> DatasetRef:
    """`dataset:<id>` names an uploaded dataset; turn it into its artifact URI (which names its content)."""
    if ref.source.startswith("dataset:"):
        with services.db.session() as s:
            ds = s.get(Dataset, ref.source.split(":", 1)[1])
        if ds is None:
            raise NotFound(f"unknown dataset {ref.source!r}; upload it first (`tension datasets add FILE`)")
        return ref.model_copy(update={"source": ds.path})
    if ref.source.startswith("artifact:"):
        with services.db.session() as s:
            known = s.scalars(select(Dataset.id).where(Dataset.path == ref.source)).first()
        if known is None:
            raise NotFound(f"unknown dataset artifact {ref.source!r}; name uploads as 'dataset:<id>'")
    return ref


def load_checked_dataset(services: Services, ref: DatasetRef) -> tuple[list[PreferencePair] | None, str]:
    """Load the pairs a job will see, or fail at submission with the line and problem.

    A Hugging Face dataset is not downloaded inside a request: the job fetches it (pairs None here)."""
    ref = resolve_dataset(services, ref)
    if ref.source.startswith("hf:"):
        return None, dataset_revision(ref.source)
    try:
        pairs = load_dataset(ref, store=services.settings.artifact_store_client())
        revision = dataset_revision(ref.source)
    except DatasetFormatError as exc:
        raise Invalid(f"dataset error: {exc}") from exc
    except FileNotFoundError as exc:
        raise NotFound(f"dataset {ref.source} is missing from the artifact store") from exc
    except ValueError as exc:
        raise Invalid(f"dataset error: {exc}") from exc
    if not pairs:
        raise Invalid(f"dataset {ref.source!r} has no pairs for split={ref.split}, "
                       f"objectives={ref.objectives}, subsets={ref.subsets}")
    return pairs, revision
