"""Score benchmark subsets with one or more RMs and compute every metric per subset.

Scoring (torch) and the metrics (pure numpy, `metrics.py`) meet here; the outputs are long-format
tables so the API can slice them in DuckDB (per subset, per seed, verdict flips between models).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workers.data.schema import PreferencePair
from workers.data.text import pair_texts
from workers.evaluation import metrics as M

ALL = "all"


@dataclass
class ModelScores:
    """One RM's rewards for a set of pairs: one chosen and one rejected reward per pair."""

    checkpoint: str
    base_model: str
    regime: str
    seed: int
    r_chosen: np.ndarray
    r_rejected: np.ndarray


@dataclass
class EvalTables:
    items: list[dict[str, Any]] = field(default_factory=list)
    subsets: list[dict[str, Any]] = field(default_factory=list)
    reliability: list[dict[str, Any]] = field(default_factory=list)
    transfer: list[dict[str, Any]] = field(default_factory=list)


def unique_texts(pairs: Sequence[PreferencePair]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Deduplicate texts (a 3x3 RM-Bench item repeats each response); index arrays map pairs to texts."""
    index: dict[str, int] = {}
    ci, ri = np.empty(len(pairs), dtype=np.int64), np.empty(len(pairs), dtype=np.int64)
    for k, p in enumerate(pairs):
        c, r = pair_texts(p)
        ci[k] = index.setdefault(c, len(index))
        ri[k] = index.setdefault(r, len(index))
    return list(index), ci, ri


def _long_format(pairs: Sequence[PreferencePair], rc: np.ndarray, rr: np.ndarray,
                 lens_c: np.ndarray, lens_r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ids = np.array([p.item_id for p in pairs] * 2, dtype=object)
    sides = np.array(["chosen"] * len(pairs) + ["rejected"] * len(pairs), dtype=object)
    return ids, sides, np.concatenate([rc, rr]), np.concatenate([lens_c, lens_r])


def evaluate_model(pairs: Sequence[PreferencePair], ms: ModelScores, subset_type: dict[str, str],
                   n_bootstrap: int = 1000, n_bins: int = 10, seed: int = 0) -> EvalTables:
    """Per-item verdicts, per-subset accuracy with CI, margins, calibration and the length baseline."""
    out = EvalTables()
    base = {"checkpoint": ms.checkpoint, "base_model": ms.base_model, "regime": ms.regime, "seed": ms.seed}
    lens_c = np.array([len(p.chosen) for p in pairs], dtype=np.float64)
    lens_r = np.array([len(p.rejected) for p in pairs], dtype=np.float64)
    by_subset: dict[str, list[int]] = defaultdict(list)
    for k, p in enumerate(pairs):
        by_subset[p.subset].append(k)
    meta_by_item = {p.item_id: (p.objective, p.subset) for p in pairs}
    ids, sides, rewards, lengths = _long_format(pairs, ms.r_chosen, ms.r_rejected, lens_c, lens_r)
    item_ids, correct = M.item_correctness(ids, sides, rewards)
    _, margins = M.item_margins(ids, sides, rewards)
    for iid, ok, mg in zip(item_ids, correct, margins, strict=True):
        obj, sub = meta_by_item[iid]
        out.items.append({**base, "item_id": str(iid), "objective": obj, "subset": sub, "correct": bool(ok),
                          "margin": float(mg)})
    verdict = dict(zip(item_ids.tolist(), correct.tolist(), strict=True))
    margin_of = dict(zip(item_ids.tolist(), margins.tolist(), strict=True))
    for subset in sorted(by_subset) + [ALL]:
        idx = np.arange(len(pairs)) if subset == ALL else np.array(by_subset[subset])
        sub_pairs = [pairs[int(k)] for k in idx]
        sub_items = sorted({p.item_id for p in sub_pairs})
        c = np.array([verdict[i] for i in sub_items])
        mg = np.array([margin_of[i] for i in sub_items])
        lo, hi = M.bootstrap_ci(c.astype(float), n_boot=n_bootstrap, seed=seed)
        sub_ids, sub_sides, _, sub_lens = _long_format(sub_pairs, ms.r_chosen[idx], ms.r_rejected[idx],
                                                       lens_c[idx], lens_r[idx])
        length = M.length_baseline_items(sub_ids, sub_sides, sub_lens)
        probs, labels = M.pair_probabilities(ms.r_chosen[idx], ms.r_rejected[idx])
        out.subsets.append({
            **base, "subset": subset,
            "subset_type": subset_type.get(subset, "mixed") if subset != ALL else "all",
            "n_items": len(sub_items), "accuracy": M.accuracy(c), "ci_lo": lo, "ci_hi": hi,
            "mean_margin_correct": M.margin_stats(mg, c)["mean"],
            "length_longer": length["longer"], "length_shorter": length["shorter"],
            "ece": M.ece(probs, labels, n_bins), "brier": M.brier(probs, labels), "nll": M.nll(probs, labels),
        })
    for scope in ["all", *sorted({p.objective for p in pairs})]:
        idx = np.array([k for k, p in enumerate(pairs) if scope == "all" or p.objective == scope])
        probs, labels = M.pair_probabilities(ms.r_chosen[idx], ms.r_rejected[idx])
        for b in M.reliability_diagram(probs, labels, n_bins):
            out.reliability.append({"checkpoint": ms.checkpoint, "scope": scope, **b})
    return out


def transfer_tables(tables: Sequence[EvalTables], subset_type: dict[str, str]) -> list[dict[str, Any]]:
    """Transferability and correct-set Jaccard of each mixed RM against the single RMs of its base and seed."""
    verdicts: dict[tuple[str, int, str], dict[str, bool]] = {}
    subsets_of: dict[str, str] = {}
    for t in tables:
        for row in t.items:
            verdicts.setdefault((row["base_model"], row["seed"], row["regime"]), {})[row["item_id"]] = row["correct"]
            subsets_of[row["item_id"]] = row["subset"]
    rows: list[dict[str, Any]] = []
    for base_model, seed in sorted({(b, s) for b, s, _ in verdicts}):
        regs = {r: verdicts.get((base_model, seed, r)) for r in ("helpful", "harmless", "mixed")}
        if any(v is None for v in regs.values()):
            continue
        he, ha, hh = regs["helpful"], regs["harmless"], regs["mixed"]
        assert he is not None and ha is not None and hh is not None
        common = sorted(set(he) & set(ha) & set(hh))
        for subset in sorted({subsets_of[i] for i in common}) + [ALL]:
            ids = [i for i in common if subset == ALL or subsets_of[i] == subset]
            a, b, c = (np.array([v[i] for i in ids]) for v in (hh, he, ha))
            rows.append({"base_model": base_model, "seed": seed, "subset": subset,
                         "subset_type": subset_type.get(subset, "all"), "n_items": len(ids),
                         "transferability": M.transferability(a, b, c), "jaccard_helpful": M.jaccard(a, b),
                         "jaccard_harmless": M.jaccard(a, c)})
    return rows
