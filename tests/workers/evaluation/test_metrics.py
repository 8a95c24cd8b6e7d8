"""Every metric against numbers worked out by hand on a ten-item fixture (see comments)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from workers.evaluation import metrics as M

# Ten items in long format, rows deliberately out of order. Per item (min chosen, max rejected):
#   a: 2.0 vs 1.0                      -> correct, margin  1.0
#   b: 0.5 vs 0.5                      -> tie, WRONG, margin 0.0
#   c: -1.0 vs 0.0                     -> wrong, margin -1.0
#   d: 3.0 vs 0.0                      -> correct, margin  3.0
#   e: 1.0 vs max(0.2, 0.9, -0.5)=0.9  -> correct (best-of-4), margin 0.1
#   f: 1.0 vs max(0.2, 1.0, -0.5)=1.0  -> tie with one rejected, WRONG (best-of-4), margin 0.0
#   g: 0.0 vs max(-1, -2, 0.5)=0.5     -> wrong (best-of-4), margin -0.5
#   h: 1.5 vs -0.5                     -> correct, margin 2.0
#   i: 0.0 vs 0.25                     -> wrong, margin -0.25
#   j: 0.75 vs 0.25                    -> correct, margin 0.5
ROWS = [
    ("j", "rejected", 0.25), ("a", "chosen", 2.0), ("e", "rejected", 0.2), ("b", "chosen", 0.5),
    ("c", "rejected", 0.0), ("e", "chosen", 1.0), ("a", "rejected", 1.0), ("b", "rejected", 0.5),
    ("c", "chosen", -1.0), ("d", "chosen", 3.0), ("d", "rejected", 0.0), ("e", "rejected", 0.9),
    ("e", "rejected", -0.5), ("f", "chosen", 1.0), ("f", "rejected", 0.2), ("f", "rejected", 1.0),
    ("f", "rejected", -0.5), ("g", "rejected", -1.0), ("g", "chosen", 0.0), ("g", "rejected", -2.0),
    ("g", "rejected", 0.5), ("h", "chosen", 1.5), ("h", "rejected", -0.5), ("i", "chosen", 0.0),
    ("i", "rejected", 0.25), ("j", "chosen", 0.75),
]
IDS = [r[0] for r in ROWS]
SIDES = [r[1] for r in ROWS]
REWARDS = [r[2] for r in ROWS]
HAND_CORRECT = [True, False, False, True, True, False, False, True, False, True]  # a..j
HAND_MARGINS = [1.0, 0.0, -1.0, 3.0, 0.1, 0.0, -0.5, 2.0, -0.25, 0.5]


# --------------------------------------------------------------------------- accuracy rule


def test_item_correct_pair_and_ties() -> None:
    assert M.item_correct([2.0], [1.0]) is True
    assert M.item_correct([0.5], [0.5]) is False  # tie is wrong
    assert M.item_correct([0.4], [0.5]) is False


def test_item_correct_best_of_4() -> None:
    assert M.item_correct([1.0], [0.2, 0.9, -0.5]) is True
    assert M.item_correct([1.0], [0.2, 1.0, -0.5]) is False  # ties the best rejected
    assert M.item_correct([1.0], [0.2, 1.1, -0.5]) is False
    # several chosen: the worst chosen must beat the best rejected
    assert M.item_correct([3.0, 1.0], [0.5, 0.9]) is True
    assert M.item_correct([3.0, 0.8], [0.5, 0.9]) is False


def test_item_correct_needs_both_sides() -> None:
    with pytest.raises(ValueError):
        M.item_correct([], [1.0])
    with pytest.raises(ValueError):
        M.item_correct([1.0], [])


def test_item_correctness_on_fixture() -> None:
    ids, correct = M.item_correctness(IDS, SIDES, REWARDS)
    assert ids.tolist() == list("abcdefghij")
    assert correct.dtype == np.bool_
    assert correct.tolist() == HAND_CORRECT
    assert M.accuracy(correct) == 0.5  # 5 of 10
    assert M.accuracy(correct, percent=True) == 50.0


def test_item_correctness_matches_item_correct_loop() -> None:
    _, correct = M.item_correctness(IDS, SIDES, REWARDS)
    for k, item in enumerate("abcdefghij"):
        c = [r for i, s, r in ROWS if i == item and s == "chosen"]
        r = [r for i, s, r in ROWS if i == item and s == "rejected"]
        assert M.item_correct(c, r) == correct[k]


def test_item_margins_on_fixture() -> None:
    ids, margins = M.item_margins(IDS, SIDES, REWARDS)
    assert ids.tolist() == list("abcdefghij")
    np.testing.assert_allclose(margins, HAND_MARGINS, atol=1e-12)
    _, correct = M.item_correctness(IDS, SIDES, REWARDS)
    assert ((margins > 0) == correct).all()


def test_item_correctness_errors() -> None:
    with pytest.raises(ValueError, match="chosen.*rejected"):
        M.item_correctness(["a", "a"], ["chosen", "winner"], [1.0, 0.0])
    with pytest.raises(ValueError, match="lack"):
        M.item_correctness(["a", "a", "b"], ["chosen", "rejected", "chosen"], [1.0, 0.0, 2.0])
    with pytest.raises(ValueError):
        M.item_correctness(["a"], ["chosen", "rejected"], [1.0])


def test_nan_reward_is_wrong() -> None:
    _, correct = M.item_correctness(["a", "a"], ["chosen", "rejected"], [float("nan"), 0.0])
    assert correct.tolist() == [False]


def test_accuracy_empty_is_nan() -> None:
    assert math.isnan(M.accuracy([]))


# --------------------------------------------------------------------------- seeds and CIs


def _loop_bootstrap(values: list[float], n_boot: int, seed: int, alpha: float) -> tuple[float, float]:
    """Independent plain-Python reimplementation: one resample per loop turn, sorted-list percentile."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        means.append(sum(values[i] for i in idx) / n)
    means.sort()

    def pct(q: float) -> float:  # numpy's default linear interpolation, by hand
        h = (len(means) - 1) * q / 100.0
        lo = math.floor(h)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (means[hi] - means[lo]) * (h - lo)

    return pct(100 * alpha / 2), pct(100 * (1 - alpha / 2))


def test_bootstrap_ci_matches_loop_and_brackets_mean() -> None:
    values = [float(c) for c in HAND_CORRECT]  # mean 0.5
    lo, hi = M.bootstrap_ci(values, n_boot=1000, seed=0)
    elo, ehi = _loop_bootstrap(values, 1000, 0, 0.05)
    assert lo == pytest.approx(elo, abs=1e-12)
    assert hi == pytest.approx(ehi, abs=1e-12)
    assert lo <= 0.5 <= hi
    assert 0.0 <= lo < hi <= 1.0
    # a 95% interval of a mean of 10 coin flips is roughly ±0.3: not degenerate, not the full range
    assert 0.1 <= lo <= 0.3 and 0.7 <= hi <= 0.9
    assert M.bootstrap_ci(values, n_boot=1000, seed=0) == (lo, hi)  # seeded: reproducible


def test_bootstrap_ci_other_alpha_and_seed_match_loop() -> None:
    values = [0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.05]
    for seed, alpha in [(1, 0.1), (7, 0.05), (123, 0.2)]:
        lo, hi = M.bootstrap_ci(values, n_boot=500, seed=seed, alpha=alpha)
        elo, ehi = _loop_bootstrap(values, 500, seed, alpha)
        assert (lo, hi) == pytest.approx((elo, ehi), abs=1e-12)
        assert lo <= float(np.mean(values)) <= hi


def test_bootstrap_ci_degenerate_cases() -> None:
    assert M.bootstrap_ci([0.7]) == (0.7, 0.7)  # one value: every resample is that value
    assert M.bootstrap_ci([2.0, 2.0, 2.0]) == (2.0, 2.0)
    with pytest.raises(ValueError):
        M.bootstrap_ci([])
    with pytest.raises(ValueError):
        M.bootstrap_ci([1.0], alpha=0.0)


def test_mean_std() -> None:
    # [70, 72, 74]: mean 72; sample var = (4 + 0 + 4) / (3 - 1) = 4 -> std 2
    assert M.mean_std([70.0, 72.0, 74.0]) == (72.0, 2.0)
    assert M.mean_std([61.5]) == (61.5, 0.0)  # one seed: std reported as 0.0
    with pytest.raises(ValueError):
        M.mean_std([])


# --------------------------------------------------------------------------- agreement

HH = [1, 0, 0, 1, 1, 0, 0, 1, 0, 1]  # mixed RM = the fixture's correctness (a, d, e, h, j)
HE = [1, 1, 0, 0, 1, 0, 0, 0, 1, 0]  # helpful RM: a, b, e, i
HA = [0, 0, 0, 1, 0, 0, 1, 1, 0, 0]  # harmless RM: d, g, h


def test_transferability_hand() -> None:
    # HE ∨ HA = {a, b, d, e, g, h, i} (7); HH on those = {a, d, e, h} (4) -> 4/7
    assert M.transferability(HH, HE, HA) == pytest.approx(4 / 7)
    assert M.transferability(HH, HE, HA) == pytest.approx(0.5714285714285714)
    # mixed right wherever either is right -> 1; nothing right anywhere -> nan
    assert M.transferability([1] * 10, HE, HA) == 1.0
    assert math.isnan(M.transferability(HH, [0] * 10, [0] * 10))


def test_jaccard_hand() -> None:
    # HH ∩ HE = {a, e} (2), HH ∪ HE = {a, b, d, e, h, i, j} (7) -> 2/7
    assert M.jaccard(HH, HE) == pytest.approx(2 / 7)
    # HH ∩ HA = {d, h} (2), HH ∪ HA = {a, d, e, g, h, j} (6) -> 1/3
    assert M.jaccard(HH, HA) == pytest.approx(1 / 3)
    assert M.jaccard(HE, HE) == 1.0
    assert math.isnan(M.jaccard([0, 0], [False, False]))
    with pytest.raises(ValueError):
        M.jaccard([1, 0], [1, 0, 1])


def test_margin_stats_hand() -> None:
    _, margins = M.item_margins(IDS, SIDES, REWARDS)
    _, correct = M.item_correctness(IDS, SIDES, REWARDS)
    stats = M.margin_stats(margins, correct)
    # correct margins 1.0, 3.0, 0.1, 2.0, 0.5: sum 6.6 -> mean 1.32; sorted 0.1 0.5 1 2 3 -> median 1.0
    assert stats["mean"] == pytest.approx(1.32)
    assert stats["median"] == pytest.approx(1.0)
    assert stats["n"] == 5
    none = M.margin_stats([1.0, -1.0], [False, False])
    assert math.isnan(none["mean"]) and math.isnan(none["median"]) and none["n"] == 0


# --------------------------------------------------------------------------- calibration


def test_pair_probabilities_both_orderings() -> None:
    # d = r_c - r_r = [0, ln 3]: σ(0) = 1/2, σ(ln 3) = 3/(3+1) = 3/4, flipped: 1/2, 1/4
    p, y = M.pair_probabilities([0.0, math.log(3.0)], [0.0, 0.0])
    np.testing.assert_allclose(p, [0.5, 0.75, 0.5, 0.25])
    assert y.tolist() == [1.0, 1.0, 0.0, 0.0]


def test_sigmoid_is_stable() -> None:
    with np.errstate(all="raise"):
        p, y = M.pair_probabilities([1000.0, -800.0], [-1000.0, 800.0])
    assert np.isfinite(p).all()
    np.testing.assert_allclose(p, [1.0, 0.0, 0.0, 1.0])
    # pair 1 confidently right (p=1, y=1), pair 2 confidently wrong (p=0, y=1, flipped p=1, y=0):
    # NLL = (0 + 2 * -ln(1e-12) + 0) / 4 = 13.8155...; finite thanks to the clip
    assert M.nll(p, y) == pytest.approx(-math.log(1e-12) / 2)
    assert M.nll(p[[0, 2]], y[[0, 2]]) == pytest.approx(0.0, abs=1e-9)


def test_calibration_on_pair_fixture() -> None:
    p, y = M.pair_probabilities([0.0, math.log(3.0)], [0.0, 0.0])
    # p = [.5, .75, .5, .25], y = [1, 1, 0, 0]; 10 bins:
    #   bin 5 [.5, .6): p .5, .5 with y 1, 0 -> acc .5, conf .5, gap 0
    #   bin 7 [.7, .8): p .75, y 1 -> gap .25, weight 1/4
    #   bin 2 [.2, .3): p .25, y 0 -> gap .25, weight 1/4
    # ECE = .0625 + .0625 = 0.125
    assert M.ece(p, y) == pytest.approx(0.125)
    # Brier = (.25 + .0625 + .25 + .0625) / 4 = .625 / 4 = 0.15625
    assert M.brier(p, y) == pytest.approx(0.15625)
    # NLL = -(ln .5 + ln .75 + ln .5 + ln .75) / 4 = ln(8/3) / 2 = 0.4904146...
    assert M.nll(p, y) == pytest.approx(math.log(8 / 3) / 2)
    assert M.nll(p, y) == pytest.approx(0.49041462650586315)


def test_ece_hand_with_closed_last_bin() -> None:
    p = [0.05, 0.15, 0.15, 0.95, 1.0]
    y = [0, 1, 0, 1, 1]
    # 10 bins: bin0 {.05|0}: |0 - .05| = .05 (n 1); bin1 {.15,.15|1,0}: |.5 - .15| = .35 (n 2);
    # bin9 {.95, 1.0|1,1} (1.0 lands in the closed last bin): |1 - .975| = .025 (n 2)
    # ECE = (1*.05 + 2*.35 + 2*.025) / 5 = .8 / 5 = 0.16
    assert M.ece(p, y) == pytest.approx(0.16)
    # 2 bins: [0, .5) holds .05 .15 .15 with 1 hit vs conf sum .35 -> .65; [.5, 1] 2 hits vs 1.95 -> .05
    # ECE = (.65 + .05) / 5 = 0.14
    assert M.ece(p, y, n_bins=2) == pytest.approx(0.14)
    # Brier = (.0025 + .7225 + .0225 + .0025 + 0) / 5 = .75 / 5 = 0.15
    assert M.brier(p, y) == pytest.approx(0.15)


def test_reliability_diagram_hand() -> None:
    p = [0.05, 0.15, 0.15, 0.95, 1.0]
    y = [0, 1, 0, 1, 1]
    bins = M.reliability_diagram(p, y)
    assert len(bins) == 10
    assert bins[0] == {"bin_lo": 0.0, "bin_hi": 0.1, "count": 1, "mean_confidence": pytest.approx(0.05),
                       "accuracy": 0.0}
    assert bins[1]["count"] == 2
    assert bins[1]["mean_confidence"] == pytest.approx(0.15)
    assert bins[1]["accuracy"] == 0.5
    assert bins[9]["count"] == 2 and bins[9]["bin_hi"] == 1.0
    assert bins[9]["mean_confidence"] == pytest.approx(0.975)
    assert bins[9]["accuracy"] == 1.0
    assert bins[4] == {"bin_lo": 0.4, "bin_hi": 0.5, "count": 0, "mean_confidence": None, "accuracy": None}
    assert sum(int(b["count"]) for b in bins) == 5
    json.dumps(bins)  # serialisable as-is
    # the diagram and ECE agree
    ece = 0.0
    for b in bins:
        if b["count"]:
            assert b["accuracy"] is not None and b["mean_confidence"] is not None
            ece += b["count"] * abs(b["accuracy"] - b["mean_confidence"]) / 5
    assert ece == pytest.approx(M.ece(p, y))


def test_nll_clips() -> None:
    # p = 0 for a positive label: clipped to 1e-12 -> -ln(1e-12) = 27.631021...
    assert M.nll([0.0], [1]) == pytest.approx(-math.log(1e-12))
    assert M.nll([0.0], [1]) == pytest.approx(27.631021115928547)


def test_calibration_input_checks() -> None:
    with pytest.raises(ValueError):
        M.ece([1.2], [1])
    with pytest.raises(ValueError):
        M.brier([0.5], [2])
    with pytest.raises(ValueError):
        M.nll([0.5, 0.5], [1])
    with pytest.raises(ValueError):
        M.ece([], [])


# --------------------------------------------------------------------------- length baseline


def test_length_baseline_pairs_with_ties() -> None:
    chosen = [10, 5, 7, 7, 3]
    rejected = [5, 10, 7, 2, 3]
    # longer wins: 10>5 yes, 5>10 no, 7>7 tie no, 7>2 yes, 3>3 tie no -> 2/5
    # shorter wins: only 5<10 -> 1/5; the two ties are wrong for both
    out = M.length_baseline(chosen, rejected)
    assert out == {"longer": pytest.approx(0.4), "shorter": pytest.approx(0.2)}


def test_length_baseline_items() -> None:
    ids = ["x", "x", "x", "x", "y", "y", "y", "z", "z", "z", "w", "w"]
    sides = ["chosen", "rejected", "rejected", "rejected", "chosen", "rejected", "rejected",
             "chosen", "rejected", "rejected", "chosen", "rejected"]
    lengths = [10, 5, 9, 12, 20, 5, 19, 3, 4, 8, 6, 6]
    # x: chosen 10 vs 5, 9, 12 -> not longer than all, not shorter than all: wrong for both
    # y: chosen 20 vs 5, 19 -> longer wins;  z: chosen 3 vs 4, 8 -> shorter wins;  w: 6 vs 6 tie, wrong
    assert M.length_baseline_items(ids, sides, lengths) == {"longer": 0.25, "shorter": 0.25}


def test_length_baseline_items_equals_pairs_for_single_pairs() -> None:
    chosen = [10, 5, 7, 7, 3]
    rejected = [5, 10, 7, 2, 3]
    ids = [k for k in range(5) for _ in (0, 1)]
    sides = ["chosen", "rejected"] * 5
    lengths = [v for pair in zip(chosen, rejected, strict=True) for v in pair]
    assert M.length_baseline_items(ids, sides, lengths) == M.length_baseline(chosen, rejected)


# --------------------------------------------------------------------------- summaries


def test_relative_drop_and_normalised() -> None:
    assert M.relative_drop(60.0, 75.0) == pytest.approx(0.2)  # 1 - 60/75
    assert M.relative_drop(75.0, 75.0) == 0.0
    assert M.normalised(60.0, 75.0) == pytest.approx(0.4)  # (60-50)/(75-50) = 10/25
    assert M.normalised(50.0, 75.0) == 0.0
    assert M.normalised(40.0, 75.0) == pytest.approx(-0.4)  # below chance
    assert math.isnan(M.normalised(60.0, 50.0))
    assert math.isnan(M.relative_drop(10.0, 0.0))
