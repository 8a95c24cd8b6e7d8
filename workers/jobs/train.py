"""Train one reward model (one base model, one regime, one seed) and store it as a checkpoint.

The checkpoint id is the job's result key, so an identical request is a cache hit. The checkpoint
directory appears atomically (written beside it, then renamed): a reader never sees half a model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from workers import CODE_VERSION
from workers.data.loaders import dataset_revision, load_dataset
from workers.progress import Progress
from workers.runner import checkpoint_dir
from workers.specs import DatasetRef, JobSpec, ResultManifest, ResultTable, TrainParams
from workers.training.presets import REGIME_OBJECTIVES, TrainSettings, resolve_settings

HISTORY_COLUMNS = ("checkpoint", "step", "epoch", "train_loss", "train_acc", "eval_loss", "eval_acc")


def training_dataset_ref(params: TrainParams, settings: TrainSettings) -> DatasetRef:
    """The data reference actually loaded: the train split unless one was named, only the regime's
    objectives, and the preset's per-objective cap unless the request set its own limit."""
    ref = params.dataset
    update: dict[str, Any] = {}
    if "split" not in ref.model_fields_set:
        update["split"] = "train"
    wanted = [o for o in ref.objectives if o in REGIME_OBJECTIVES[params.regime]]
    if not wanted:
        need = list(REGIME_OBJECTIVES[params.regime])
        raise ValueError(f"regime {params.regime!r} needs objectives {need}, "
                         f"but the dataset reference only allows {ref.objectives}")
    update["objectives"] = wanted
    if ref.limit is None and settings.max_pairs_per_objective is not None:
        update["limit"] = settings.max_pairs_per_objective
    return ref.model_copy(update=update)


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished directory into place; an older copy (same key, same inputs) is swapped out first."""
    if final.exists():
        trash = final.with_name(f".{final.name}.old-{os.getpid()}-{time.time_ns()}")
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint_atomic(loaded: Any, final: Path, meta: dict[str, Any]) -> None:
    """Write the model, tokenizer and meta.json to a temp dir beside `final`, then rename it into place."""
    from workers.models.registry import save_checkpoint

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp's 0700 would follow the rename and hide the checkpoint from other users
    try:
        save_checkpoint(loaded, tmp, meta)  # weights, tokenizer and meta.json
        _replace_dir(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def run(spec: JobSpec, progress: Progress) -> ResultManifest:
    from workers.models.registry import load_reward_model
    from workers.training.trainer import train_reward_model

    started = time.time()
    params = TrainParams.model_validate(spec.params)
    settings = resolve_settings(params)
    ref = training_dataset_ref(params, settings)
    progress.update(0.01, "loading data", force=True)
    pairs = load_dataset(ref)
    revision = dataset_revision(ref.source)
    progress.update(0.04, f"loading model {params.model}", force=True)
    loaded = load_reward_model(params.model, device=spec.device, seed=params.seed, reinit_head=True)
    final = checkpoint_dir(spec.artifact_root, spec.result_key)
    final.parent.mkdir(parents=True, exist_ok=True)
    result = train_reward_model(loaded, pairs, settings, regime=params.regime, seed=params.seed,
                                progress=progress.sub(0.05, 0.92), work_dir=spec.output_dir)

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
        "code_version": CODE_VERSION,
        "created": time.time(),
    }
    save_checkpoint_atomic(loaded, final, meta)

    rows = [{**r, "checkpoint": spec.result_key} for r in result.history]
    types = {"checkpoint": pa.string(), "step": pa.int64()}
    table = pa.table({c: pa.array([r[c] for r in rows], types.get(c, pa.float64())) for c in HISTORY_COLUMNS})
    out = Path(spec.output_dir) / "training_history.parquet"
    pq.write_table(table, out)
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
    history_table = ResultTable(table="training_history", path=out.name, rows=len(rows))
    return ResultManifest(job_id=spec.job_id, kind=spec.kind, result_key=spec.result_key,
                          checkpoint=spec.result_key, tables=[history_table], summary=summary)
