"""Bradley-Terry training on a learnable fixture: regimes, eval split, truncation, seeds, best weights."""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from workers.data.schema import PreferencePair
from workers.data.text import pair_texts
from workers.models.registry import load_reward_model
from workers.models.scoring import score_texts
from workers.training.trainer import (
    _Recorder,
    encode_pairs,
    select_regime,
    split_train_eval,
    train_reward_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _rewards(loaded: Any, pairs: list[PreferencePair], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    texts = [t for p in pairs for t in pair_texts(p)]
    r = score_texts(loaded, texts, max_length=max_length, batch_size=32)
    return r[0::2], r[1::2]


# --------------------------------------------------------------------------- data side, no training


def test_regime_selection_picks_its_objectives(pairs_factory: Any) -> None:
    pairs = pairs_factory(10)
    assert [p.objective for p in select_regime(pairs, "helpful")] == ["helpful"] * 10
    assert [p.objective for p in select_regime(pairs, "harmless")] == ["harmless"] * 10
    assert select_regime(pairs, "mixed") == pairs
    with pytest.raises(ValueError, match="regime"):
        select_regime(pairs, "both")


def _with_shared_prompts(pairs_factory: Any) -> list[PreferencePair]:
    """RM-Bench style: three pairs (three items) per prompt, which must never straddle the split."""
    out = []
    for p in pairs_factory(30):
        for k in range(3):
            out.append(replace(p, pair_id=f"{p.pair_id}-{k}", item_id=f"{p.pair_id}-{k}",
                               chosen=f"{p.chosen} v{k}"))
    return out


def test_eval_split_is_prompt_disjoint_stable_and_per_objective(pairs_factory: Any) -> None:
    pairs = _with_shared_prompts(pairs_factory)
    train, held = split_train_eval(pairs, 0.2)
    assert len(train) + len(held) == len(pairs)
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    for objective in ("helpful", "harmless"):
        n_held = sum(p.objective == objective for p in held)
        assert 0.15 * 90 <= n_held <= 0.3 * 90
    # Independent of input order and of the regime: mixed holds out the union of the single ones.
    shuffled = pairs[:]
    random.Random(1).shuffle(shuffled)
    assert {p.pair_id for p in split_train_eval(shuffled, 0.2)[1]} == {p.pair_id for p in held}
    union = {p.pair_id for r in ("helpful", "harmless")
             for p in split_train_eval(select_regime(pairs, r), 0.2)[1]}
    assert union == {p.pair_id for p in held}
    assert split_train_eval(pairs, 0.0) == (pairs, [])


def test_left_truncation_keeps_the_final_turn_and_drop_mode_drops(pairs_factory: Any, fast: Any) -> None:
    tok = load_reward_model("tiny-gpt2", device="cpu").tokenizer
    long = replace(pairs_factory(1)[0], prompt="word " * 200)
    short = pairs_factory(1, seed=3)[0]
    enc = encode_pairs(tok, [long, short], replace(fast, max_length=16))
    assert enc.kept == [0, 1] and all(len(ids) <= 16 for ids in enc.chosen_ids + enc.rejected_ids)
    full = tok(pair_texts(long)[0])["input_ids"]
    assert enc.chosen_ids[0][-8:] == full[-8:]  # the end of the dialogue (the response) survives
    dropped = encode_pairs(tok, [long, short], replace(fast, max_length=64, truncation="drop"))
    assert dropped.kept == [1] and dropped.n_dropped == 1


def test_eos_is_appended_once_when_asked(pairs_factory: Any, fast: Any) -> None:
    tok = load_reward_model("tiny-llama", device="cpu").tokenizer  # a fresh tokenizer: safe to change
    tok.eos_token = "[MASK]"  # the tiny vocabulary has no EOS of its own; any distinct token will do
    eos = tok.eos_token_id
    enc = encode_pairs(tok, pairs_factory(2), replace(fast, append_eos=True, max_length=12))
    assert all(ids[-1] == eos and ids.count(eos) == 1 and len(ids) <= 12 for ids in enc.chosen_ids)
    plain = encode_pairs(tok, pairs_factory(2), replace(fast, append_eos=False))
    assert all(eos not in ids for ids in plain.chosen_ids + plain.rejected_ids)


# --------------------------------------------------------------------------- training


@pytest.mark.parametrize("regime", ["helpful", "harmless", "mixed"])
@pytest.mark.parametrize("model", ["tiny-gpt2", "tiny-llama", "tiny-bert"])
def test_tiny_models_learn_each_regime(model: str, regime: str, pairs_factory: Any, fast: Any,
                                       recorder: Any) -> None:
    pairs = pairs_factory(48)
    loaded = load_reward_model(model, device="cpu", seed=0)
    result = train_reward_model(loaded, pairs, fast, regime=regime, seed=0, progress=recorder)
    mine = select_regime(pairs, regime)
    train, held = split_train_eval(mine, fast.eval_fraction)
    assert (result.n_train, result.n_eval) == (len(train), len(held))
    evals = [r for r in result.history if r["eval_loss"] is not None]
    assert evals[0]["step"] == 0 and evals[0]["eval_loss"] > 0.6  # the untrained reference point
    assert result.metrics["final_eval_loss"] < evals[0]["eval_loss"] - 0.2
    losses = [r["train_loss"] for r in result.history if r["train_loss"] is not None]
    assert np.mean(losses[-3:]) < losses[0] - 0.2
    chosen, rejected = _rewards(loaded, train, fast.max_length)
    assert np.mean(chosen > rejected) > 0.7  # training accuracy, read back through the scorer
    assert recorder.updates[-1][0] == 1.0
    assert any("loss" in m and "acc" in m for _, _, m in recorder.updates)
    assert any("eval_loss" in m for _, _, m in recorder.updates)


def test_same_seed_same_run_other_seed_other_run(pairs_factory: Any, fast: Any) -> None:
    pairs = pairs_factory(24)
    settings = replace(fast, epochs=1.0)

    def run(seed: int) -> Any:
        return train_reward_model(load_reward_model("tiny-gpt2", device="cpu", seed=seed), pairs, settings,
                                  regime="mixed", seed=seed)

    a, b, c = run(0), run(0), run(1)
    assert abs(a.metrics["final_train_loss"] - b.metrics["final_train_loss"]) < 1e-6
    assert abs(a.metrics["final_eval_loss"] - b.metrics["final_eval_loss"]) < 1e-6
    curve = [r["train_loss"] for r in b.history]
    assert [r["train_loss"] for r in a.history] == pytest.approx(curve, abs=1e-6)
    assert abs(a.metrics["final_train_loss"] - c.metrics["final_train_loss"]) > 1e-6


def test_kept_weights_give_the_reported_eval_loss(pairs_factory: Any, fast: Any) -> None:
    pairs = pairs_factory(32)
    loaded = load_reward_model("tiny-llama", device="cpu", seed=0)
    result = train_reward_model(loaded, pairs, fast, regime="helpful", seed=0)
    evals = [r for r in result.history if r["eval_loss"] is not None and r["step"] > 0]
    assert result.metrics["final_eval_loss"] == min(r["eval_loss"] for r in evals)
    _, held = split_train_eval(select_regime(pairs, "helpful"), fast.eval_fraction)
    chosen, rejected = _rewards(loaded, held, fast.max_length)
    loss = float(-torch.nn.functional.logsigmoid(torch.tensor(chosen - rejected)).mean())
    assert loss == pytest.approx(result.metrics["final_eval_loss"], abs=1e-4)


def test_recorder_restores_the_best_not_the_last_weights() -> None:
    class State:
        global_step, epoch = 0, 0.0

    model = torch.nn.Linear(2, 1)
    rec = _Recorder(None, max_steps=3, regime="mixed")
    state = State()
    for step, (value, loss) in enumerate([(1.0, 0.5), (2.0, 0.3), (3.0, 0.4)], start=1):
        with torch.no_grad():
            model.weight.fill_(value)
        state.global_step = step
        rec.on_evaluate(None, state, None, metrics={"eval_loss": loss, "eval_accuracy": 0.5}, model=model)
    rec.restore_best(model)
    assert torch.all(model.weight == 2.0) and rec.best_row is not None and rec.best_row["step"] == 2


def test_freeze_layers_keeps_embeddings_and_lower_blocks(pairs_factory: Any, fast: Any) -> None:
    loaded = load_reward_model("tiny-bert", device="cpu", seed=0)
    layers = loaded.arch.layers(loaded.model)
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    result = train_reward_model(loaded, pairs_factory(16), replace(fast, freeze_layers=1, epochs=1.0),
                                regime="mixed", seed=0)
    assert result.metrics["n_frozen_params"] > 0
    names = {id(p): n for n, p in loaded.model.named_parameters()}
    frozen = {names[id(p)] for p in layers[0].parameters()} | \
        {n for n in before if ".embeddings." in n}
    changed = {n for n, p in loaded.model.named_parameters() if not torch.equal(p, before[n])}
    assert frozen and not frozen & changed
    assert {names[id(p)] for p in layers[1].parameters()} & changed
    assert all(p.requires_grad for p in loaded.model.parameters())  # unfrozen again for later users


def test_nothing_to_train_is_an_error(pairs_factory: Any, fast: Any) -> None:
    loaded = load_reward_model("tiny-gpt2", device="cpu", seed=0)
    helpful_only = select_regime(pairs_factory(8), "helpful")
    with pytest.raises(ValueError, match="no pairs for regime 'harmless'"):
        train_reward_model(loaded, helpful_only, fast, regime="harmless")
    with pytest.raises(ValueError, match="longer than max_length"):
        train_reward_model(loaded, helpful_only, replace(fast, truncation="drop", max_length=8),
                           regime="helpful")
