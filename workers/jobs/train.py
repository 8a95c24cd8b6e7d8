"""Train one reward model (one base model, one regime, one seed) and store it as a checkpoint.

The checkpoint id is the job's result key, so an identical request is a cache hit. The checkpoint
directory appears atomically (written beside it, then renamed): a reader never sees half a model.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from workers.contract.artifacts import ResultManifest, checkpoint_key
from workers.contract.jobs import DatasetRef, TrainParams
from workers.contract.results import TrainingHistoryRow
from workers.contract.version import code_version
from workers.contract.vocab import REGIME_OBJECTIVES, Split
from workers.data.loaders import dataset_revision
from workers.jobs.io import JobIO
from workers.progress import Progress
from workers.storage import ArtifactStore
from workers.training.presets import TrainSettings, resolve_settings


def training_dataset_ref(params: TrainParams, settings: TrainSettings) -> DatasetRef:
    """The data reference actually loaded: the train split unless one was named, only the regime's
    objectives, and the preset's per-objective cap unless the request set its own limit."""
    ref = params.dataset
    update: dict[str, Any] = {}
    if "split" not in ref.model_fields_set:
        update["split"] = Split.train
    wanted = [o for o in ref.objectives if o in REGIME_OBJECTIVES[params.regime]]
    if not wanted:
        need = list(REGIME_OBJECTIVES[params.regime])
        raise ValueError(f"regime {params.regime!r} needs objectives {need}, "
                         f"but the dataset reference only allows {ref.objectives}")
    update["objectives"] = wanted
    if ref.limit is None and settings.max_pairs_per_objective is not None:
        update["limit"] = settings.max_pairs_per_objective
    return ref.model_copy(update=update)


def save_checkpoint_atomic(loaded: Any, store: ArtifactStore, checkpoint: str, meta: dict[str, Any]) -> None:
    """Write the model, tokenizer and meta.json to a staging directory, then publish it under the
    checkpoint's key in one move: a reader never sees half a model, and an existing one (same key,
    same inputs) is kept."""
    from workers.models.registry import save_checkpoint

    key = checkpoint_key(checkpoint)
    staged = store.staging_dir(key)
    try:
        save_checkpoint(loaded, staged, meta)  # weights, tokenizer and meta.json
        store.publish_staged(staged, key)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def run(job: JobIO, progress: Progress) -> ResultManifest:
    from workers.models.registry import load_reward_model
    from workers.training.trainer import train_reward_model

    started = time.time()
    spec = job.spec
    params = spec.typed(TrainParams)
    settings = resolve_settings(params)
    ref = training_dataset_ref(params, settings)
    progress.update(0.01, "loading data", force=True)
    pairs = job.pairs(ref)
    revision = dataset_revision(ref.source, store=job.store)
    progress.update(0.04, f"loading model {params.model}", force=True)
    loaded = load_reward_model(params.model, device=spec.device, seed=params.seed, reinit_head=True)
    result = train_reward_model(loaded, pairs, settings, regime=params.regime, seed=params.seed,
                                progress=progress.sub(0.05, 0.92))

    progress.update(0.93, "saving checkpoint", force=True)
    metrics = result.metrics
    meta = {
        "checkpoint": spec.result_key,
        "base_model": params.model,
        "regime": params.regime,
        "seed": params.seed,
        "preset": settings.preset,
        "settings": settings.as_dict(),
        "dataset": ref.model_dump(),
        "data_revision": revision,
        "n_train": result.n_train,
        "n_eval": result.n_eval,
        "metrics": metrics,
        "code_version": code_version(),
        "created": time.time(),
    }
    save_checkpoint_atomic(loaded, job.store, spec.result_key, meta)

    cols = TrainingHistoryRow.columns()
    rows = [{c: ({**r, "checkpoint": spec.result_key}).get(c) for c in cols} for r in result.history]
    summary = {
        "regime": params.regime,
        "model": params.model,
        "seed": params.seed,
        "preset": settings.preset,
        "n_pairs_loaded": len(pairs),
        "n_train": result.n_train,
        "n_eval": result.n_eval,
        "final_eval_loss": metrics["final_eval_loss"],
        "final_eval_acc": metrics["final_eval_acc"],
        "final_train_loss": metrics["final_train_loss"],
        "final_train_acc": metrics["final_train_acc"],
        "best_step": metrics["best_step"],
        "steps": metrics["steps"],
        "train_wall_s": metrics["wall_s"],
        "wall_s": time.time() - started,
        "data_revision": revision,
        "settings": settings.as_dict(),
    }
    return job.manifest([job.write_table(TrainingHistoryRow, rows)], summary, checkpoint=spec.result_key)
