"""Reward-model lab rows through the real ingest path: six checkpoints (three regimes x seeds 0 and 1) of one
base model with their training curves, one full evaluation and a newer one of a single checkpoint.

Shared by the API/page tests (`tests/app/evaluation/`) and the browser tests (`tests/e2e/test_lab_pages.py`).
The verdicts follow a fixed, regime-dependent pattern (helpful RMs win helpful subsets and so on), so tests
compute every expected number from the rows `seed_lab` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from app.core.services import Services
from tests.factories import add_checkpoint, ingest_result
from workers.contract.results import (
    EvalItemRow,
    EvalReliabilityRow,
    EvalSubsetRow,
    EvalTransferRow,
    TrainingHistoryRow,
)
from workers.contract.vocab import REGIMES, JobKind, Objective, Preset, Regime, Split

BASE = "org/tiny-model"  # a Hugging Face-style id: the '/' must survive the path parameter
EVIL = "user/</script><script>alert(1)</script>"
SUBSETS: dict[str, Objective] = {"rm-bench/chat": Objective.helpful, "rm-bench/code": Objective.helpful,
                                 "hh-rlhf/harmless-base": Objective.harmless, EVIL: Objective.harmless}
OVERALL = "all"
SEEDS = (0, 1)
N_ITEMS = 4
FULL, ONE = "eval-full", "eval-one"
META = {"final_eval_acc": 0.75, "final_eval_loss": 0.5, "steps": 4, "best_step": 4, "model": BASE}


def ck_id(regime: str, seed: int) -> str:
    return f"ck-{regime}-{seed}"


def correct(regime: Regime, seed: int, subset: str, i: int) -> bool:
    """A fixed, regime-dependent verdict pattern: helpful RMs win helpful subsets and so on."""
    own = SUBSETS[subset] == Objective.helpful
    base = {Regime.helpful: 3 if own else 1, Regime.harmless: 1 if own else 3, Regime.mixed: 2}[regime]
    return i < base + (seed if i == base else 0)


def history_rows(checkpoint: str) -> list[dict[str, Any]]:
    """Five steps; training metrics from step 1, eval metrics on even steps."""
    return [{"checkpoint": checkpoint, "step": st, "epoch": st / 4,
             "train_loss": None if st == 0 else 0.7 - 0.05 * st,
             "train_acc": None if st == 0 else 0.5 + 0.05 * st,
             "eval_loss": 0.69 - 0.04 * st if st % 2 == 0 else None,
             "eval_acc": 0.5 + 0.04 * st if st % 2 == 0 else None} for st in range(5)]


@dataclass
class LabRows:
    """What `seed_lab` stored, for tests to compute expected numbers from."""

    items: list[dict[str, Any]] = field(default_factory=list)
    subsets: list[dict[str, Any]] = field(default_factory=list)
    reliability: list[dict[str, Any]] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)

    def of(self, checkpoint: str) -> dict[type[Any], list[dict[str, Any]]]:
        return {EvalItemRow: [x for x in self.items if x["checkpoint"] == checkpoint],
                EvalSubsetRow: [x for x in self.subsets if x["checkpoint"] == checkpoint],
                EvalReliabilityRow: [x for x in self.reliability if x["checkpoint"] == checkpoint]}


def evaluation_rows(regime: Regime, seed: int, rows: LabRows) -> None:
    """One checkpoint's item verdicts, subset rows (plus the overall row) and reliability bins."""
    ck = ck_id(regime, seed)
    meta = {"checkpoint": ck, "base_model": BASE, "regime": regime, "seed": seed}
    all_c: list[bool] = []
    for subset, kind in SUBSETS.items():
        c = [correct(regime, seed, subset, i) for i in range(N_ITEMS)]
        all_c += c
        rows.items += [{**meta, "item_id": f"{subset}#{i}", "objective": kind, "subset": subset, "correct": ok,
                        "margin": 0.5 if ok else -0.5} for i, ok in enumerate(c)]
        acc = sum(c) / N_ITEMS
        rows.subsets.append({**meta, "subset": subset, "subset_type": kind, "n_items": N_ITEMS, "accuracy": acc,
                             "ci_lo": max(0.0, acc - 0.25), "ci_hi": min(1.0, acc + 0.25),
                             "mean_margin_correct": 0.5 if any(c) else float("nan"),
                             "length_longer": 0.5, "length_shorter": 0.25, "ece": 0.1, "brier": 0.2, "nll": 0.6})
    acc = sum(all_c) / len(all_c)
    rows.subsets.append({**meta, "subset": OVERALL, "subset_type": OVERALL, "n_items": len(all_c), "accuracy": acc,
                         "ci_lo": acc - 0.1, "ci_hi": acc + 0.1, "mean_margin_correct": 0.5,
                         "length_longer": 0.5, "length_shorter": 0.25, "ece": 0.05 + 0.01 * seed, "brier": 0.25,
                         "nll": 0.69})
    for scope in (OVERALL, Objective.helpful):
        for b in range(4):
            empty = b == 3  # an empty bin: no confidence, not drawn
            rows.reliability.append({"checkpoint": ck, "scope": scope, "bin_lo": b / 4, "bin_hi": (b + 1) / 4,
                                     "count": 0 if empty else 5, "mean_confidence": None if empty else b / 4 + 0.1,
                                     "accuracy": None if empty else b / 4 + 0.05})


def transfer_rows(seed: int) -> list[dict[str, Any]]:
    """The mixed RM against the single RMs of one seed; the hostile subset's helpful Jaccard is undefined."""
    return [{"base_model": BASE, "seed": seed, "subset": subset, "subset_type": kind, "n_items": N_ITEMS,
             "transferability": 0.5 + 0.1 * seed, "jaccard_helpful": float("nan") if subset == EVIL else 0.4,
             "jaccard_harmless": 0.3 + 0.2 * seed}
            for subset, kind in [*SUBSETS.items(), (OVERALL, OVERALL)]]


def train_checkpoint(services: Services, regime: Regime, seed: int, *, base_model: str = BASE,
                     checkpoint: str | None = None, history: bool = True) -> str:
    """A trained RM as a finished training job leaves it: its checkpoint row and its training curve."""
    ck = add_checkpoint(services, base_model=base_model, regime=regime, seed=seed, preset=Preset.demo,
                        checkpoint=checkpoint or ck_id(regime, seed), meta=dict(META, model=base_model))
    if history:
        params = {"model": base_model, "regime": regime, "seed": seed, "preset": Preset.demo,
                  "dataset": {"source": "bundled", "split": Split.train}}
        ingest_result(services, JobKind.train, {TrainingHistoryRow: history_rows(ck)}, params=params,
                      summary=META, result_key=ck, checkpoint=ck)
    return ck


def evaluate(services: Services, checkpoints: list[str], tables: dict[type[Any], list[dict[str, Any]]], *,
             key: str, split: Split = Split.test, limit: int | None = N_ITEMS,
             summary: dict[str, Any] | None = None) -> str:
    """A finished evaluation job of `checkpoints` with the given result rows."""
    dataset: dict[str, Any] = {"source": "bundled", "split": split, "limit": limit}
    return ingest_result(services, JobKind.evaluate, tables, result_key=key, summary=summary or {},
                         params={"checkpoints": checkpoints, "dataset": dataset})


def seed_lab(services: Services) -> LabRows:
    """Six checkpoints (3 regimes x seeds 0, 1) with training curves, one full evaluation, then a newer
    evaluation of the mixed seed-0 RM only (the comparison must still pick the full one by default)."""
    rows = LabRows()
    for regime in REGIMES:
        for seed in SEEDS:
            train_checkpoint(services, regime, seed)
            evaluation_rows(regime, seed, rows)
    for seed in SEEDS:
        rows.transfer += transfer_rows(seed)
    evaluate(services, [ck_id(r, s) for r in REGIMES for s in SEEDS],
             {EvalItemRow: rows.items, EvalSubsetRow: rows.subsets, EvalReliabilityRow: rows.reliability,
              EvalTransferRow: rows.transfer}, key=FULL, summary={"n_pairs": 16, "mean_transferability": float("nan")})
    one = ck_id(Regime.mixed, 0)
    evaluate(services, [one], rows.of(one), key=ONE, split=Split.train, limit=None)
    return rows
