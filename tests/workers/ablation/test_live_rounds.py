"""Streamed toggles: rounds of probe pairs in a seeded random order, the same answer as one whole toggle,
a running Δ that is the mean over the pairs done, and work that stops when asked."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from workers.ablation.live import LiveAblationSession, Stopped
from workers.ablation.live_stats import running_delta

MAX_LEN = 48
NAMES = ["tiny-gpt2", "tiny-llama", "tiny-bert"]


def _set(seed: int, layers: tuple[int, ...] = (0, 1), k: int = 30) -> dict[int, list[int]]:
    rng = np.random.default_rng(seed)
    return {layer: sorted(rng.choice(128, size=k, replace=False).tolist()) for layer in layers}


@pytest.fixture(scope="module")
def pairs(tiny_models: dict[str, Any], probe_pairs: list[Any]) -> dict[str, Any]:
    return {name: (LiveAblationSession.from_pairs(loaded, probe_pairs, per_objective=10, max_length=MAX_LEN,
                                                  batch_size=3, round_pairs=2),
                   LiveAblationSession.from_pairs(loaded, probe_pairs, per_objective=10, max_length=MAX_LEN,
                                                  batch_size=5))
            for name, loaded in tiny_models.items() if name in NAMES}


@pytest.mark.parametrize("name", NAMES)
def test_rounds_cover_every_pair_once_and_end_with_the_whole_answer(pairs: dict[str, Any], name: str) -> None:
    rounded, whole = pairs[name]
    n = {o: int(rounded._chosen[o].size) for o in rounded.objectives}
    assert len(rounded.rounds) == -(-max(n.values()) // 2) >= 3  # 2 pairs per objective a round
    for o in rounded.objectives:
        seen = np.concatenate([r[o] for r in rounded.round_pairs])
        assert sorted(seen.tolist()) == list(range(n[o]))
        # a seeded random order, not the probe set's order
        assert seen.tolist() != list(range(n[o]))
    rounded.clear_cache()
    steps = list(rounded.toggle_rounds(_set(1)))
    k = len(rounded.rounds)
    assert [s["round"] for s in steps] == list(range(1, k + 1))
    assert [s["final"] for s in steps] == [False] * (k - 1) + [True]
    final = steps[-1]
    np.testing.assert_allclose(final["rewards"], whole.rewards(_set(1)), rtol=1e-5, atol=1e-5)
    want = whole.toggle(_set(1))["objectives"]
    for o, v in final["answer"]["objectives"].items():
        assert v["delta"]["margin"] == pytest.approx(want[o]["delta"]["margin"], abs=1e-5)
        assert v["delta"]["accuracy"] == pytest.approx(want[o]["delta"]["accuracy"])
    # Before the end, only the rounds' texts are computed and the running Δ is their mean.
    mid = steps[1]
    for o in rounded.objectives:
        done = mid["pairs_done"][o]
        assert len(done) == 4
        base, abl = rounded.pair_margins(mid["rewards"], o, done)
        assert np.isfinite(abl).all()
        full_base, full_abl = whole.pair_margins(whole.rewards(_set(1)), o, done)
        np.testing.assert_allclose(abl, full_abl, rtol=1e-5, atol=1e-5)
        run = running_delta(base, abl, n_total=n[o])
        assert run["n_done"] == 4 and run["delta_margin"] == pytest.approx(float((abl - base).mean()))
    # The final answer was cached: the next identical toggle is one cached round.
    again = list(rounded.toggle_rounds(_set(1)))
    assert len(again) == 1 and again[0]["path"] == "answer_cache"


def test_a_stop_request_ends_the_work_before_the_next_batch_and_caches_nothing(pairs: dict[str, Any]) -> None:
    rounded, _ = pairs["tiny-llama"]
    rounded.clear_cache()
    asked = {"n": 0}
    stop_after = 3  # batches computed before the stop

    def should_stop() -> bool:
        asked["n"] += 1
        return asked["n"] > stop_after

    got = []
    with pytest.raises(Stopped):
        for step in rounded.toggle_rounds(_set(2), should_stop=should_stop):
            got.append(step)
    batches_per_round = [len(r) for r in rounded.rounds]
    assert len(got) < len(rounded.rounds)
    assert sum(batches_per_round[:len(got)]) <= stop_after
    assert asked["n"] == stop_after + 1  # asked once more, then nothing more was computed
    assert rounded.info()["answer_cache_entries"] == 0


def test_last_layer_sets_and_the_identity_come_as_one_final_round(pairs: dict[str, Any]) -> None:
    rounded, whole = pairs["tiny-gpt2"]
    rounded.clear_cache()
    last = {1: _set(3)[1]}
    steps = list(rounded.toggle_rounds(last))
    assert len(steps) == 1 and steps[0]["final"]
    np.testing.assert_allclose(steps[0]["rewards"], whole.rewards(last), rtol=1e-5, atol=1e-5)
    ident = list(rounded.toggle_rounds({}))
    assert len(ident) == 1 and ident[0]["path"] == "identity"
