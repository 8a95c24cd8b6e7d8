"""Hand-made lab rows ingested through the real store: six checkpoints (three regimes x seeds 0 and 1) of one
base model, their training curves, one full evaluation and a newer one of a single checkpoint. Shared by the
API tests and the browser tests."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from app.core.db import Checkpoint, Run
from workers.contract.jobs import ResultManifest, ResultTable

BASE = "org/tiny-model"  # a Hugging Face-style id: the '/' must survive the path parameter
REGIMES = ("helpful", "harmless", "mixed")
EVIL = "user/</script><script>alert(1)</script>"
SUBSETS = {"rm-bench/chat": "helpful", "rm-bench/code": "helpful", "hh-rlhf/harmless-base": "harmless",
           EVIL: "harmless"}
N_ITEMS = 4


def correct(regime: str, seed: int, subset: str, i: int) -> bool:
    """A fixed, regime-dependent verdict pattern: helpful RMs win helpful subsets and so on."""
    kind = SUBSETS[subset]
    base = {"helpful": 3 if kind == "helpful" else 1, "harmless": 1 if kind == "helpful" else 3,
            "mixed": 2}[regime]
    return i < base + (seed if i == base else 0)


def ck_id(regime: str, seed: int) -> str:
    return f"ck-{regime}-{seed}"


def ingest(services: Any, out: Path, key: str, kind: str, tables: dict[str, list[dict[str, Any]]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    parts = []
    for name, rows in tables.items():
        pq.write_table(pa.Table.from_pylist(rows), out / f"{name}.parquet")
        parts.append(ResultTable(table=name, path=f"{name}.parquet", rows=len(rows)))
    manifest = ResultManifest(job_id=f"job-{key}", kind=kind, result_key=key, tables=parts)
    assert services.store.ingest(manifest, out)


def seed_store(services: Any, tmp_path: Path) -> dict[str, Any]:
    """Six checkpoints (3 regimes x seeds 0, 1) with training curves, one full evaluation, one partial one."""
    with services.db.session() as s:
        for r in REGIMES:
            for seed in (0, 1):
                s.add(Checkpoint(id=ck_id(r, seed), base_model=BASE, regime=r, seed=seed, preset="demo",
                                 path="/nowhere", job_id=None,
                                 meta={"final_eval_acc": 0.75, "final_eval_loss": 0.5, "steps": 4,
                                       "best_step": 4, "model": BASE}))
    for r in REGIMES:
        for seed in (0, 1):
            hist = [{"checkpoint": ck_id(r, seed), "step": st, "epoch": st / 4,
                     "train_loss": None if st == 0 else 0.7 - 0.05 * st,
                     "train_acc": None if st == 0 else 0.5 + 0.05 * st,
                     "eval_loss": 0.69 - 0.04 * st if st % 2 == 0 else None,
                     "eval_acc": 0.5 + 0.04 * st if st % 2 == 0 else None} for st in range(5)]
            ingest(services, tmp_path / f"train-{r}-{seed}", f"train-{r}-{seed}", "train",
                    {"training_history": hist})
    items, subsets, rel, transfer = [], [], [], []
    for r in REGIMES:
        for seed in (0, 1):
            ck = ck_id(r, seed)
            meta = {"checkpoint": ck, "base_model": BASE, "regime": r, "seed": seed}
            all_c: list[bool] = []
            for subset, kind in SUBSETS.items():
                c = [correct(r, seed, subset, i) for i in range(N_ITEMS)]
                all_c += c
                for i, ok in enumerate(c):
                    items.append({**meta, "item_id": f"{subset}#{i}", "objective": kind, "subset": subset,
                                  "correct": ok, "margin": 0.5 if ok else -0.5})
                acc = sum(c) / N_ITEMS
                subsets.append({**meta, "subset": subset, "subset_type": kind, "n_items": N_ITEMS,
                                "accuracy": acc, "ci_lo": max(0.0, acc - 0.25), "ci_hi": min(1.0, acc + 0.25),
                                "mean_margin_correct": 0.5 if any(c) else float("nan"),
                                "length_longer": 0.5, "length_shorter": 0.25,
                                "ece": 0.1, "brier": 0.2, "nll": 0.6})
            acc = sum(all_c) / len(all_c)
            subsets.append({**meta, "subset": "all", "subset_type": "all", "n_items": len(all_c),
                            "accuracy": acc, "ci_lo": acc - 0.1, "ci_hi": acc + 0.1,
                            "mean_margin_correct": 0.5, "length_longer": 0.5, "length_shorter": 0.25,
                            "ece": 0.05 + 0.01 * seed, "brier": 0.25, "nll": 0.69})
            for scope in ("all", "helpful"):
                for b in range(4):
                    empty = b == 3
                    rel.append({"checkpoint": ck, "scope": scope, "bin_lo": b / 4, "bin_hi": (b + 1) / 4,
                                "count": 0 if empty else 5, "mean_confidence": None if empty else b / 4 + 0.1,
                                "accuracy": None if empty else b / 4 + 0.05})
    for seed in (0, 1):
        for subset, kind in [*SUBSETS.items(), ("all", "all")]:
            transfer.append({"base_model": BASE, "seed": seed, "subset": subset, "subset_type": kind,
                             "n_items": N_ITEMS, "transferability": 0.5 + 0.1 * seed,
                             "jaccard_helpful": float("nan") if subset == EVIL else 0.4,
                             "jaccard_harmless": 0.3 + 0.2 * seed})
    key = "eval-full"
    ingest(services, tmp_path / key, key, "evaluate", {"eval_items": items, "eval_subsets": subsets,
                                                        "eval_reliability": rel, "eval_transfer": transfer})
    # A newer evaluation of one checkpoint only: the comparison must still pick the full one by default.
    one = ck_id("mixed", 0)
    ingest(services, tmp_path / "eval-one", "eval-one", "evaluate", {
        "eval_items": [x for x in items if x["checkpoint"] == one],
        "eval_subsets": [x for x in subsets if x["checkpoint"] == one],
        "eval_reliability": [x for x in rel if x["checkpoint"] == one]})
    t0 = datetime(2026, 1, 1)
    with services.db.session() as s:
        s.add(Run(result_key=key, kind="evaluate", job_id="job-eval-full", created_at=t0,
                  params={"checkpoints": [ck_id(r, sd) for r in REGIMES for sd in (0, 1)],
                          "dataset": {"source": "bundled", "split": "test", "limit": 4}},
                  summary={"n_pairs": 16, "mean_transferability": float("nan")}))
        s.add(Run(result_key="eval-one", kind="evaluate", job_id="job-eval-one",
                  created_at=t0 + timedelta(hours=1), summary={},
                  params={"checkpoints": [one], "dataset": {"source": "bundled", "split": "train"}}))
    return {"items": items, "subsets": subsets, "transfer": transfer}
