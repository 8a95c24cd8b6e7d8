"""Score a dataset with a model: a reward for every chosen and every rejected text."""

from __future__ import annotations

import numpy as np

from workers.contract.artifacts import ResultManifest
from workers.contract.jobs import ScoreParams
from workers.contract.results import RewardRow
from workers.contract.vocab import Side
from workers.data.text import pair_texts
from workers.jobs.io import JobIO
from workers.progress import Progress


def run(job: JobIO, progress: Progress) -> ResultManifest:
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts

    params = job.spec.typed(ScoreParams)
    progress.update(0.02, "loading data", force=True)
    pairs = job.pairs(params.dataset)
    progress.update(0.05, f"loading model {params.model}", force=True)
    ckpt = str(job.checkpoint_dir(params.checkpoint)) if params.checkpoint else None
    loaded = load_reward_model(params.model, checkpoint_dir=ckpt, device=job.spec.device, seed=0)
    texts: list[str] = []
    for p in pairs:
        c, r = pair_texts(p)
        texts += [c, r]
    progress.update(0.1, f"scoring {len(texts)} texts", force=True)
    rewards = score_texts(loaded, texts, max_length=params.max_length, batch_size=params.batch_size,
                          progress=progress.sub(0.1, 0.95))
    n_tokens = [len(ids) for ids in loaded.tokenizer(texts, truncation=True, max_length=params.max_length)["input_ids"]]
    n = len(pairs)
    rows = [{"model": params.model, "checkpoint": params.checkpoint, "pair_id": p.pair_id, "item_id": p.item_id,
             "objective": p.objective, "subset": p.subset, "split": p.split, "side": str(side),
             "n_chars": len(texts[2 * i + j]), "n_tokens": n_tokens[2 * i + j], "reward": float(rewards[2 * i + j])}
            for i, p in enumerate(pairs) for j, side in enumerate((Side.chosen, Side.rejected))]
    table = job.write_table(RewardRow, rows)
    chosen, rejected = rewards[0::2], rewards[1::2]
    summary = {
        "n_pairs": n,
        "pair_accuracy": float(np.mean(chosen > rejected)) if n else None,
        "mean_reward_chosen": float(np.mean(chosen)) if n else None,
        "mean_reward_rejected": float(np.mean(rejected)) if n else None,
    }
    return job.manifest([table], summary)
