"""Torch-free checks shared by job kinds: model names, checkpoints, datasets -> clear 4xx messages."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sqlalchemy import select

from app.core.db import Checkpoint, Dataset
from app.core.errors import Invalid, NotFound
from workers.contract.jobs import DatasetRef
from workers.contract.vocab import Objective
from workers.data.loaders import DatasetFormatError, dataset_revision, hub_dataset_id, load_dataset
from workers.data.schema import PreferencePair
from workers.models.names import UnknownModelError, check_model_name

if TYPE_CHECKING:
    from app.core.services import Services


def check_model(name: str, *, roots: Sequence[str | os.PathLike[str]] = ()) -> str:
    """A model name from a request: registered, a hub id, or a saved model's directory inside one of `roots`
    (the operator's data roots; none by default). Returns the name a job should carry (a directory resolved)."""
    try:
        kind = check_model_name(name, local_roots=roots)
    except UnknownModelError as exc:
        raise Invalid(str(exc)) from exc
    return os.path.realpath(name) if kind == "local" else name


def check_checkpoint(services: Services, checkpoint_id: str) -> Checkpoint:
    with services.db.session() as s:
        ck = s.get(Checkpoint, checkpoint_id)
    if ck is None:
        raise NotFound(f"unknown checkpoint {checkpoint_id!r}; train one first or list them with "
                       "`tension jobs list --kind train`")
    return ck


def resolve_dataset(services: Services, ref: DatasetRef) -> DatasetRef:
    """Turn a request's source into what a worker reads: `dataset:<id>` (an upload) into its artifact URI
    (which names its content), `root:<root>/<path>` into the artifact URI of the file imported from the
    operator's data root. Nothing else on disk is named: workers only ever see artifact URIs."""
    if ref.source.startswith("dataset:"):
        with services.db.session() as s:
            ds = s.get(Dataset, ref.source.split(":", 1)[1])
        if ds is None:
            raise NotFound(f"unknown dataset {ref.source!r}; upload it first (`tension datasets add FILE`)")
        # one objective in the whole file: what the upload's objective option filled in, if it was needed
        single = Objective(ds.objectives[0]) if len(ds.objectives) == 1 else None
        return ref.model_copy(update={"source": ds.path, "objective": ref.objective or single})
    if ref.source.startswith("root:"):
        from app.datasets import service as datasets

        root, _, path = ref.source[5:].partition("/")
        ds = datasets.store_from_root(db=services.db, settings=services.settings, root=root, path=path,
                                      fmt=ref.format, objective=ref.objective)
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
        try:
            hub_dataset_id(ref.source[3:])
        except ValueError as exc:
            raise Invalid(f"dataset.source: {exc}") from exc
        return None, dataset_revision(ref.source)
    if ref.source != "bundled" and not ref.source.startswith("artifact:"):  # never a path, whatever was passed
        raise Invalid(f"dataset.source: unresolved source {ref.source[:200]!r}")
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
