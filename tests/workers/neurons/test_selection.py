"""Neuron selection against hand-made examples and brute force."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest

from workers.neurons import selection as S


def _mask(shape: tuple[int, int], cells: list[tuple[int, int]]) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    for layer, i in cells:
        m[layer, i] = True
    return m


# --------------------------------------------------------------------------- scores and top-p


def test_combined_score() -> None:
    xc = np.array([[1.0, 2.0], [3.0, 4.0]])
    xr = np.array([[3.0, 2.0], [1.0, 0.0]])
    np.testing.assert_array_equal(S.combined_score(xc, xr), [[2.0, 2.0], [2.0, 2.0]])
    with pytest.raises(ValueError):
        S.combined_score(xc, xr[:1])


def test_requested_count_rounds_half_up() -> None:
    assert S.requested_count(21, 10) == 2  # 2.1
    assert S.requested_count(21, 50) == 11  # 10.5 -> 11 (banker's would give 10)
    assert S.requested_count(46080, 10) == 4608
    assert S.requested_count(36864, 10) == 3686  # 3686.4
    assert S.requested_count(7, 0) == 0 and S.requested_count(7, 100) == 7


def test_top_percent_ties_hand() -> None:
    scores = np.array([[1.0, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0, 2.0]])
    # sorted: nine 1s then a 2 (n = 10)
    # p=10: h = 9 * 0.9 = 8.1 -> θ = 1 + 0.1 * (2 - 1) = 1.1 -> only the 2 -> 1 selected of 1 requested
    sel = S.top_percent(scores, 10)
    assert sel.threshold == pytest.approx(1.1)
    assert (sel.requested, sel.selected, sel.tied) == (1, 1, False)
    assert sel.mask.tolist() == [[False] * 5, [False] * 4 + [True]]
    # p=20: h = 9 * 0.8 = 7.2 -> θ between two 1s = 1.0 -> every entry >= 1 -> 10 selected of 2 requested
    sel = S.top_percent(scores, 20)
    assert sel.threshold == 1.0
    assert (sel.requested, sel.selected, sel.tied) == (2, 10, True)
    assert sel.mask.all()


def test_top_percent_all_equal_selects_everything() -> None:
    # the study's GPT-2-large harmless RM: constant scores, p=10 selects every neuron
    sel = S.top_percent(np.zeros((3, 4)), 10)
    assert (sel.requested, sel.selected, sel.tied) == (1, 12, True)


def test_top_percent_partial_tie_at_threshold() -> None:
    # sorted [1, 2, 3, 3, 3]; p=40: h = 4 * 0.6 = 2.4 -> θ = 3 -> three 3s selected, 2 requested
    sel = S.top_percent(np.array([[3.0, 1.0, 3.0, 2.0, 3.0]]), 40)
    assert sel.threshold == 3.0
    assert (sel.requested, sel.selected, sel.tied) == (2, 3, True)
    assert sel.mask.tolist() == [[True, False, True, False, True]]


def test_top_percent_interpolation_extra_is_not_a_tie() -> None:
    # GPT-2 small shape, distinct scores: p=10 -> requested round(3686.4) = 3686, but numpy's percentile
    # puts θ between sorted values 33177 and 33178, selecting 36864 - 33177 - 1 = 3687: not due to ties
    scores = np.random.default_rng(0).random((12, 3072))
    sel = S.top_percent(scores, 10)
    assert (sel.requested, sel.selected, sel.tied) == (3686, 3687, False)


def test_top_percent_edges() -> None:
    scores = np.random.default_rng(1).random((4, 6))
    none = S.top_percent(scores, 0)
    assert none.selected == 0 and not none.mask.any() and none.threshold == math.inf and not none.tied
    full = S.top_percent(scores, 100)
    assert full.selected == 24 and full.mask.all() and not full.tied
    assert full.threshold == scores.min()
    with pytest.raises(ValueError):
        S.top_percent(scores, 101)
    with pytest.raises(ValueError):
        S.top_percent(scores, -1)
    bad = scores.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        S.top_percent(bad, 10)


def _brute_top(scores: np.ndarray, p: float) -> tuple[float, np.ndarray]:
    """Sorted-list brute force: linear-interpolated (100 − p)th percentile, then every entry >= θ."""
    flat = sorted(scores.ravel().tolist())
    n = len(flat)
    h = (n - 1) * (100 - p) / 100
    lo = math.floor(h)
    hi = min(lo + 1, n - 1)
    theta = flat[lo] + (flat[hi] - flat[lo]) * (h - lo)
    mask = np.array([[v >= theta for v in row] for row in scores.tolist()], dtype=bool)
    return theta, mask


@pytest.mark.parametrize("p", [1, 2, 5, 10, 12.5, 20, 33, 50, 90, 99])
@pytest.mark.parametrize("shape", [(3, 7), (6, 50), (12, 64)])
def test_top_percent_matches_brute_force(p: float, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng([int(p * 10), *shape])
    for scores in (rng.normal(size=shape), rng.integers(0, 5, size=shape).astype(float)):
        sel = S.top_percent(scores, p)
        theta, mask = _brute_top(scores, p)
        assert sel.threshold == pytest.approx(theta, rel=1e-12, abs=1e-12)
        np.testing.assert_array_equal(sel.mask, mask)
        assert sel.selected == int(mask.sum())
        assert sel.requested == math.floor(p * scores.size / 100 + 0.5)


def test_top_percent_distinct_scores_never_flag_ties() -> None:
    rng = np.random.default_rng(5)
    for n_layers, n_neurons in [(3, 7), (5, 11), (12, 3072), (30, 1536)]:
        scores = rng.random((n_layers, n_neurons))
        for p in [1, 2, 3, 5, 10, 15, 20, 25, 30, 50, 75]:
            sel = S.top_percent(scores, p)
            assert abs(sel.selected - sel.requested) <= 1
            assert not sel.tied


# --------------------------------------------------------------------------- random controls


def test_random_set_exact_and_seeded() -> None:
    a = S.random_set((12, 64), 10, seed=3)
    assert a.shape == (12, 64) and a.dtype == np.bool_
    assert a.sum() == 77  # round(76.8)
    np.testing.assert_array_equal(a, S.random_set((12, 64), 10, seed=3))
    assert not np.array_equal(a, S.random_set((12, 64), 10, seed=4))
    assert S.random_set((3, 7), 50, seed=0).sum() == 11  # 10.5 -> 11
    assert S.random_set((3, 7), 0, seed=0).sum() == 0
    assert S.random_set((3, 7), 100, seed=0).all()


def test_random_set_is_roughly_uniform() -> None:
    hits = np.sum([S.random_set((4, 5), 25, seed=s) for s in range(2000)], axis=0)
    # each of 20 cells is picked with probability 5/20 = 1/4 -> about 500 of 2000
    assert hits.min() > 420 and hits.max() < 580


def test_layer_matched_random() -> None:
    base = _mask((4, 10), [(0, 1), (0, 2), (0, 3), (2, 9)] + [(3, i) for i in range(10)])
    out = S.layer_matched_random(base, seed=11)
    assert S.layer_counts(out).tolist() == [3, 0, 1, 10]
    assert out[3].all()  # a full layer stays full
    np.testing.assert_array_equal(out, S.layer_matched_random(base, seed=11))
    differs = any(not np.array_equal(out, S.layer_matched_random(base, seed=s)) for s in range(12, 20))
    assert differs


# --------------------------------------------------------------------------- specific / shared

H_HAND = _mask((4, 4), [(0, 0), (0, 1), (1, 2)])  # layer 0 {0, 1}, layer 1 {2}
R_HAND = _mask((4, 4), [(0, 1), (0, 3), (2, 0), (2, 2)])  # layer 0 {1, 3}, layer 2 {0, 2}


def test_specific_and_shared_intersection() -> None:
    out = S.specific_and_shared(H_HAND, R_HAND)
    assert S.mask_to_dict(out["helpful_specific"]) == {0: [0], 1: [2]}
    assert S.mask_to_dict(out["harmless_specific"]) == {0: [3], 2: [0, 2]}
    assert S.mask_to_dict(out["shared"]) == {0: [1]}


def test_specific_and_shared_per_layer_quirk() -> None:
    out = S.specific_and_shared(H_HAND, R_HAND, mode="per_layer")
    # layer 0: both have neurons -> H ∩ R = {1}; layer 1: only H -> all of H there {2};
    # layer 2: only R -> all of R there {0, 2}; layer 3: neither -> nothing
    assert S.mask_to_dict(out["shared"]) == {0: [1], 1: [2], 2: [0, 2]}
    # specific sets are unchanged by the quirk
    assert S.mask_to_dict(out["helpful_specific"]) == {0: [0], 1: [2]}
    assert S.mask_to_dict(out["harmless_specific"]) == {0: [3], 2: [0, 2]}
    with pytest.raises(ValueError):
        S.specific_and_shared(H_HAND, R_HAND, mode="bogus")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- set algebra and dicts


def test_set_algebra() -> None:
    assert S.mask_to_dict(S.union(H_HAND, R_HAND)) == {0: [0, 1, 3], 1: [2], 2: [0, 2]}
    assert S.mask_to_dict(S.intersection(H_HAND, R_HAND)) == {0: [1]}
    assert S.mask_to_dict(S.difference(H_HAND, R_HAND)) == {0: [0], 1: [2]}
    assert S.mask_to_dict(S.difference(R_HAND, H_HAND)) == {0: [3], 2: [0, 2]}
    with pytest.raises(ValueError):
        S.union(H_HAND, np.zeros((3, 4), dtype=bool))
    with pytest.raises(ValueError):
        S.union(H_HAND.astype(int))


def test_mask_dict_round_trip() -> None:
    d = S.mask_to_dict(R_HAND)
    assert d == {0: [1, 3], 2: [0, 2]}
    np.testing.assert_array_equal(S.dict_to_mask(d, (4, 4)), R_HAND)
    # JSON turns keys into strings; those are accepted
    np.testing.assert_array_equal(S.dict_to_mask(json.loads(json.dumps(d)), (4, 4)), R_HAND)
    rnd = S.random_set((7, 13), 30, seed=2)
    np.testing.assert_array_equal(S.dict_to_mask(S.mask_to_dict(rnd), (7, 13)), rnd)
    assert S.mask_to_dict(np.zeros((2, 2), dtype=bool)) == {}


@pytest.mark.parametrize(
    "d, match",
    [({4: [0]}, "layer 4 out of range"), ({-1: [0]}, "layer -1 out of range"),
     ({0: [4]}, "index 4 out of range"), ({1: [-1]}, "index -1 out of range"),
     ({"x": [0]}, "not an integer"), ({0: [1.5]}, "must be integers")],
)
def test_dict_to_mask_errors(d: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        S.dict_to_mask(d, (4, 4))


# --------------------------------------------------------------------------- overlap


def test_set_jaccard_and_three_way() -> None:
    # |H ∩ R| = 1 ({(0,1)}), |H ∪ R| = 6 -> 1/6
    assert S.set_jaccard(H_HAND, R_HAND) == pytest.approx(1 / 6)
    assert math.isnan(S.set_jaccard(np.zeros((2, 2), bool), np.zeros((2, 2), bool)))
    m = _mask((4, 4), [(0, 0), (2, 2), (3, 3)])
    # H ∪ R = {(0,0),(0,1),(0,3),(1,2),(2,0),(2,2)}; ∩ M = {(0,0),(2,2)} (2); H ∪ R ∪ M adds (3,3) -> 7
    assert S.three_way_overlap(H_HAND, R_HAND, m) == pytest.approx(2 / 7)


def test_layer_counts_and_fractions() -> None:
    assert S.layer_counts(R_HAND).tolist() == [2, 0, 2, 0]
    # L = 6: early l < 2 (0, 1), middle l < 4 (2, 3), late (4, 5)
    m = _mask((6, 5), [(0, 0), (1, 0), (2, 0), (3, 0), (3, 1), (5, 0), (5, 1), (5, 2), (5, 3), (5, 4)])
    fr = S.layer_fractions(m)
    assert fr == {"early": pytest.approx(0.2), "middle": pytest.approx(0.3), "late": pytest.approx(0.5)}
    # L = 5: early 3l < 5 -> {0, 1}; middle 3l < 10 -> {2, 3}; late {4}
    m5 = np.eye(5, dtype=bool)
    assert S.layer_fractions(m5) == {"early": 0.4, "middle": 0.4, "late": 0.2}
    # L = 30 (SmolLM2-135M): 10 / 10 / 10 layers
    full = np.ones((30, 2), dtype=bool)
    assert S.layer_fractions(full) == {"early": pytest.approx(1 / 3), "middle": pytest.approx(1 / 3),
                                       "late": pytest.approx(1 / 3)}
    assert all(math.isnan(v) for v in S.layer_fractions(np.zeros((3, 3), bool)).values())


def _brute_hypergeom_sf(observed: int, n_total: int, na: int, nb: int) -> Fraction:
    """P(|A ∩ B| >= observed) for B a uniformly random nb-subset: Σ_k C(na,k) C(N−na, nb−k) / C(N, nb)."""
    num = sum(math.comb(na, k) * math.comb(n_total - na, nb - k) for k in range(observed, min(na, nb) + 1))
    return Fraction(num, math.comb(n_total, nb))


def test_overlap_significance_hand_and_brute_force() -> None:
    # H_HAND (3) vs R_HAND (4) in 16 neurons: observed 1, expected 3 * 4 / 16 = 0.75
    # P(X >= 1) = 1 - C(13, 4) / C(16, 4) = 1 - 715 / 1820 = 1105 / 1820 = 0.607142857...
    out = S.overlap_significance(H_HAND, R_HAND)
    assert out["observed"] == 1
    assert out["expected"] == pytest.approx(0.75)
    assert out["p_value"] == pytest.approx(1105 / 1820)
    rng = np.random.default_rng(9)
    for _ in range(25):
        shape = (int(rng.integers(1, 5)), int(rng.integers(2, 12)))
        a = rng.random(shape) < rng.random()
        b = rng.random(shape) < rng.random()
        res = S.overlap_significance(a, b)
        obs = int((a & b).sum())
        assert res["observed"] == obs
        assert res["expected"] == pytest.approx(a.sum() * b.sum() / a.size)
        expect = float(_brute_hypergeom_sf(obs, a.size, int(a.sum()), int(b.sum())))
        assert res["p_value"] == pytest.approx(expect, rel=1e-9, abs=1e-12)


def test_overlap_significance_strong_overlap_is_significant() -> None:
    a = _mask((10, 10), [(9, i) for i in range(10)])
    out = S.overlap_significance(a, a)
    # 10 of 10 shared in 100: p = 1 / C(100, 10)
    assert out["p_value"] == pytest.approx(1 / math.comb(100, 10))
    assert S.overlap_significance(a, np.zeros_like(a))["p_value"] == 1.0
