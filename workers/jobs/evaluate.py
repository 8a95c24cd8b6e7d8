"""Evaluation job: score the chosen subsets with each checkpoint, write every metric as a table."""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.contract.artifacts import ResultManifest, ResultTable
from workers.contract.jobs import EvaluateParams
from workers.contract.results import (
    EvalItemRow,
    EvalReliabilityRow,
    EvalSubsetRow,
    EvalTransferRow,
    ResultRow,
    RewardRow,
)
from workers.data.schema import SUBSET_TYPE
from workers.evaluation.runner import EvalTables, ModelScores, evaluate_model, transfer_tables, unique_texts
from workers.jobs.io import JobIO
from workers.progress import Progress


def subset_types(pairs: list[Any]) -> dict[str, str]:
    """Bundled subsets carry their type; a user's subset takes the objective of its pairs."""
    types = dict(SUBSET_TYPE)
    for p in pairs:
        types.setdefault(p.subset, p.objective)
    return types


def run(job: JobIO, progress: Progress) -> ResultManifest:
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts

    params = job.spec.typed(EvaluateParams)
    pairs = job.pairs(params.dataset)
    texts, ci, ri = unique_texts(pairs)
    types = subset_types(pairs)
    results: list[EvalTables] = []
    reward_rows: list[dict[str, Any]] = []
    n = len(params.checkpoints)
    for k, ck in enumerate(params.checkpoints):
        meta = job.checkpoint_meta(ck)
        progress.update(k / n, f"loading {ck[:10]} ({meta['regime']})", force=True)
        loaded = load_reward_model(meta["base_model"], checkpoint_dir=str(job.checkpoint_dir(ck)),
                                   device=job.spec.device)
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
                                    "n_tokens": None, "reward": float(val)})
        del loaded
    transfer = transfer_tables(results, types)
    tables: list[tuple[type[ResultRow], list[dict[str, Any]]]] = [
        (RewardRow, reward_rows),
        (EvalItemRow, [row for t in results for row in t.items]),
        (EvalSubsetRow, [row for t in results for row in t.subsets]),
        (EvalReliabilityRow, [row for t in results for row in t.reliability]),
        (EvalTransferRow, transfer),
    ]
    manifest_tables: list[ResultTable] = [job.write_table(model, rows) for model, rows in tables if rows]
    summary = {
        "checkpoints": params.checkpoints,
        "accuracy": {r["checkpoint"]: r["accuracy"] for t in results for r in t.subsets if r["subset"] == "all"},
        "n_pairs": len(pairs),
        "mean_transferability": float(np.nanmean([r["transferability"] for r in transfer
                                                  if r["subset"] == "all"])) if transfer else None,
    }
    return job.manifest(manifest_tables, summary)
