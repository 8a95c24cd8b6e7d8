"""Score a dataset with a model: a reward for every chosen and every rejected text."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from workers.data.loaders import load_dataset
from workers.data.text import pair_texts
from workers.progress import Progress
from workers.specs import JobSpec, ResultManifest, ResultTable, ScoreParams, checkpoint_dir


def run(spec: JobSpec, progress: Progress) -> ResultManifest:
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts

    params = ScoreParams.model_validate(spec.params)
    progress.update(0.02, "loading data", force=True)
    pairs = load_dataset(params.dataset)
    progress.update(0.05, f"loading model {params.model}", force=True)
    ckpt = str(checkpoint_dir(spec.artifact_root, params.checkpoint)) if params.checkpoint else None
    loaded = load_reward_model(params.model, checkpoint_dir=ckpt, device=spec.device, seed=0)
    texts: list[str] = []
    for p in pairs:
        c, r = pair_texts(p)
        texts += [c, r]
    progress.update(0.1, f"scoring {len(texts)} texts", force=True)
    rewards = score_texts(loaded, texts, max_length=params.max_length, batch_size=params.batch_size,
                          progress=progress.sub(0.1, 0.95))
    n_tokens = [len(ids) for ids in loaded.tokenizer(texts, truncation=True, max_length=params.max_length)["input_ids"]]
    n = len(pairs)
    table = pa.table({
        "model": [params.model] * 2 * n,
        "checkpoint": [params.checkpoint] * 2 * n,
        "pair_id": [p.pair_id for p in pairs for _ in (0, 1)],
        "item_id": [p.item_id for p in pairs for _ in (0, 1)],
        "objective": [p.objective for p in pairs for _ in (0, 1)],
        "subset": [p.subset for p in pairs for _ in (0, 1)],
        "split": [p.split for p in pairs for _ in (0, 1)],
        "side": ["chosen", "rejected"] * n,
        "n_chars": [len(t) for t in texts],
        "n_tokens": n_tokens,
        "reward": np.asarray(rewards, dtype=np.float64),
    })
    out = Path(spec.output_dir) / "rewards.parquet"
    pq.write_table(table, out)
    chosen, rejected = rewards[0::2], rewards[1::2]
    summary = {
        "n_pairs": n,
        "pair_accuracy": float(np.mean(chosen > rejected)) if n else None,
        "mean_reward_chosen": float(np.mean(chosen)) if n else None,
        "mean_reward_rejected": float(np.mean(rejected)) if n else None,
    }
    return ResultManifest(job_id=spec.job_id, kind=spec.kind, result_key=spec.result_key,
                          tables=[ResultTable(table="rewards", path=out.name, rows=2 * n)], summary=summary)
