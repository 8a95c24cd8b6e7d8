"""Experiments A/B/C helpers on a synthetic scorer (pure numpy), plus one check against a real tiny model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from workers.ablation.engine import Ablation
from workers.ablation.experiments import (
    Probe,
    compare,
    experiment_a,
    experiment_b,
    experiment_c,
    full_scorer,
    layer_matched_controls,
    live_scorer,
    run_with_controls,
)
from workers.data.schema import PreferencePair
from workers.neurons import selection

SHAPE = (3, 20)


def _pairs() -> list[PreferencePair]:
    """40 single-pair items in 4 subsets (2 helpful-type, 2 harmless-type) plus one best-of-3 item."""
    out = []
    for i in range(40):
        objective = "helpful" if i % 2 == 0 else "harmless"
        subset = f"{objective}/{'ab'[(i // 2) % 2]}"
        out.append(PreferencePair(pair_id=f"p{i}", prompt=f"q{i}", chosen=f"good {i}", rejected=f"bad {i}",
                                  objective=objective, source="synthetic", subset=subset, split="test"))
    out += [PreferencePair(pair_id=f"b{j}", prompt="qb", chosen="best", rejected=f"worse {j}",
                           objective="helpful", source="synthetic", subset="helpful/a", split="test",
                           item_id="bo3") for j in range(3)]
    return out


class FakeRM:
    """Reward = a per-text base + Σ over ablated neurons of weight × a per-text sensitivity (seeded)."""

    def __init__(self, probe: Probe, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        n = len(probe.texts)
        self.base = rng.normal(0.3, 1.0, n) * np.where(probe.text_side == "chosen", 1.0, -1.0)
        self.weight = rng.normal(0.0, 1.0, SHAPE) * np.linspace(0.2, 1.0, SHAPE[0])[:, None]
        self.sens = rng.normal(0.0, 0.5, (n, 1))
        self.calls: list[int] = []

    def __call__(self, ablations: Sequence[Ablation | None]) -> list[np.ndarray]:
        self.calls.append(len(ablations))
        out = []
        for a in ablations:
            if a is None:
                out.append(self.base.copy())
                continue
            effect = float((self.weight * a.to_mask(SHAPE)).sum())
            out.append(self.base + self.sens[:, 0] * effect)
        return out


@pytest.fixture
def probe() -> Probe:
    return Probe.from_pairs(_pairs())


def test_probe_groups_items_and_applies_the_strict_rule(probe: Probe) -> None:
    assert probe.n_items == 41 and len(probe.texts) == 86
    groups = probe.groups()
    assert groups["all"].sum() == 41 and groups["objective:helpful"].sum() == 21
    assert probe.group_type("subset:harmless/a") == "harmless" and probe.group_type("all") is None
    rewards = np.tile([1.0, 0.0], 43)
    rewards[-2] = 0.0  # the best-of-3 item: one rejected ties its chosen -> wrong
    correct = probe.correct(rewards)
    assert correct.sum() == 40 and not correct[list(probe.item_ids).index("bo3")]


def test_controls_are_layer_matched_and_seeded() -> None:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[0, :3] = True
    mask[2, 5:15] = True
    abl = Ablation(mask, mode="scale", factor=0.5)
    controls = layer_matched_controls(abl, SHAPE, seeds=[0, 1, 2])
    for c in controls:
        assert np.array_equal(selection.layer_counts(c.to_mask(SHAPE)), selection.layer_counts(mask))
        assert c.mode == "scale" and c.factor == 0.5
    assert len({c.key() for c in controls}) == 3
    again = layer_matched_controls(abl, SHAPE, seeds=[0, 1, 2])
    assert [c.key() for c in again] == [c.key() for c in controls]


def test_compare_brackets_the_estimate_and_lists_the_flips(probe: Probe) -> None:
    rm = FakeRM(probe)
    mask = selection.top_percent(np.abs(rm.weight), 20).mask
    res = run_with_controls(probe, rm, Ablation(mask), SHAPE, seeds=(0, 1, 2), n_boot=300)
    assert rm.calls == [5]  # baseline, the set and three controls in one scorer call
    rows = {r["group"]: r for r in res["rows"]}
    assert {"all", "objective:helpful", "objective:harmless", "subset:helpful/a"} <= set(rows)
    for r in rows.values():
        assert r["ci_lo"] <= r["delta"] <= r["ci_hi"]
        assert r["excess_ci_lo"] <= r["excess"] <= r["excess_ci_hi"]
        assert r["delta_per_neuron"] == pytest.approx(r["delta"] / mask.sum())
        assert len(r["random_delta_per_seed"]) == 3
        assert r["random_delta_mean"] == pytest.approx(np.mean(r["random_delta_per_seed"]))
    all_row = rows["all"]
    c0, c1 = res["correct_before"], res["correct_after"]
    assert all_row["n_flipped"] == len(res["flips"]) == int((c0 != c1).sum()) > 0
    for f in res["flips"]:
        i = list(probe.item_ids).index(f["item_id"])
        assert f["before"] == bool(c0[i]) and f["after"] == bool(c1[i])
        assert (f["margin_after"] > 0) == f["after"]
    same = compare(probe, rm.base, rm.base, n_neurons=0, n_boot=50)
    assert same["flips"] == [] and all(r["delta"] == 0 for r in same["rows"])


def test_experiment_a_rows(probe: Probe) -> None:
    rm = FakeRM(probe)
    scores = {"magnitude": np.abs(rm.weight), "change": rm.weight**2 + 0.01 * np.arange(60).reshape(SHAPE)}
    rows = experiment_a(probe, rm, scores, percents=(0, 10, 100), seeds=(0, 1), n_boot=50)
    assert len(rows) == 3 * (2 + 2)
    at0 = [r for r in rows if r["p"] == 0]
    assert all(r["delta"] == 0 and r["n_neurons"] == 0 for r in at0)
    full = [r for r in rows if r["p"] == 100]
    assert all(r["n_neurons"] == 60 for r in full)
    assert len({r["acc"] for r in full}) == 1  # every selection is the whole model at p = 100
    mag10 = next(r for r in rows if r["p"] == 10 and r["selection"] == "magnitude")
    assert mag10["n_selected"] == 6 and "random_delta_mean" in mag10
    assert {r["seed"] for r in rows if r["selection"] == "random"} == {0, 1}


def test_experiment_b_splits_by_subset_type(probe: Probe) -> None:
    rm = FakeRM(probe)
    out = experiment_b(probe, rm, np.abs(rm.weight), p=10, seeds=(0, 1, 2), n_boot=50)
    subsets = [r for r in out["rows"] if r["group"].startswith("subset:")]
    assert {r["group_type"] for r in subsets} == {"helpful", "harmless"}
    assert all(r["n_neurons"] == 6 and r["experiment"] == "B" for r in out["rows"])
    assert sum(len(v) for v in out["neuron_set"].values()) == 6


def test_experiment_c_specific_and_shared_sets_with_transferability(probe: Probe) -> None:
    rm = FakeRM(probe)
    rng = np.random.default_rng(7)
    helpful = np.abs(rm.weight) + rng.random(SHAPE)
    harmless = np.abs(rm.weight) + rng.random(SHAPE)
    he = rng.random(probe.n_items) < 0.6
    ha = rng.random(probe.n_items) < 0.6
    out = experiment_c(probe, rm, helpful, harmless, single_rm_correct={"helpful": he, "harmless": ha},
                       percents=(10, 20), seeds=(0, 1), n_boot=50)
    rows = [r for r in out["rows"] if r["group"] == "all"]
    assert {(r["set"], r["p"]) for r in rows} == {(s, p) for s in ("helpful_specific", "harmless_specific",
                                                                   "shared") for p in (10.0, 20.0)}
    for r in rows:
        h = selection.top_percent(helpful, r["p"]).mask
        a = selection.top_percent(harmless, r["p"]).mask
        expected = {"helpful_specific": h & ~a, "harmless_specific": a & ~h, "shared": h & a}[r["set"]]
        assert r["n_neurons"] == expected.sum()
        assert 0 <= r["transfer"] <= 1
        assert r["transfer_delta"] == pytest.approx(r["transfer"] - r["transfer0"])
    with pytest.raises(ValueError, match="align"):
        experiment_c(probe, rm, helpful, harmless, single_rm_correct={"helpful": he[:3], "harmless": ha[:3]})


def test_live_and_full_scorers_agree_on_a_tiny_model(tiny_models: dict[str, Any],
                                                     probe_pairs: list[Any]) -> None:
    loaded = tiny_models["tiny-gpt2"]
    probe = Probe.from_pairs(probe_pairs[:4])
    live = live_scorer(loaded, probe, max_length=48, batch_size=3)
    full = full_scorer(loaded, probe, max_length=48)
    abls: list[Ablation | None] = [None, Ablation({0: list(range(0, 128, 2))}), Ablation({1: [1, 2, 3]})]
    for a, b in zip(live(abls), full(abls), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)
