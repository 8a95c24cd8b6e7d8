"""Selection with layers left out (layers frozen in training): `top_percent` / `random_set`'s `exclude` and the
experiments' `exclude_layers`. The oracle is selection on the remaining layers alone; an exclusion that leaves
nothing out must give exactly the old answer."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from workers.ablation.engine import Ablation
from workers.ablation.experiments import Probe, experiment_a, experiment_b, experiment_c
from workers.data.schema import PreferencePair
from workers.neurons import selection as S

SHAPE = (5, 12)
FROZEN = (0, 1)


def _scores(seed: int = 0, ties: bool = False) -> np.ndarray:
    s = np.random.default_rng(seed).normal(0.0, 1.0, SHAPE)
    return np.round(s, 1) if ties else s


def test_layer_exclusion_marks_whole_layers() -> None:
    ex = S.layer_exclusion(SHAPE, [1, 3, 7, -1])
    assert ex.shape == SHAPE and ex.dtype == np.bool_
    assert ex.all(axis=1).tolist() == [False, True, False, True, False] and int(ex.sum()) == 2 * SHAPE[1]
    assert not S.layer_exclusion(SHAPE, []).any()


@pytest.mark.parametrize("p", [0.0, 2.5, 10.0, 33.0, 50.0, 100.0])
@pytest.mark.parametrize("ties", [False, True])
def test_excluded_layers_are_never_selected_and_p_counts_the_rest(p: float, ties: bool) -> None:
    s = _scores(3, ties)
    s[0, 4] = np.nan  # a frozen layer's score is not looked at
    got = S.top_percent(s, p, exclude=S.layer_exclusion(SHAPE, FROZEN))
    want = S.top_percent(s[len(FROZEN):], p)
    assert not got.mask[: len(FROZEN)].any()
    np.testing.assert_array_equal(got.mask[len(FROZEN):], want.mask)
    assert (got.requested, got.selected, got.tied, got.p) == (want.requested, want.selected, want.tied, p)
    assert got.requested == S.requested_count((SHAPE[0] - len(FROZEN)) * SHAPE[1], p)
    assert got.threshold == want.threshold


@pytest.mark.parametrize("p", [0.0, 5.0, 10.0, 37.5, 100.0])
def test_an_exclusion_of_nothing_is_the_old_selection(p: float) -> None:
    s = _scores(5, ties=True)
    old = S.top_percent(s, p)
    for exclude in (None, np.zeros(SHAPE, dtype=bool)):
        new = S.top_percent(s, p, exclude=exclude)
        np.testing.assert_array_equal(new.mask, old.mask)
        assert (new.threshold, new.requested, new.selected, new.tied) == \
            (old.threshold, old.requested, old.selected, old.tied)
        np.testing.assert_array_equal(S.random_set(SHAPE, p, 4, exclude=exclude), S.random_set(SHAPE, p, 4))


def test_excluding_everything_selects_nothing_and_bad_masks_are_refused() -> None:
    s = _scores()
    none = S.top_percent(s, 50, exclude=np.ones(SHAPE, dtype=bool))
    assert not none.mask.any() and (none.requested, none.selected) == (0, 0)
    with pytest.raises(ValueError, match="boolean mask of shape"):
        S.top_percent(s, 10, exclude=np.zeros((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="NaN"):  # a NaN in a selectable layer is still an error
        bad = s.copy()
        bad[3, 0] = np.nan
        S.top_percent(bad, 10, exclude=S.layer_exclusion(SHAPE, FROZEN))


def test_random_sets_draw_from_the_remaining_layers_only() -> None:
    ex = S.layer_exclusion(SHAPE, FROZEN)
    eligible = (SHAPE[0] - len(FROZEN)) * SHAPE[1]
    for seed in range(20):
        m = S.random_set(SHAPE, 25, seed, exclude=ex)
        assert not m[: len(FROZEN)].any() and int(m.sum()) == S.requested_count(eligible, 25)
    np.testing.assert_array_equal(S.random_set(SHAPE, 25, 3, exclude=ex), S.random_set(SHAPE, 25, 3, exclude=ex))


# -- the experiments ------------------------------------------------------------------------------------------
def _probe() -> Probe:
    pairs = [PreferencePair(pair_id=f"p{i}", prompt=f"q{i}", chosen=f"good {i}", rejected=f"bad {i}",
                            objective="helpful" if i % 2 == 0 else "harmless", source="synthetic",
                            subset=f"s{i % 4}", split="test") for i in range(24)]
    return Probe.from_pairs(pairs)


class Recorder:
    """A scorer whose reward moves with the ablated neurons' weights; it keeps every set it was asked for."""

    def __init__(self, probe: Probe) -> None:
        rng = np.random.default_rng(0)
        self.base = rng.normal(0.3, 1.0, len(probe.texts)) * np.where(probe.text_side == "chosen", 1.0, -1.0)
        self.weight = rng.normal(0.0, 1.0, SHAPE)
        self.masks: list[np.ndarray] = []

    def __call__(self, ablations: Sequence[Ablation | None]) -> list[np.ndarray]:
        out = []
        for a in ablations:
            if a is None:
                out.append(self.base.copy())
                continue
            mask = a.to_mask(SHAPE)
            self.masks.append(mask)
            out.append(self.base - 0.05 * float((self.weight * mask).sum()))
        return out


def _run(exclude_layers: Sequence[int]) -> tuple[list[np.ndarray], list, dict, dict]:
    probe = _probe()
    rec = Recorder(probe)
    a = experiment_a(probe, rec, {"magnitude": _scores(1), "change": _scores(2)}, percents=(10.0, 30.0),
                     seeds=(0, 1), n_boot=50, exclude_layers=exclude_layers)
    b = experiment_b(probe, rec, _scores(1), p=20.0, seeds=(0, 1), n_boot=50, exclude_layers=exclude_layers)
    c = experiment_c(probe, rec, _scores(1), _scores(2), percents=(20.0,), seeds=(0,), n_boot=50,
                     exclude_layers=exclude_layers)
    return rec.masks, a, b, c


def test_experiments_leave_excluded_layers_out_of_every_set() -> None:
    masks, a, b, c = _run(FROZEN)
    assert masks and all(not m[: len(FROZEN)].any() for m in masks)  # selected, random and control sets
    eligible = (SHAPE[0] - len(FROZEN)) * SHAPE[1]
    for row in a:  # p% of the 36 neurons of layers 2-4, for the random sets and the score-based ones
        if row["selection"] == "random":
            assert row["n_neurons"] == S.requested_count(eligible, row["p"])
        else:
            assert row["n_requested"] == S.requested_count(eligible, row["p"])
    ex = S.layer_exclusion(SHAPE, FROZEN)
    want_b = S.top_percent(_scores(1), 20.0, exclude=ex).mask
    np.testing.assert_array_equal(S.dict_to_mask(b["neuron_set"], SHAPE), want_b)
    h, r = (S.top_percent(_scores(k), 20.0, exclude=ex).mask for k in (1, 2))
    np.testing.assert_array_equal(S.dict_to_mask(c["neuron_sets"]["shared@20"], SHAPE), h & r)


def test_experiments_without_exclusion_are_unchanged() -> None:
    masks, a, b, c = _run(())
    probe = _probe()
    rec = Recorder(probe)
    a_old = experiment_a(probe, rec, {"magnitude": _scores(1), "change": _scores(2)}, percents=(10.0, 30.0),
                         seeds=(0, 1), n_boot=50)
    b_old = experiment_b(probe, rec, _scores(1), p=20.0, seeds=(0, 1), n_boot=50)
    c_old = experiment_c(probe, rec, _scores(1), _scores(2), percents=(20.0,), seeds=(0,), n_boot=50)
    assert a == a_old and b == b_old and c["rows"] == c_old["rows"] and c["neuron_sets"] == c_old["neuron_sets"]
    assert all(np.array_equal(x, y) for x, y in zip(masks, rec.masks, strict=True))
