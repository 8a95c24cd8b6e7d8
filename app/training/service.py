"""Training jobs: reject bad submissions up front; record the checkpoint a finished job produced."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.checks import check_model, load_checked_dataset, resolve_dataset
from app.core.db import Checkpoint, Job
from app.core.errors import Invalid
from workers.contract.artifacts import ResultManifest, artifact_uri, checkpoint_key
from workers.contract.jobs import TrainParams, canonical_json
from workers.contract.vocab import REGIME_OBJECTIVES
from workers.training.presets import resolve_settings

if TYPE_CHECKING:
    from app.core.services import Services


def prepare_train(services: Services, params: TrainParams) -> str:
    params.model = check_model(params.model, roots=services.settings.data_roots)
    params.dataset = resolve_dataset(services, params.dataset)
    needed = set(REGIME_OBJECTIVES[params.regime])
    missing_asked = needed - set(params.dataset.objectives)
    if missing_asked:
        raise Invalid(f"regime {params.regime!r} needs {sorted(needed)} pairs but the dataset filter keeps only "
                       f"{sorted(params.dataset.objectives)}")
    try:
        settings = resolve_settings(params)
    except ValueError as exc:
        raise Invalid(f"training settings: {exc}") from exc
    pairs, revision = load_checked_dataset(services, params.dataset)
    have = {p.objective for p in pairs} if pairs is not None else needed
    if not needed <= have:
        raise Invalid(f"dataset {params.dataset.source!r} (split {params.dataset.split}) has no "
                       f"{', '.join(sorted(needed - have))} pairs; regime {params.regime!r} needs them")
    # The resolved preset values are part of what produces a checkpoint: a changed preset is a new key.
    return f"{revision}:{canonical_json(settings.as_dict())}"


def record_checkpoint(services: Services, job: Job, manifest: ResultManifest) -> None:
    if not manifest.checkpoint:
        return
    params = TrainParams.model_validate(job.params)
    with services.db.session() as s:
        if s.get(Checkpoint, manifest.checkpoint) is None:
            s.add(Checkpoint(id=manifest.checkpoint, base_model=params.model, regime=params.regime, seed=params.seed,
                             preset=params.preset, job_id=job.id, meta=manifest.summary,
                             path=artifact_uri(checkpoint_key(manifest.checkpoint))))
