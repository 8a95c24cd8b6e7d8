"""Evaluation job: score the chosen subsets with each checkpoint, write every metric as a table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workers.data.loaders import load_dataset
from workers.data.schema import SUBSET_TYPE
from workers.evaluation.runner import EvalTables, ModelScores, evaluate_model, transfer_tables, unique_texts
from workers.progress import Progress
from workers.specs import EvaluateParams, JobSpec, ResultManifest, ResultTable, checkpoint_dir


def checkpoint_meta(artifact_root: str, checkpoint: str) -> dict[str, Any]:
    path = checkpoint_dir(artifact_root, checkpoint) / "meta.json"
    meta = json.loads(path.read_text()) if path.exists() else {}
    return {"base_model": meta.get("base_model") or meta.get("model") or "unknown",
            "regime": meta.get("regime", "unknown"), "seed": int(meta.get("seed", 0))}


def subset_types(pairs: list[Any]) -> dict[str, str]:
    """Bundled subsets carry their type; a user's subset takes the objective of its pairs."""
    types = dict(SUBSET_TYPE)
    for p in pairs:
        types.setdefault(p.subset, p.objective)
    return types


def run(spec: JobSpec, progress: Progress) -> ResultManifest:
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts

    params = EvaluateParams.model_validate(spec.params)
    pairs = load_dataset(params.dataset)
    texts, ci, ri = unique_texts(pairs)
    types = subset_types(pairs)
    results: list[EvalTables] = []
    reward_rows: list[dict[str, Any]] = []
    n = len(params.checkpoints)
    for k, ck in enumerate(params.checkpoints):
        meta = checkpoint_meta(spec.artifact_root, ck)
        progress.update(k / n, f"loading {ck[:10]} ({meta['regime']})", force=True)
        loaded = load_reward_model(meta["base_model"], checkpoint_dir=str(checkpoint_dir(spec.artifact_root, ck)),
                                   device=spec.device)
        r = score_texts(loaded, texts, max_length=params.max_length, batch_size=params.batch_size,
                        progress=progress.sub(k / n, (k + 0.9) / n))
        ms = ModelScores(ck, meta["base_model"], meta["regime"], meta["seed"], r[ci], r[ri])
        results.append(evaluate_model(pairs, ms, types, n_bootstrap=params.n_bootstrap))
        for j, p in enumerate(pairs):
            for side, val in (("chosen", ms.r_chosen[j]), ("rejected", ms.r_rejected[j])):
                reward_rows.append({"model": meta["base_model"], "checkpoint": ck, "pair_id": p.pair_id,
                                    "item_id": p.item_id, "objective": p.objective, "subset": p.subset,
                                    "split": p.split, "side": side,
                                    "n_chars": len(p.chosen if side == "chosen" else p.rejected),
                                    "reward": float(val)})
        del loaded
    out = Path(spec.output_dir)
    tables = {
        "rewards": reward_rows,
        "eval_items": [row for t in results for row in t.items],
        "eval_subsets": [row for t in results for row in t.subsets],
        "eval_reliability": [row for t in results for row in t.reliability],
        "eval_transfer": transfer_tables(results, types),
    }
    manifest_tables = []
    for name, rows in tables.items():
        if not rows:
            continue
        pq.write_table(pa.Table.from_pylist(rows), out / f"{name}.parquet")
        manifest_tables.append(ResultTable(table=name, path=f"{name}.parquet", rows=len(rows)))
    summary = {
        "checkpoints": params.checkpoints,
        "accuracy": {r["checkpoint"]: r["accuracy"] for t in results for r in t.subsets if r["subset"] == "all"},
        "n_pairs": len(pairs),
        "mean_transferability": float(np.nanmean([r["transferability"] for r in tables["eval_transfer"]
                                                  if r["subset"] == "all"])) if tables["eval_transfer"] else None,
    }
    return ResultManifest(job_id=spec.job_id, kind=spec.kind, result_key=spec.result_key,
                          tables=manifest_tables, summary=summary)
