"""Pure evaluation metrics: the study's accuracy rule, seeds, transfer, calibration, length baseline.

Everything here is numpy/scipy on plain arrays so that the app, the workers and the tests agree on one
definition of each number (METHOD.md §2, §5 summary scores). Accuracies are fractions in [0, 1] unless a
function says it takes percentages.
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import expit

__all__ = [
    "accuracy",
    "bootstrap_ci",
    "brier",
    "ece",
    "item_correct",
    "item_correctness",
    "item_margins",
    "jaccard",
    "length_baseline",
    "length_baseline_items",
    "margin_stats",
    "mean_std",
    "nll",
    "normalised",
    "pair_probabilities",
    "relative_drop",
    "ReliabilityBin",
    "reliability_diagram",
    "sigmoid",
    "transferability",
]

CHOSEN = "chosen"
REJECTED = "rejected"


# --------------------------------------------------------------------------- accuracy rule


def item_correct(chosen_scores: ArrayLike, rejected_scores: ArrayLike) -> bool:
    """True iff min(chosen) > max(rejected), strictly: a tie is wrong, as in the study.

    One chosen vs one rejected is pairwise accuracy; one chosen vs three rejected is best-of-4.
    """
    c = np.asarray(chosen_scores, dtype=np.float64).ravel()
    r = np.asarray(rejected_scores, dtype=np.float64).ravel()
    if c.size == 0 or r.size == 0:
        raise ValueError("an item needs at least one chosen and one rejected score")
    return bool(c.min() > r.max())


def _group_extremes(
    item_ids: ArrayLike, sides: ArrayLike, rewards: ArrayLike
) -> tuple[NDArray, NDArray[np.float64], NDArray[np.float64]]:
    """Per item: (sorted unique ids, min chosen reward, max rejected reward), vectorised."""
    ids = np.asarray(item_ids)
    sd = np.asarray(sides)
    rw = np.asarray(rewards, dtype=np.float64)
    if not (ids.ndim == sd.ndim == rw.ndim == 1) or not (len(ids) == len(sd) == len(rw)):
        raise ValueError("item_ids, sides and rewards must be 1-D and of equal length")
    is_c = sd == CHOSEN
    is_r = sd == REJECTED
    bad = ~(is_c | is_r)
    if bad.any():
        raise ValueError(f"sides must be 'chosen' or 'rejected', got {sorted(set(sd[bad].tolist()))!r}")
    uniq, inv = np.unique(ids, return_inverse=True)
    inv = inv.ravel()
    n = len(uniq)
    cmin = np.full(n, np.inf)
    rmax = np.full(n, -np.inf)
    with np.errstate(invalid="ignore"):  # a NaN reward propagates into its item on purpose
        np.minimum.at(cmin, inv[is_c], rw[is_c])
        np.maximum.at(rmax, inv[is_r], rw[is_r])
    has_c = np.bincount(inv[is_c], minlength=n) > 0
    has_r = np.bincount(inv[is_r], minlength=n) > 0
    if not (has_c.all() and has_r.all()):
        missing = uniq[~(has_c & has_r)][:5].tolist()
        raise ValueError(f"items lack a chosen or a rejected row (first: {missing!r})")
    return uniq, cmin, rmax


def item_correctness(
    item_ids: ArrayLike, sides: ArrayLike, rewards: ArrayLike
) -> tuple[NDArray, NDArray[np.bool_]]:
    """Group long-format score rows by item and apply the strict rule; ids come back sorted.

    A NaN reward makes its item wrong (the comparison is False), so a broken score never counts as a win.
    """
    uniq, cmin, rmax = _group_extremes(item_ids, sides, rewards)
    return uniq, cmin > rmax


def item_margins(
    item_ids: ArrayLike, sides: ArrayLike, rewards: ArrayLike
) -> tuple[NDArray, NDArray[np.float64]]:
    """Per item min(chosen) − max(rejected): the study's "confidence"; > 0 exactly when correct."""
    uniq, cmin, rmax = _group_extremes(item_ids, sides, rewards)
    return uniq, cmin - rmax


def accuracy(correct: ArrayLike, percent: bool = False) -> float:
    """Fraction of correct items (× 100 with percent=True); NaN for no items rather than a fake 0."""
    c = np.asarray(correct, dtype=bool).ravel()
    if c.size == 0:
        return float("nan")
    acc = float(c.mean())
    return 100.0 * acc if percent else acc


# --------------------------------------------------------------------------- uncertainty


def bootstrap_ci(
    values: ArrayLike, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap (1 − alpha) interval of the mean; seeded so a rerun shows the same bars.

    Resamples are drawn as one (n_boot, n) index matrix from np.random.default_rng(seed).
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    if not 0.0 < alpha < 1.0:
        raise ValueError("alpha must be in (0, 1)")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_boot, v.size))
    means = v[idx].mean(axis=1)
    lo, hi = np.percentile(means, [100.0 * alpha / 2.0, 100.0 * (1.0 - alpha / 2.0)])
    return float(lo), float(hi)


def mean_std(values: ArrayLike) -> tuple[float, float]:
    """Mean and sample std (ddof=1) across seeds, as papers report "mean ± std over seeds".

    With a single seed the std is reported as 0.0 (not NaN) so tables stay printable; callers that
    need to distinguish "one seed" should look at the count themselves.
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("mean_std needs at least one value")
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return float(v.mean()), std


# --------------------------------------------------------------------------- agreement between RMs


def _bool_vectors(*vs: ArrayLike) -> list[NDArray[np.bool_]]:
    out = [np.asarray(v, dtype=bool).ravel() for v in vs]
    if len({v.size for v in out}) > 1:
        raise ValueError("correctness vectors must have equal length (same items, same order)")
    return out


def transferability(mixed: ArrayLike, helpful: ArrayLike, harmless: ArrayLike) -> float:
    """|HH ∧ (HE ∨ HA)| / |HE ∨ HA|: of items some single-objective RM solves, the share the mixed RM keeps.

    NaN when neither single-objective RM gets any item right (nothing to transfer).
    """
    hh, he, ha = _bool_vectors(mixed, helpful, harmless)
    either = he | ha
    denom = int(either.sum())
    if denom == 0:
        return float("nan")
    return int((hh & either).sum()) / denom


def jaccard(a: ArrayLike, b: ArrayLike) -> float:
    """|A ∧ B| / |A ∨ B| of two per-item correctness vectors; NaN when both are all wrong."""
    x, y = _bool_vectors(a, b)
    union = int((x | y).sum())
    if union == 0:
        return float("nan")
    return int((x & y).sum()) / union


def margin_stats(margins: ArrayLike, correct: ArrayLike) -> dict[str, float]:
    """Mean and median margin over correct items only (the study's confidence); NaN when none correct."""
    m = np.asarray(margins, dtype=np.float64).ravel()
    (c,) = _bool_vectors(correct)
    if m.size != c.size:
        raise ValueError("margins and correct must have equal length")
    sel = m[c]
    if sel.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "n": 0}
    return {"mean": float(sel.mean()), "median": float(np.median(sel)), "n": int(sel.size)}


# --------------------------------------------------------------------------- calibration


def sigmoid(x: ArrayLike) -> NDArray[np.float64]:
    """Numerically stable logistic function (scipy's expit: no overflow for large |x|)."""
    return np.asarray(expit(np.asarray(x, dtype=np.float64)), dtype=np.float64)


def pair_probabilities(
    r_chosen: ArrayLike, r_rejected: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Bradley-Terry P(first ≻ second) for both orderings of each pair, so labels are balanced.

    Returns p = [σ(r_c − r_r), σ(r_r − r_c)] and y = [1…, 0…]; without the flipped copy every label
    would be 1 and ECE would only measure over/under-confidence in one direction.
    """
    c = np.asarray(r_chosen, dtype=np.float64).ravel()
    r = np.asarray(r_rejected, dtype=np.float64).ravel()
    if c.size != r.size:
        raise ValueError("r_chosen and r_rejected must have equal length")
    d = c - r
    p = np.concatenate([sigmoid(d), sigmoid(-d)])
    y = np.concatenate([np.ones(d.size), np.zeros(d.size)])
    return p, y


class ReliabilityBin(TypedDict):
    """One bar of a reliability diagram; the two means are None for an empty bin."""

    bin_lo: float
    bin_hi: float
    count: int
    mean_confidence: float | None
    accuracy: float | None


def _check_py(p: ArrayLike, y: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    pp = np.asarray(p, dtype=np.float64).ravel()
    yy = np.asarray(y, dtype=np.float64).ravel()
    if pp.size != yy.size:
        raise ValueError("p and y must have equal length")
    if pp.size == 0:
        raise ValueError("calibration metrics need at least one prediction")
    if np.isnan(pp).any() or (pp < 0).any() or (pp > 1).any():
        raise ValueError("probabilities must lie in [0, 1]")
    if not np.isin(yy, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1")
    return pp, yy


def _bin_index(p: NDArray[np.float64], n_bins: int) -> NDArray[np.intp]:
    """Equal-width bins [k/n, (k+1)/n) on [0, 1], the last one closed so p = 1 lands in it."""
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    return np.minimum(np.floor(p * n_bins).astype(np.intp), n_bins - 1)


def ece(p: ArrayLike, y: ArrayLike, n_bins: int = 10) -> float:
    """Expected calibration error: Σ_b (n_b / N) |accuracy_b − mean confidence_b| over equal-width bins."""
    pp, yy = _check_py(p, y)
    b = _bin_index(pp, n_bins)
    counts = np.bincount(b, minlength=n_bins)
    conf = np.bincount(b, weights=pp, minlength=n_bins)
    hits = np.bincount(b, weights=yy, minlength=n_bins)
    nz = counts > 0
    gap = np.abs(hits[nz] - conf[nz])  # = n_b * |acc_b − conf_b|
    return float(gap.sum() / pp.size)


def reliability_diagram(p: ArrayLike, y: ArrayLike, n_bins: int = 10) -> list[ReliabilityBin]:
    """One dict per bin (all bins, same binning as ece) for plotting; empty bins carry None, not NaN,
    so the list serialises to JSON as-is."""
    pp, yy = _check_py(p, y)
    b = _bin_index(pp, n_bins)
    counts = np.bincount(b, minlength=n_bins)
    conf = np.bincount(b, weights=pp, minlength=n_bins)
    hits = np.bincount(b, weights=yy, minlength=n_bins)
    out: list[ReliabilityBin] = []
    for k in range(n_bins):
        n = int(counts[k])
        out.append(
            {
                "bin_lo": k / n_bins,
                "bin_hi": (k + 1) / n_bins,
                "count": n,
                "mean_confidence": float(conf[k] / n) if n else None,
                "accuracy": float(hits[k] / n) if n else None,
            }
        )
    return out


def brier(p: ArrayLike, y: ArrayLike) -> float:
    """Mean squared error of the probability against the 0/1 label."""
    pp, yy = _check_py(p, y)
    return float(np.mean((pp - yy) ** 2))


def nll(p: ArrayLike, y: ArrayLike, eps: float = 1e-12) -> float:
    """Mean negative log-likelihood; p is clipped to [eps, 1 − eps] so a saturated sigmoid stays finite."""
    pp, yy = _check_py(p, y)
    q = np.clip(pp, eps, 1.0 - eps)
    return float(-np.mean(yy * np.log(q) + (1.0 - yy) * np.log1p(-q)))


# --------------------------------------------------------------------------- length baseline


def length_baseline(chosen_lengths: ArrayLike, rejected_lengths: ArrayLike) -> dict[str, float]:
    """Accuracy of "the longer wins" and "the shorter wins" per pair; an equal-length pair is wrong in both.

    This is the bar an RM must clear before its accuracy says anything beyond a length bias.
    """
    c = np.asarray(chosen_lengths, dtype=np.float64).ravel()
    r = np.asarray(rejected_lengths, dtype=np.float64).ravel()
    if c.size != r.size:
        raise ValueError("chosen_lengths and rejected_lengths must have equal length")
    return {"longer": accuracy(c > r), "shorter": accuracy(c < r)}


def length_baseline_items(item_ids: ArrayLike, sides: ArrayLike, lengths: ArrayLike) -> dict[str, float]:
    """Item-level length baseline: length (or −length) used as the reward under the same strict rule.

    "longer" is correct iff every chosen text is strictly longer than every rejected one; "shorter" iff
    every chosen text is strictly shorter. For single pairs this equals length_baseline.
    """
    lengths_arr = np.asarray(lengths, dtype=np.float64)
    _, longer = item_correctness(item_ids, sides, lengths_arr)
    _, shorter = item_correctness(item_ids, sides, -lengths_arr)
    return {"longer": accuracy(longer), "shorter": accuracy(shorter)}


# --------------------------------------------------------------------------- ablation summaries


def relative_drop(acc: float, acc0: float) -> float:
    """1 − acc/acc0: the share of the unablated accuracy lost (scale-free); NaN when acc0 is 0."""
    if acc0 == 0:
        return float("nan")
    return 1.0 - acc / acc0


def normalised(acc: float, acc0: float, chance: float = 50.0) -> float:
    """(acc − chance)/(acc0 − chance) with accuracies in %: 1 = untouched, 0 = at coin-flip level.

    NaN when the unablated model itself sits at chance (nothing to normalise by).
    """
    if acc0 == chance:
        return float("nan")
    return (acc - chance) / (acc0 - chance)
