"""First-order ablation estimates vs exact live toggles on trained minilm-l6 RMs.

For each checkpoint (from a data directory's `meta.db`, or `--checkpoint-dir`), on 64 probe pairs per
objective of the bundled test split: build `FirstOrderEstimate` from a `LiveAblationSession`, then for neuron
sets of several kinds (random all-layer sets at 1/5/10/20%, a 10% set in each single layer, the top-|S1|
neurons) compare the estimate with the exact zero-ablation answer per objective: Spearman rank correlation
and mean absolute error of Δ mean margin and Δ accuracy (overall and by kind), per-pair agreement, build
time, estimate latency and exact latency. Wall-clock numbers on a shared CPU: the load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import write

MODEL = "minilm-l6"
PER_OBJECTIVE = 64
MAX_LENGTH = 128
BATCH_SIZE = 32
FRACTIONS = (0.01, 0.05, 0.10, 0.20)
SINGLE_LAYER_FRACTION = 0.10
TOP_FRACTIONS = (0.001, 0.01, 0.05)
ESTIMATE_REPEATS = 5


def find_checkpoints(data_dir: Path, base_model: str = MODEL) -> list[tuple[str, Path]]:
    """(label, directory) of every `base_model` checkpoint in the data directory (read-only)."""
    db = data_dir / "meta.db"
    if not db.is_file():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT id, regime, path FROM checkpoints WHERE base_model = ? ORDER BY created_at",
                           (base_model,)).fetchall()
    finally:
        con.close()
    out = []
    for ck_id, regime, path in rows:
        path = str(path)
        where = data_dir / "artifacts" / path.removeprefix("artifact:") if path.startswith("artifact:") \
            else Path(path)
        if where.is_dir():
            out.append((f"{regime}:{ck_id[:8]}", where))
    return out


def _sets(shape: tuple[int, int], top_order: np.ndarray, per_kind: int, seed: int) -> list[tuple[str, np.ndarray]]:
    """(kind, mask) pairs: random all-layer sets per fraction, one set per layer, top-|S1| sets."""
    rng = np.random.default_rng(seed)
    n_layers, n_neurons = shape
    total = n_layers * n_neurons
    out: list[tuple[str, np.ndarray]] = []
    for frac in FRACTIONS:
        for _ in range(per_kind):
            mask = np.zeros(total, dtype=bool)
            mask[rng.choice(total, size=max(1, int(round(frac * total))), replace=False)] = True
            out.append((f"random_{int(frac * 100)}pct", mask.reshape(shape)))
    for layer in range(n_layers):
        mask = np.zeros(shape, dtype=bool)
        mask[layer, rng.choice(n_neurons, size=int(round(SINGLE_LAYER_FRACTION * n_neurons)), replace=False)] = True
        out.append((f"layer_{layer}", mask))
    for frac in TOP_FRACTIONS:
        mask = np.zeros(total, dtype=bool)
        mask[top_order[:max(1, int(round(frac * total)))]] = True
        out.append(("top_s1", mask.reshape(shape)))
    return out


def _spearman(x: list[float], y: list[float]) -> float | None:
    from scipy.stats import spearmanr

    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    return float(spearmanr(x, y)[0])


def _agreement(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman and MAE of Δ mean margin and Δ accuracy over rows (one per set and objective)."""
    em, xm = [r["est_margin"] for r in rows], [r["exact_margin"] for r in rows]
    ea, xa = [r["est_accuracy"] for r in rows], [r["exact_accuracy"] for r in rows]
    return {"n": len(rows), "spearman_margin": _spearman(em, xm),
            "mae_margin": float(np.mean(np.abs(np.subtract(em, xm)))),
            "mean_abs_exact_margin": float(np.mean(np.abs(xm))),
            "spearman_accuracy": _spearman(ea, xa), "mae_accuracy": float(np.mean(np.abs(np.subtract(ea, xa)))),
            "median_pair_pearson": float(np.median([r["pair_pearson"] for r in rows]))}


def run_one(label: str, ck_dir: Path, pairs_by_objective: dict[str, list[Any]], per_kind: int,
            seed: int) -> dict[str, Any]:
    from workers.ablation.estimate import FirstOrderEstimate
    from workers.ablation.live import LiveAblationSession
    from workers.models.registry import load_reward_model, read_checkpoint_meta

    meta = read_checkpoint_meta(ck_dir)
    loaded = load_reward_model(str(meta.get("base_model", MODEL)), checkpoint_dir=str(ck_dir), device="cpu")
    session = LiveAblationSession(loaded, pairs_by_objective, max_length=MAX_LENGTH, batch_size=BATCH_SIZE)
    est = FirstOrderEstimate.from_session(session)
    print(f"{label}: session {session.setup_s:.1f} s, estimator {est.build_s:.1f} s ({est.nbytes / 2**20:.1f} MB)",
          flush=True)
    shape = (est.n_layers, est.n_neurons)
    top_order = np.argsort(-np.abs(est.s1.sum(axis=0)).ravel(), kind="stable")
    s1_16 = est.s1.astype(np.float16).astype(np.float64)  # what float16 storage would answer (zero mode)
    rows: list[dict[str, Any]] = []
    est_times, exact_times, f16_err = [], [], []
    for kind, mask in _sets(shape, top_order, per_kind, seed):
        times = []
        for _ in range(ESTIMATE_REPEATS):
            t = time.perf_counter()
            guess = est.estimate(mask)
            times.append(time.perf_counter() - t)
        est_times.append(float(np.median(times)))
        t = time.perf_counter()
        answer = session.toggle(mask)
        exact_times.append(time.perf_counter() - t)
        rewards = session.rewards(mask)  # the answer cache: the same ablation's per-text rewards
        exact_pairs = (rewards[0::2] - rewards[1::2]) - est.margins
        d32 = est.delta_margins(mask)
        d16 = -s1_16[:, mask].sum(axis=1)
        f16_err.append(float(np.abs(d16 - d32).max() / max(np.abs(d32).max(), 1e-12)))
        offset = 0
        for o in est.objectives:
            g, a = guess[o], answer["objectives"][o]
            n = g["n_pairs"]
            x = exact_pairs[offset:offset + n]
            offset += n
            pearson = float(np.corrcoef(g["delta_margins"], x)[0, 1]) if np.ptp(x) > 0 else float("nan")
            rows.append({"kind": kind, "objective": o, "n_neurons": int(mask.sum()),
                         "est_margin": g["delta_margin"], "exact_margin": a["delta"]["margin"],
                         "est_accuracy": g["delta_accuracy"], "exact_accuracy": a["delta"]["accuracy"],
                         "pair_pearson": pearson})
        print(f"  {kind:>14} n={int(mask.sum()):5d} est {est_times[-1] * 1000:6.2f} ms, "
              f"exact {exact_times[-1]:6.2f} s; "
              + ", ".join(f"{r['objective']} Δm est {r['est_margin']:+.4f} exact {r['exact_margin']:+.4f}"
                          for r in rows[-len(est.objectives):]), flush=True)
    kinds = sorted({r["kind"] for r in rows})
    groups = {"random": [r for r in rows if r["kind"].startswith("random")],
              "single_layer": [r for r in rows if r["kind"].startswith("layer_")],
              "top_s1": [r for r in rows if r["kind"] == "top_s1"]}
    return {"label": label, "checkpoint_dir": str(ck_dir), "session_setup_s": session.setup_s,
            "estimator": est.info(), "build_s": est.build_s,
            "estimate_latency_ms": {"median": float(np.median(est_times)) * 1000,
                                    "max": float(np.max(est_times)) * 1000},
            "exact_latency_s": {"median": float(np.median(exact_times)), "max": float(np.max(exact_times))},
            "float16_storage_max_rel_error": float(np.max(f16_err)),
            "overall": _agreement(rows),
            "by_group": {k: _agreement(v) for k, v in groups.items() if v},
            "by_kind": {k: _agreement([r for r in rows if r["kind"] == k]) for k in kinds},
            "by_objective": {o: _agreement([r for r in rows if r["objective"] == o]) for o in est.objectives},
            "rows": rows}


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "n/a" if x is None else format(x, spec)


def summary(payload: dict[str, Any]) -> str:
    lines = ["# First-order ablation estimates vs exact live toggles", "",
             f"{payload['model']}, {payload['per_objective']} probe pairs per objective, max length "
             f"{payload['max_length']}, zero ablation; load average {payload['loadavg_start']} → "
             f"{payload['loadavg_end']}.", ""]
    for r in payload["rms"]:
        o = r["overall"]
        lines += [f"## {r['label']}", "",
                  f"estimator build {r['build_s']:.1f} s ({r['estimator']['mb']:.1f} MB), estimate latency median "
                  f"{r['estimate_latency_ms']['median']:.2f} ms, exact toggle median "
                  f"{r['exact_latency_s']['median']:.2f} s; "
                  f"float16 storage max relative error {r['float16_storage_max_rel_error']:.1e}.", "",
                  "| sets | n | Spearman Δmargin | MAE Δmargin | mean abs exact Δmargin | Spearman Δacc | MAE Δacc "
                  "| median per-pair r |",
                  "|---|---|---|---|---|---|---|---|"]
        kinds = [(k, a) for k, a in r["by_kind"].items() if k not in r["by_group"]]
        for name, a in [("all", o), *r["by_group"].items(), *kinds]:
            lines.append(f"| {name} | {a['n']} | {_fmt(a['spearman_margin'])} | {a['mae_margin']:.4f} | "
                         f"{a['mean_abs_exact_margin']:.4f} | {_fmt(a['spearman_accuracy'])} | "
                         f"{a['mae_accuracy']:.4f} | {a['median_pair_pearson']:.3f} |")
        lines.append("")
    return "\n".join(lines) + "\n"


def run(data_dir: Path, checkpoint_dirs: list[Path], per_kind: int = 5, max_rms: int | None = None,
        per_objective: int = PER_OBJECTIVE, seed: int = 0) -> dict[str, Any]:
    from workers.contract.live import default_probe
    from workers.data.loaders import load_dataset

    load_start = os.getloadavg()
    found = [(d.name, d) for d in checkpoint_dirs] or find_checkpoints(data_dir)
    if not found:
        raise SystemExit(f"no {MODEL} checkpoints in {data_dir} (or pass --checkpoint-dir)")
    found = found[:max_rms] if max_rms else found
    by_objective: dict[str, list[Any]] = {}
    for p in load_dataset(default_probe(per_objective)):
        by_objective.setdefault(p.objective, []).append(p)
    rms = [run_one(label, ck_dir, by_objective, per_kind, seed) for label, ck_dir in found]
    return {"model": MODEL, "per_objective": per_objective, "max_length": MAX_LENGTH, "per_kind": per_kind,
            "data_dir": str(data_dir), "rms": rms, "loadavg_start": load_start, "loadavg_end": os.getloadavg()}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", type=Path, default=Path("var"), help="data directory holding meta.db")
    ap.add_argument("--checkpoint-dir", type=Path, action="append", default=[],
                    help="a checkpoint directory (repeatable); overrides --data-dir")
    ap.add_argument("--per-kind", type=int, default=5, help="random sets per all-layer fraction")
    ap.add_argument("--max-rms", type=int, default=None, help="use at most this many checkpoints")
    ap.add_argument("--per-objective", type=int, default=PER_OBJECTIVE, help="probe pairs per objective")
    ap.add_argument("--name", default="estimate", help="results file name under bench/results")
    args = ap.parse_args(argv if argv is not None else [])
    payload = run(args.data_dir, args.checkpoint_dir, args.per_kind, args.max_rms, args.per_objective)
    write(args.name, payload, summary(payload))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
