"""The live session's cached-prefix path must equal a full forward with hooks, and leave no trace."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest

from workers.ablation.engine import Ablation, score_with_ablation
from workers.ablation.live import LiveAblationSession, fast_path_family
from workers.models.arch import live_fast_path
from workers.models.scoring import score_texts

MAX_LEN = 48
TOL = 1e-5
NAMES = ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-bert"]


@pytest.fixture(scope="module")
def sessions(tiny_models: dict[str, Any], probe_pairs: list[Any]) -> dict[str, LiveAblationSession]:
    return {name: LiveAblationSession.from_pairs(loaded, probe_pairs, per_objective=6, max_length=MAX_LEN,
                                                 batch_size=5)
            for name, loaded in tiny_models.items()}


def _random_set(layers: list[int], seed: int, k: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((2, 128), dtype=bool)
    for layer in layers:
        mask[layer, rng.choice(128, size=k, replace=False)] = True
    return mask


def _hooks(loaded: Any) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in loaded.model.modules())


PLACES = {"early": [0], "late": [1], "both": [0, 1]}
CASES = [pytest.param(name, layers, "zero", id=f"{name}-{where}-zero")
         for name in NAMES for where, layers in PLACES.items()] + \
    [pytest.param(name, [0, 1], mode, id=f"{name}-both-{mode}")
     for name in ("tiny-llama", "tiny-bert") for mode in ("scale", "mean")]


@pytest.mark.parametrize(("name", "layers", "mode"), CASES)
def test_cached_prefix_path_equals_full_forward_with_hooks(sessions: dict[str, LiveAblationSession],
                                                           name: str, layers: list[int], mode: str) -> None:
    s = sessions[name]
    assert s.family is not None and s.info()["fast_path"]
    means = np.random.default_rng(3).normal(size=(2, 128))
    mask = _random_set(layers, seed=len(layers))
    abl = Ablation(mask, mode=mode, factor=3.0, means=means)  # type: ignore[arg-type]
    fast = s.rewards(abl)
    reference = score_with_ablation(s.loaded, s.texts, abl, max_length=MAX_LEN)
    np.testing.assert_allclose(fast, reference, atol=TOL, rtol=0)
    assert np.abs(fast - s.baseline).max() > 3e-5  # the ablation really did something


@pytest.mark.parametrize("name", NAMES)
def test_baseline_matches_score_texts_and_hooks_are_gone_after_each_call(
        sessions: dict[str, LiveAblationSession], name: str) -> None:
    s = sessions[name]
    plain = score_texts(s.loaded, s.texts, max_length=MAX_LEN)
    np.testing.assert_allclose(s.baseline, plain, atol=TOL, rtol=0)
    np.testing.assert_allclose(s.baseline_full, plain, atol=1e-6, rtol=0)
    before = _hooks(s.loaded)
    s.toggle(_random_set([0, 1], seed=11))
    s.toggle(_random_set([1], seed=12), path="full")
    assert _hooks(s.loaded) == before
    assert np.array_equal(score_texts(s.loaded, s.texts, max_length=MAX_LEN), plain)


def test_the_answer_reports_each_objective_against_its_baseline(
        sessions: dict[str, LiveAblationSession]) -> None:
    s = sessions["tiny-gpt2"]
    mask = _random_set([0, 1], seed=5, k=90)
    ans = s.toggle(mask)
    rewards = s.rewards(mask)
    assert set(ans["objectives"]) == {"helpful", "harmless"} == set(s.objectives)
    for o, (c, r) in s.pair_rewards(rewards).items():
        entry = ans["objectives"][o]
        bc, br = s.pair_rewards(s.baseline)[o]
        assert entry["n_pairs"] == 6
        assert entry["baseline"]["accuracy"] == pytest.approx(float(np.mean(bc > br)))
        assert entry["ablated"]["accuracy"] == pytest.approx(float(np.mean(c > r)))
        assert entry["delta"]["chosen"] == pytest.approx(float(np.mean(c - bc)))
        assert entry["delta"]["rejected"] == pytest.approx(float(np.mean(r - br)))
        delta = entry["delta"]
        assert delta["margin"] == pytest.approx(delta["chosen"] - delta["rejected"])
        acc0, acc1 = entry["baseline"]["accuracy"], entry["ablated"]["accuracy"]
        assert delta["accuracy"] == pytest.approx(acc1 - acc0)
        flips = entry["flips"]
        assert flips["to_right"] - flips["to_wrong"] == round(entry["delta"]["accuracy"] * 6)
    assert ans["ablation"]["n_neurons"] == 180
    assert ans["timing"]["seconds"] >= 0 and ans["timing"]["first_layer"] == 0


def test_answer_cache_hits_on_same_content_in_any_form(sessions: dict[str, LiveAblationSession]) -> None:
    s = sessions["tiny-llama"]
    s.clear_cache()
    mask = _random_set([1], seed=21)
    first = s.toggle(mask)
    assert first["timing"]["path"] == "cached_prefix" and first["timing"]["recomputed_layers"] == 1
    as_dict = {str(k): np.flatnonzero(mask[k]).tolist() for k in range(2) if mask[k].any()}
    again = s.toggle(as_dict)
    assert again["timing"]["path"] == "answer_cache"
    assert again["objectives"] == first["objectives"]
    assert again["ablation"]["key"] == first["ablation"]["key"]
    other = s.toggle(mask, mode="scale", factor=0.5)
    assert other["timing"]["path"] == "cached_prefix" and other["ablation"]["key"] != first["ablation"]["key"]


def test_identity_ablations_change_nothing(sessions: dict[str, LiveAblationSession]) -> None:
    s = sessions["tiny-qwen2"]
    unit: dict[str, Any] = {"mode": "scale", "factor": 1.0}
    cases: list[tuple[Any, dict[str, Any]]] = [({}, {}), (_random_set([0, 1], seed=2), unit)]
    for spec, opts in cases:
        ans = s.toggle(spec, **opts)
        assert ans["timing"]["path"] == "identity"
        for entry in ans["objectives"].values():
            assert entry["delta"] == {"chosen": 0.0, "rejected": 0.0, "margin": 0.0, "accuracy": 0.0}


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert"])
def test_batched_conditions_equal_one_at_a_time(sessions: dict[str, LiveAblationSession], name: str) -> None:
    s = sessions[name]
    specs = [_random_set([0], seed=31), _random_set([1], seed=32), _random_set([0, 1], seed=33),
             _random_set([0], seed=34)]
    s.clear_cache()
    together = s.rewards_many(specs)
    s.clear_cache()
    for spec, got in zip(specs, together, strict=True):
        np.testing.assert_allclose(got, s.rewards(spec), atol=TOL, rtol=0)
    answers = s.toggle_many(specs)
    assert [a["timing"]["path"] for a in answers] == ["answer_cache"] * 4


def test_lazy_prefix_and_no_fast_path_agree_with_the_cached_session(
        tiny_models: dict[str, Any], probe_pairs: list[Any],
        sessions: dict[str, LiveAblationSession]) -> None:
    loaded = tiny_models["tiny-llama"]
    ref = sessions["tiny-llama"]
    opts: dict[str, Any] = {"per_objective": 6, "max_length": MAX_LEN, "batch_size": 5}
    lazy = LiveAblationSession.from_pairs(loaded, probe_pairs, prefix_cache_mb=0, **opts)
    slow = LiveAblationSession.from_pairs(loaded, probe_pairs, fast=False, **opts)
    assert lazy.info()["prefix_cache_layers"] == [] and slow.family is None
    mask = _random_set([0, 1], seed=41)
    assert slow.toggle(mask)["timing"]["path"] == "full"
    np.testing.assert_allclose(lazy.rewards(mask), ref.rewards(mask), atol=TOL, rtol=0)
    np.testing.assert_allclose(slow.rewards(mask), ref.rewards(mask), atol=TOL, rtol=0)
    np.testing.assert_allclose(ref.rewards(mask, path="full"), ref.rewards(mask), atol=TOL, rtol=0)
    lazy._prefix.budget = 2**30  # now a lazily computed layer fits: it is computed once and kept
    other = _random_set([0], seed=42)
    np.testing.assert_allclose(lazy.rewards(other), ref.rewards(other), atol=TOL, rtol=0)
    assert lazy.info()["prefix_cache_layers"] == [0]


def test_fast_path_families() -> None:
    class Other:
        config = None

    assert fast_path_family(Other()) is None  # type: ignore[arg-type]
    chosen = live_fast_path(Other())  # type: ignore[arg-type]
    assert chosen.ops is None and "Other" in str(chosen.reason)


def test_a_class_without_fast_path_says_so_and_answers_by_full_forwards(
        tiny_models: dict[str, Any], probe_pairs: list[Any]) -> None:
    """The fast path is per class: a subclass it does not know takes full forwards and names itself."""
    loaded = tiny_models["tiny-bert"]
    model = copy.deepcopy(loaded.model)
    model.__class__ = type("UnknownBertForSequenceClassification", (type(model),), {})
    other = dataclasses.replace(loaded, model=model)
    s = LiveAblationSession.from_pairs(other, probe_pairs, per_objective=2, max_length=MAX_LEN)
    assert s.family is None and not s.info()["fast_path"]
    assert "UnknownBertForSequenceClassification" in str(s.info()["fallback_reason"])
    mask = _random_set([0, 1], seed=61)
    assert s.toggle(mask)["timing"]["path"] == "full"
    reference = score_with_ablation(other, s.texts, Ablation(mask), max_length=MAX_LEN)
    np.testing.assert_allclose(s.rewards(mask), reference, atol=TOL, rtol=0)


def test_probe_pairs_may_be_text_tuples(tiny_models: dict[str, Any]) -> None:
    s = LiveAblationSession(tiny_models["tiny-bert"], {"x": [("a good answer", "a bad one")]}, max_length=16)
    assert s.objectives == ["x"] and s.texts == ["a good answer", "a bad one"]
    with pytest.raises(ValueError, match="empty"):
        LiveAblationSession(tiny_models["tiny-bert"], {"x": []})


def test_a_fast_path_that_disagrees_with_the_model_falls_back(
        tiny_models: dict[str, Any], probe_pairs: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    from workers.models.arch.bert import BertLiveOps

    real_head = BertLiveOps.head
    monkeypatch.setattr(BertLiveOps, "head", lambda self, model, h: real_head(self, model, h) + 1.0)
    s = LiveAblationSession.from_pairs(tiny_models["tiny-bert"], probe_pairs, per_objective=2,
                                       max_length=MAX_LEN)
    assert s.family is None and "disagreed" in str(s.info()["fallback_reason"])
    mask = _random_set([1], seed=51)
    reference = score_with_ablation(s.loaded, s.texts, Ablation(mask), max_length=MAX_LEN)
    np.testing.assert_allclose(s.rewards(mask), reference, atol=TOL, rtol=0)
    assert s.toggle(_random_set([1], seed=52))["timing"]["path"] == "full"
