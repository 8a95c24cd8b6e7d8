"""Live ablation: toggle latency of `LiveAblationSession` on minilm-l6, cached prefix vs full recompute.

64 pairs per objective of the bundled test data (256 texts, max length 128). Each timed toggle uses a
distinct random 10% set of one layer (so the answer cache never hits): a late set in the last layer (5) and
an early set in layer 0, each through the cached-prefix path and through a full forward with hooks.
Target: median <= 1 s for the late set on 2 CPU cores. The load average is recorded because the numbers
are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np

from bench.common import write

MODEL = "minilm-l6"
PER_OBJECTIVE = 64
MAX_LENGTH = 128
BATCH_SIZE = 32
FRACTION = 0.10
TARGET_S = 1.0


def _stats(times: list[float]) -> dict[str, Any]:
    arr = np.asarray(times)
    return {"n": int(arr.size), "median_s": float(np.median(arr)), "p95_s": float(np.percentile(arr, 95)),
            "min_s": float(arr.min()), "max_s": float(arr.max()), "all_s": [round(float(t), 4) for t in arr]}


def _paired(full: list[float], fast: list[float]) -> float:
    """Median of full/fast over rounds run back to back (robust to load drifting during the run)."""
    n = min(len(full), len(fast))
    return float(np.median(np.asarray(full[:n]) / np.asarray(fast[:n])))


def _sets(layer: int, n: int, seed0: int, shape: tuple[int, int]) -> list[np.ndarray]:
    k = int(round(FRACTION * shape[1]))
    out = []
    for s in range(n):
        mask = np.zeros(shape, dtype=bool)
        mask[layer, np.random.default_rng(seed0 + s).choice(shape[1], size=k, replace=False)] = True
        out.append(mask)
    return out


def run(toggles: int = 10, full_toggles: int | None = None) -> dict[str, Any]:
    import torch

    from workers.ablation.live import LiveAblationSession
    from workers.contract.jobs import DatasetRef
    from workers.data.loaders import load_dataset
    from workers.models.registry import load_reward_model

    load_start = os.getloadavg()
    loaded = load_reward_model(MODEL, device="cpu")
    pairs = load_dataset(DatasetRef(source="bundled", split="test", limit=PER_OBJECTIVE))
    t0 = time.perf_counter()
    session = LiveAblationSession.from_pairs(loaded, pairs, per_objective=PER_OBJECTIVE,
                                             max_length=MAX_LENGTH, batch_size=BATCH_SIZE)
    setup_s = time.perf_counter() - t0
    shape = (session.n_layers, session.n_neurons)
    late, early = session.n_layers - 1, 0
    n_full = toggles if full_toggles is None else full_toggles
    configs = {"late_cached_prefix": (late, "fast", toggles, 100),
               "early_cached_prefix": (early, "fast", toggles, 200),
               "late_full_recompute": (late, "full", n_full, 300),
               "early_full_recompute": (early, "full", n_full, 400)}
    sets = {label: _sets(layer, n, seed0, shape) for label, (layer, _p, n, seed0) in configs.items()}
    times: dict[str, list[float]] = {label: [] for label in configs}
    with torch.inference_mode():
        session.toggle(_sets(late, 1, 10_000, shape)[0])  # warm-up (first-call overheads), not timed
        for i in range(max(toggles, n_full)):  # interleaved, so every configuration sees the same load
            for label, (_layer, path, n, _seed0) in configs.items():
                if i >= n:
                    continue
                s = time.perf_counter()
                ans = session.toggle(sets[label][i], path=path)  # type: ignore[arg-type]
                times[label].append(time.perf_counter() - s)
                assert ans["timing"]["path"] in ("cached_prefix", "full")
            print(f"round {i}: " + ", ".join(f"{k} {v[-1]:.3f} s" for k, v in times.items() if len(v) > i),
                  flush=True)
        results = {label: {"layer": configs[label][0], "path": configs[label][1], **_stats(times[label])}
                   for label in configs}
        batch = _sets(late, toggles, 500, shape)
        s = time.perf_counter()
        session.toggle_many(batch)
        many_s = time.perf_counter() - s
        s = time.perf_counter()
        hit = session.toggle(batch[0])
        hit_s = time.perf_counter() - s
        assert hit["timing"]["path"] == "answer_cache"
    late_med = results["late_cached_prefix"]["median_s"]
    return {
        "model": MODEL, "per_objective": PER_OBJECTIVE, "max_length": MAX_LENGTH, "batch_size": BATCH_SIZE,
        "set_size": int(round(FRACTION * shape[1])), "session": session.info(), "setup_s": setup_s,
        "results": results,
        "late_toggle_many": {"n_sets": len(batch), "total_s": many_s, "per_set_s": many_s / len(batch)},
        "answer_cache_hit_s": hit_s,
        "speedup_late": results["late_full_recompute"]["median_s"] / late_med,
        "speedup_early": results["early_full_recompute"]["median_s"]
        / results["early_cached_prefix"]["median_s"],
        "paired_speedup_early_median": _paired(times["early_full_recompute"], times["early_cached_prefix"]),
        "paired_speedup_late_median": _paired(times["late_full_recompute"], times["late_cached_prefix"]),
        "target_late_median_s": TARGET_S, "target_ok": late_med <= TARGET_S,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--toggles", type=int, default=10, help="timed toggles per cached-prefix configuration")
    ap.add_argument("--full-toggles", type=int, default=None, help="timed toggles per full-recompute one")
    args = ap.parse_args(argv if argv is not None else [])
    write("live_ablation", run(args.toggles, args.full_toggles))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
