"""score_texts: one finite reward per text, independent of batching, read where METHOD.md §1 says."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from workers.models.scoring import effective_max_length, iter_batches, score_texts, tokenize
from workers.progress import Progress

from .conftest import TEXTS, TINY


@pytest.mark.parametrize("name", TINY)
def test_tiny_models_give_one_finite_reward_per_text(load, name: str) -> None:  # type: ignore[no-untyped-def]
    rewards = score_texts(load(name), TEXTS, max_length=64, batch_size=3)
    assert rewards.shape == (len(TEXTS),) and rewards.dtype == np.float32
    assert np.isfinite(rewards).all() and np.unique(rewards).size > 1


@pytest.mark.parametrize("name", TINY)
def test_reward_does_not_depend_on_the_batch(load, name: str) -> None:  # type: ignore[no-untyped-def]
    """Decoders read the last non-pad token: batching a short text with a long one leaves its reward."""
    loaded = load(name)
    alone = [float(score_texts(loaded, [t], max_length=64)[0]) for t in TEXTS]
    batched = score_texts(loaded, TEXTS, max_length=64, batch_size=len(TEXTS))
    in_pairs = score_texts(loaded, TEXTS, max_length=64, batch_size=2)
    np.testing.assert_allclose(batched, alone, atol=1e-5)
    np.testing.assert_allclose(in_pairs, alone, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama"])
def test_decoder_reward_is_the_head_at_the_last_non_pad_token(load, name: str) -> None:  # type: ignore[no-untyped-def]
    loaded = load(name)
    ids = tokenize(loaded, TEXTS[:2], 64)
    with torch.no_grad():
        for text, t in zip(TEXTS[:2], ids, strict=True):
            hidden = loaded.model.base_model(input_ids=torch.as_tensor(t)[None].long()).last_hidden_state
            expected = loaded.model.score(hidden[0, len(t) - 1]).item()
            got = float(score_texts(loaded, [text, TEXTS[2]], batch_size=2)[0])
            assert got == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert"])
def test_left_truncation_keeps_the_final_turn(load, name: str) -> None:  # type: ignore[no-untyped-def]
    loaded = load(name)
    tail = " Assistant: the final answer is forty two, and here is why it matters a lot."
    a, b = "Human: blah " * 40 + tail, "Human: something entirely different " * 30 + tail
    full = tokenize(loaded, [a], 10_000)[0].tolist()
    cut = tokenize(loaded, [a], 16)[0].tolist()
    assert len(cut) == 16 and len(full) > 16
    # Tiny models use MiniLM's WordPiece tokenizer: [CLS] ... [SEP] survive, between them the END of the text.
    assert loaded.tokenizer.num_special_tokens_to_add() == 2
    assert cut[0] == full[0] and cut[-1] == full[-1] and cut[1:-1] == full[-15:-1]
    ra, rb = score_texts(loaded, [a, b], max_length=16)
    assert ra == pytest.approx(rb, abs=1e-6)  # same final 16 tokens, same reward


def test_batches_are_length_bucketed_and_cover_every_text(load) -> None:  # type: ignore[no-untyped-def]
    loaded = load("tiny-llama")
    ids = tokenize(loaded, TEXTS * 3, 64)
    batches = list(iter_batches(loaded, ids, 5))
    assert sorted(np.concatenate([b.index for b in batches]).tolist()) == list(range(len(ids)))
    widths = [b.input_ids.shape[1] for b in batches]
    assert widths == sorted(widths, reverse=True)
    for b in batches:  # each batch padded only to its own longest text
        assert b.input_ids.shape[1] == max(len(ids[i]) for i in b.index)
        assert b.attention_mask.sum(1).tolist() == [len(ids[i]) for i in b.index]


def test_max_length_is_capped_at_the_position_limit(load) -> None:  # type: ignore[no-untyped-def]
    loaded = load("tiny-gpt2")
    assert effective_max_length(loaded, 8192) == 512
    assert np.isfinite(score_texts(loaded, ["word " * 2000], max_length=8192)).all()


def test_progress_reaches_one(load) -> None:  # type: ignore[no-untyped-def]
    p = Progress(None, min_interval=0)
    score_texts(load("tiny-bert"), TEXTS, batch_size=3, progress=p)
    assert p.last_fraction == 1.0 and "4/4" in p.last_message
    assert score_texts(load("tiny-bert"), []).shape == (0,)


def test_minilm_scores_offline(load) -> None:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    loaded = load("minilm-l6")
    rewards = score_texts(loaded, TEXTS, max_length=128, batch_size=2)
    assert np.isfinite(rewards).all() and rewards.shape == (4,)
    assert time.perf_counter() - t0 < 60
