"""Reward training on this CPU: wall time and test accuracy per regime, fp32 against bf16 autocast.

`python -m bench train [--pairs 300,600] [--epochs 1] [--freeze 2] [--precision fp32,bf16]
[--regimes helpful,harmless,mixed] [--evals 2] [--step0]` trains MiniLM-L6 on the bundled train split
for every combination, scores the whole bundled test split, and writes bench/results/train.json and
train.md: wall time, steps, and the per-type (macro) accuracy of each RM beside the two length
baselines (longer wins, shorter wins) on the same subsets. This is how the `demo` preset was chosen.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from dataclasses import replace
from typing import Any

import numpy as np

from bench.common import write


def _type_accuracy(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per subset type: the mean over its subsets of the RM's accuracy and of each length baseline."""
    out: dict[str, dict[str, float]] = {}
    for t in ("helpful", "harmless"):
        sub = [r for r in rows if r["subset_type"] == t]
        out[t] = {k: float(np.mean([r[k] for r in sub])) for k in ("accuracy", "length_longer", "length_shorter")}
    return out


def main(argv: list[str] | None = None) -> None:
    import torch

    from workers.data.loaders import load_bundled
    from workers.evaluation.runner import ModelScores, evaluate_model, unique_texts
    from workers.jobs.evaluate import subset_types
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts
    from workers.training.presets import DEMO
    from workers.training.trainer import cpu_has_native_bf16, train_reward_model

    ap = argparse.ArgumentParser(prog="python -m bench train")
    ap.add_argument("--pairs", default="300", help="pairs per objective, comma-separated")
    ap.add_argument("--epochs", default="1", help="comma-separated")
    ap.add_argument("--freeze", default=str(DEMO.freeze_layers), help="frozen lower layers, comma-separated")
    ap.add_argument("--precision", default="fp32,bf16")
    ap.add_argument("--regimes", default="helpful,harmless,mixed")
    ap.add_argument("--evals", type=int, default=DEMO.evals_per_epoch, help="evaluations per epoch")
    ap.add_argument("--step0", action="store_true", help="also evaluate before the first step")
    ap.add_argument("--lr", type=float, default=DEMO.learning_rate)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="train")
    args = ap.parse_args(argv or [])

    pairs = load_bundled()
    train = [p for p in pairs if p.split == "train"]
    test = [p for p in pairs if p.split == "test"]
    types = subset_types(test)
    runs: list[dict[str, Any]] = []
    # Precision varies fastest: fp32 and bf16 runs of one configuration sit side by side in time, so a change in
    # machine load affects both alike.
    combos = itertools.product([int(x) for x in args.pairs.split(",")], [float(x) for x in args.epochs.split(",")],
                               [int(x) for x in args.freeze.split(",")], args.regimes.split(","),
                               args.precision.split(","))
    for n_pairs, epochs, freeze, regime, precision in combos:
        settings = replace(DEMO, epochs=epochs, freeze_layers=freeze, cpu_bf16=precision == "bf16",
                           max_pairs_per_objective=n_pairs, evals_per_epoch=args.evals,
                           eval_on_start=args.step0, learning_rate=args.lr)
        per_obj: dict[str, int] = {}
        subset = []
        for p in train:
            if per_obj.get(p.objective, 0) < n_pairs:
                per_obj[p.objective] = per_obj.get(p.objective, 0) + 1
                subset.append(p)
        started = time.time()
        loaded = load_reward_model("minilm-l6", device="cpu", seed=args.seed, reinit_head=True)
        result = train_reward_model(loaded, subset, settings, regime=regime, seed=args.seed)
        train_s = time.time() - started
        t0 = time.time()
        texts, ci, ri = unique_texts(test)
        r = score_texts(loaded, texts, max_length=settings.max_length, batch_size=32)
        rc, rr = r[ci], r[ri]
        score_s = time.time() - t0
        tables = evaluate_model(test, ModelScores("bench", "minilm-l6", regime, args.seed, rc, rr), types,
                                n_bootstrap=1)
        acc = _type_accuracy(tables.subsets)
        run = {"pairs_per_objective": n_pairs, "epochs": epochs, "freeze_layers": freeze, "precision": precision,
               "bf16_used": result.metrics["bf16"], "regime": regime, "steps": result.metrics["steps"],
               "train_wall_s": round(train_s, 1), "score_test_s": round(score_s, 1),
               "final_eval_acc": result.metrics["final_eval_acc"], "type_accuracy": acc}
        run["load_avg_1m"] = round(os.getloadavg()[0], 2)
        print(run, flush=True)
        runs.append(run)
    lines = ["| pairs/obj | epochs | frozen | precision | regime | steps | train s | helpful-type acc | "
             "harmless-type acc | longer wins (help/harm) | shorter wins (help/harm) | load 1 min |", "|" + "---|" * 12]
    for r in runs:
        a: dict[str, Any] = r["type_accuracy"]
        lines.append(f"| {r['pairs_per_objective']} | {r['epochs']:g} | {r['freeze_layers']} | {r['precision']}"
                     f"{'' if r['bf16_used'] == (r['precision'] == 'bf16') else ' (not native)'} | {r['regime']} | "
                     f"{r['steps']} | {r['train_wall_s']} | {a['helpful']['accuracy']:.3f} | "
                     f"{a['harmless']['accuracy']:.3f} | {a['helpful']['length_longer']:.3f}/"
                     f"{a['harmless']['length_longer']:.3f} | {a['helpful']['length_shorter']:.3f}/"
                     f"{a['harmless']['length_shorter']:.3f} | {r['load_avg_1m']} |")
    write(args.out, {"native_bf16": cpu_has_native_bf16(), "torch_threads": torch.get_num_threads(),
                     "test_items": len({p.item_id for p in test}), "runs": runs}, "\n".join(lines) + "\n")
