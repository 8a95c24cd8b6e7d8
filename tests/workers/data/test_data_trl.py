"""TRL's preference layouts (standard / conversational, explicit / implicit prompt) load as they are: the texts
each renders to, the layout detected and named, mixed and malformed files refused with the record and problem."""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workers.data import layouts
from workers.data.loaders import (
    LAYOUTS,
    DatasetFormatError,
    ReadLimits,
    hash_split,
    load_pairs_file,
    sniff_layout,
    summarize_pairs_file,
)
from workers.data.schema import PreferencePair
from workers.data.text import format_text


def user(content: Any) -> dict[str, Any]:
    return {"role": "user", "content": content}


def bot(content: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content}


def system(content: Any) -> dict[str, Any]:
    return {"role": "system", "content": content}


CONVERSATIONAL = {"prompt": [user("What color is the sky?")], "chosen": [bot("It is blue.")],
                  "rejected": [bot("It is green.")]}
CONVERSATIONAL_IMPLICIT = {"chosen": [user("What color is the sky?"), bot("It is blue.")],
                           "rejected": [user("What color is the sky?"), bot("It is green.")]}
IMPLICIT = {"chosen": "The sky is blue.", "rejected": "The sky is green."}
EXPLICIT = {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."}


def _write(path: Path, records: list[Any]) -> Path:
    data = "".join(json.dumps(r) + "\n" for r in records).encode()
    path.write_bytes(gzip.compress(data, mtime=0) if path.name.endswith(".gz") else data)
    return path


def _error(path: Path, fmt: str = "auto", **kw: Any) -> DatasetFormatError:
    with pytest.raises(DatasetFormatError) as exc:
        load_pairs_file(path, fmt, **kw)
    assert exc.type is DatasetFormatError
    return exc.value


def _texts(pairs: list[PreferencePair]) -> list[tuple[str, str, str]]:
    return [(p.prompt, p.chosen, p.rejected) for p in pairs]


# ------------------------------------------------------------------------------------------ the four layouts


def test_conversational_explicit_prompt(tmp_path: Path) -> None:
    records = [CONVERSATIONAL,
               {"prompt": [system("Answer briefly."), user("Hi?"), bot("Hello."), user("And you?")],
                "chosen": [bot("Fine."), user("Good."), bot("Thanks.")], "rejected": [bot("Go away.")],
                "score_chosen": 9.0}]
    path = _write(tmp_path / "conv.jsonl", records)
    pairs = load_pairs_file(path, objective="helpful")
    assert _texts(pairs) == [
        ("\n\nHuman: What color is the sky?", "It is blue.", "It is green."),
        ("\n\nSystem: Answer briefly.\n\nHuman: Hi?\n\nAssistant: Hello.\n\nHuman: And you?",
         "Fine.\n\nHuman: Good.\n\nAssistant: Thanks.", "Go away.")]
    assert [(p.pair_id, p.item_id, p.objective, p.source, p.subset) for p in pairs] == [
        ("custom/1", "custom/1", "helpful", "custom", "custom"),
        ("custom/2", "custom/2", "helpful", "custom", "custom")]
    assert [p.split for p in pairs] == [hash_split(p.prompt) for p in pairs]
    assert load_pairs_file(path, "trl-conversational", objective="helpful") == pairs
    forced = load_pairs_file(path, objective="harmless", subset="mine", split="test")
    assert {(p.objective, p.subset, p.split) for p in forced} == {("harmless", "mine", "test")}


def test_conversational_implicit_prompt_is_the_longest_shared_run_of_messages(tmp_path: Path) -> None:
    records = [CONVERSATIONAL_IMPLICIT,
               # several shared turns; the differing tails are the responses
               {"chosen": [system("Be kind."), user("a"), bot("b"), user("c"), bot("d1")],
                "rejected": [system("Be kind."), user("a"), bot("b"), user("c"), bot("d2"), user("e"), bot("f")]},
               # diverging after a shared assistant reply: that reply goes back into both responses (as HH-RLHF)
               {"chosen": [user("a"), bot("b"), user("c1"), bot("d")], "rejected": [user("a"), bot("b")]}]
    pairs = load_pairs_file(_write(tmp_path / "implicit.jsonl", records), objective="helpful")
    assert _texts(pairs) == [
        ("\n\nHuman: What color is the sky?", "It is blue.", "It is green."),
        ("\n\nSystem: Be kind.\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "d1", "d2\n\nHuman: e\n\nAssistant: f"),
        ("\n\nHuman: a", "b\n\nHuman: c1\n\nAssistant: d", "b")]
    assert [p.pair_id for p in pairs] == ["custom/1", "custom/2", "custom/3"]
    assert [p.split for p in pairs] == [hash_split(p.prompt) for p in pairs]


def test_standard_implicit_prompt(tmp_path: Path) -> None:
    # plain texts cannot be split at a turn: prompt "" and the whole texts are the responses
    (p,) = load_pairs_file(_write(tmp_path / "implicit.jsonl", [IMPLICIT]), objective="harmless")
    assert _texts([p]) == [("", "The sky is blue.", "The sky is green.")]
    assert (p.pair_id, p.objective, p.source, p.subset) == ("custom/1", "harmless", "custom", "custom")
    assert p.split == hash_split("The sky is blue.\n\nThe sky is green.")
    # such pairs are split on their own texts, so a file of them is not all in one split
    many = [{"chosen": f"Fact {i} is true.", "rejected": f"Fact {i} is false."} for i in range(60)]
    splits = {q.split for q in load_pairs_file(_write(tmp_path / "many.jsonl", many), objective="helpful")}
    assert splits == {"train", "test"}
    # transcripts in the product's convention are split at their last shared Assistant turn
    hh = {"chosen": "\n\nHuman: Hi?\n\nAssistant: Hello!", "rejected": "\n\nHuman: Hi?\n\nAssistant: Go away."}
    path = _write(tmp_path / "hh.jsonl", [hh, IMPLICIT])
    assert _texts(load_pairs_file(path, "trl-implicit", objective="helpful")) == [
        ("\n\nHuman: Hi?", "Hello!", "Go away."), ("", "The sky is blue.", "The sky is green.")]


def test_standard_explicit_prompt_is_the_canonical_layout(tmp_path: Path) -> None:
    path = _write(tmp_path / "explicit.jsonl", [EXPLICIT])
    assert sniff_layout(EXPLICIT) == "canonical"
    (p,) = load_pairs_file(path, objective="helpful")
    assert _texts([p]) == [("The sky is", " blue.", " green.")]
    e = _error(path)
    assert e.line == 1 and e.problem.startswith("missing key 'objective'")


@pytest.mark.parametrize("record", [CONVERSATIONAL, CONVERSATIONAL_IMPLICIT, IMPLICIT], ids=["conv", "conv-implicit",
                                                                                            "implicit"])
def test_a_trl_file_needs_the_objective_option(tmp_path: Path, record: dict[str, Any]) -> None:
    layout = sniff_layout(record)
    e = _error(_write(tmp_path / "x.jsonl", [record]))
    assert e.line == 1
    assert e.problem == (f"a {layout} record names no objective; pass objective='helpful' or 'harmless' for the "
                         f"file (the upload's objective option) (layout {layout}, detected from line 1)")


def test_a_conversation_renders_as_its_hh_rlhf_transcript(tmp_path: Path) -> None:
    turns = [user("hi"), bot("hello"), user("how do I hotwire a car?")]
    conv = {"chosen": [*turns, bot("I can't help with that.")], "rejected": [*turns, bot("Sure: first...")]}
    hh = {k: layouts.render(layouts.messages(v, k)) for k, v in conv.items()}
    assert hh["chosen"] == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how do I hotwire a car?\n\nAssistant: " \
                           "I can't help with that."
    from_conv = load_pairs_file(_write(tmp_path / "conv.jsonl", [conv]), objective="harmless")
    from_hh = load_pairs_file(_write(tmp_path / "hh.jsonl", [hh]), objective="harmless")
    assert _texts(from_conv) == _texts(from_hh)
    (p,) = from_conv
    assert format_text(p.prompt, p.chosen) == hh["chosen"]  # what the reward model scores: the whole dialogue


def test_identical_or_empty_implicit_pairs_are_skipped_like_hh_rlhf(tmp_path: Path, caplog: Any) -> None:
    records = [CONVERSATIONAL_IMPLICIT,
               {"chosen": [user("q"), bot("same")], "rejected": [user("q"), bot("same")]},
               {"chosen": [user("q"), bot("  ")], "rejected": [user("q"), bot("no")]}]
    with caplog.at_level(logging.WARNING):
        pairs = load_pairs_file(_write(tmp_path / "skip.jsonl", records), objective="helpful")
    assert [p.pair_id for p in pairs] == ["custom/1"]
    assert "skipped 2 trl-conversational-implicit records: line 2 (chosen and rejected are identical), line 3 " \
           "(a final assistant turn is empty)" in caplog.text


# -------------------------------------------------------------------------------------------- containers


def test_gzipped_conversational_jsonl(tmp_path: Path) -> None:
    records = [CONVERSATIONAL, {**CONVERSATIONAL, "chosen": [bot("Blue.")]}]
    path = _write(tmp_path / "conv.jsonl.gz", records)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    assert _texts(load_pairs_file(path, objective="helpful")) == [
        ("\n\nHuman: What color is the sky?", "It is blue.", "It is green."),
        ("\n\nHuman: What color is the sky?", "Blue.", "It is green.")]
    size = len(gzip.decompress(path.read_bytes()))
    assert summarize_pairs_file(path, objective="helpful", limits=ReadLimits(max_bytes=size, max_pairs=2)).n_pairs == 2


def test_conversational_parquet_and_json_list(tmp_path: Path) -> None:
    """As TRL's hub datasets store them: list<struct<role, content>> columns."""
    pq.write_table(pa.Table.from_pylist([CONVERSATIONAL_IMPLICIT] * 2), tmp_path / "train.parquet")
    pairs = load_pairs_file(tmp_path / "train.parquet", objective="helpful")
    assert _texts(pairs) == [("\n\nHuman: What color is the sky?", "It is blue.", "It is green.")] * 2
    assert [p.pair_id for p in pairs] == ["custom/1", "custom/2"]
    (tmp_path / "list.json").write_text(json.dumps([CONVERSATIONAL], indent=2))
    assert _texts(load_pairs_file(tmp_path / "list.json", objective="helpful")) == [
        ("\n\nHuman: What color is the sky?", "It is blue.", "It is green.")]


# ------------------------------------------------------------------------------------------------ detection


def test_sniffing_names_each_layout() -> None:
    assert sniff_layout(CONVERSATIONAL) == "trl-conversational"
    assert sniff_layout(CONVERSATIONAL_IMPLICIT) == "trl-conversational-implicit"
    assert sniff_layout(IMPLICIT) == "trl-implicit"
    assert sniff_layout({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"}) \
        == "hh-rlhf"
    assert sniff_layout({"prompt": "q", "chosen": ["a"], "rejected": ["b"]}) == "rm-bench"
    # a malformed conversation is still a conversation: its reader names the problem
    assert sniff_layout({"prompt": [user("q")], "chosen": [], "rejected": [bot("b")]}) == "trl-conversational"
    assert sniff_layout({"chosen": ["x", {"role": "user"}], "rejected": []}) == "trl-conversational-implicit"
    assert sniff_layout({"chosen": "a", "rejected": ["b"]}) is None
    assert set(LAYOUTS) == {"canonical", "hh-rlhf", "rm-bench", "rewardbench", "trl-implicit", "trl-conversational",
                            "trl-conversational-implicit"}


@pytest.mark.parametrize(("record", "layout"), [(CONVERSATIONAL, "trl-conversational"),
                                                (CONVERSATIONAL_IMPLICIT, "trl-conversational-implicit"),
                                                (IMPLICIT, "trl-implicit")])
def test_errors_name_the_detected_layout(tmp_path: Path, record: dict[str, Any], layout: str) -> None:
    broken = {**record, "chosen": 7 if isinstance(record["chosen"], str) else [bot(7)]}
    e = _error(_write(tmp_path / "x.jsonl", [record, record, broken]), objective="helpful")
    assert e.line == 3 and e.problem.endswith(f"(layout {layout}, detected from line 1)"), e.problem


def test_mixed_layouts_are_refused_naming_the_record(tmp_path: Path) -> None:
    path = _write(tmp_path / "mixed.jsonl", [CONVERSATIONAL, CONVERSATIONAL, IMPLICIT, CONVERSATIONAL_IMPLICIT])
    e = _error(path, objective="helpful")
    assert e.line == 3
    assert e.problem == ("the record is in the trl-implicit layout (text without a prompt), but the file is in the "
                         "trl-conversational layout (messages with a prompt, detected from line 1): every record of a "
                         "file must be in one layout; the record has chosen: string, rejected: string")
    assert str(e) == f"{path}, line 3: {e.problem}"
    e = _error(_write(tmp_path / "mixed2.jsonl", [CONVERSATIONAL_IMPLICIT, CONVERSATIONAL]), objective="helpful")
    assert e.line == 2 and e.problem.startswith("the record is in the trl-conversational layout (messages with a "
                                                "prompt), but the file is in the trl-conversational-implicit layout")
    (tmp_path / "mixed.json").write_text(json.dumps([EXPLICIT, {"prompt": "q", "chosen": ["a"], "rejected": ["b"]}],
                                                    indent=2))
    e = _error(tmp_path / "mixed.json", objective="helpful")
    assert e.line == 7 and e.problem.startswith("the record is in the rm-bench layout (lists of responses), but the "
                                                "file is in the canonical layout (text with a prompt, detected from "
                                                "line 2)")
    # layouts of one shape may share a file: each record is read in the file's layout
    with_subset = {**EXPLICIT, "subset": "s"}  # alone, RewardBench
    assert len(load_pairs_file(_write(tmp_path / "same.jsonl", [EXPLICIT, with_subset]), objective="helpful")) == 2


def test_no_layout_fits_names_the_layouts_tried_and_the_record_types(tmp_path: Path) -> None:
    record = {"messages": [user("secret question")], "chosen": [bot("secret answer")], "rejected": "secret text"}
    path = _write(tmp_path / "none.jsonl", [record])
    e = _error(path)
    assert e.line == 1
    assert e.problem == ("cannot tell the layout: none of canonical, hh-rlhf, rm-bench, rewardbench, trl-implicit, "
                         "trl-conversational, trl-conversational-implicit fits (each needs 'chosen' and 'rejected': "
                         "both strings, both lists of strings or both lists of messages); the record has chosen: "
                         "list of objects, messages: list of objects, rejected: string")
    hidden = _error(path, limits=ReadLimits(quote=False))  # a file the requester did not send: not even its keys
    assert hidden.problem.endswith("the record has chosen: list of objects, rejected: string, 1 other key")
    for problem in (e.problem, hidden.problem):
        assert "secret" not in problem


# ------------------------------------------------------------------------------------------------ malformed


@pytest.mark.parametrize(("change", "fmt", "problem"), [
    ({"prompt": [{"content": "q"}]}, "auto", "prompt[0] has no 'role'"),
    ({"prompt": [{"role": None, "content": "q"}]}, "auto", "prompt[0] has no 'role'"),
    ({"chosen": [{"role": "assistant"}]}, "auto", "chosen[0] has no 'content'"),
    ({"chosen": [bot("a"), {"role": 3, "content": "b"}]}, "auto", "chosen[1] 'role' must be a string, got int"),
    ({"rejected": [{"role": "tool", "content": "b"}]}, "auto",
     "rejected[0] 'role' is not one of user, assistant, system"),
    ({"rejected": [bot(5)]}, "auto", "rejected[0] 'content' must be a string, got int"),
    ({"prompt": [user([{"type": "text", "text": "q"}])]}, "auto",
     "prompt[0] 'content' must be a string, got list (content parts are not supported: give the text as a string)"),
    ({"prompt": []}, "auto", "'prompt' is an empty list of messages"),
    ({"chosen": []}, "auto", "'chosen' is an empty list of messages"),
    ({"chosen": [bot("a"), "b"]}, "auto",
     "chosen[1] must be a message (an object with 'role' and 'content'), got string"),
    ({"chosen": [user("a")]}, "auto", "'chosen' must begin with an assistant message, got a user message"),
    ({"rejected": [bot("")]}, "auto", "'rejected' is empty"),
    ({"prompt": "a string"}, "trl-conversational", "'prompt' must be a list of messages, got string"),
    ({"prompt": None}, "trl-conversational", "missing key 'prompt' (record has keys: chosen, prompt, rejected)"),
])
def test_malformed_conversations(tmp_path: Path, change: dict[str, Any], fmt: str, problem: str) -> None:
    path = _write(tmp_path / "bad.jsonl", [CONVERSATIONAL, {**CONVERSATIONAL, **change}])
    e = _error(path, fmt, objective="helpful")
    assert e.line == 2
    assert e.problem == problem + (" (layout trl-conversational, detected from line 1)" if fmt == "auto" else "")


@pytest.mark.parametrize(("record", "problem"), [
    ({"chosen": [user("q1"), bot("a")], "rejected": [user("q2"), bot("b")]},
     "'chosen' and 'rejected' share no leading messages followed by an assistant message in both (they do not "
     "share a prompt)"),
    ({"chosen": [user("q"), user("more"), bot("a")], "rejected": [user("q"), bot("b")]},
     "'chosen' and 'rejected' share no leading messages followed by an assistant message in both (they do not "
     "share a prompt)"),
    ({"chosen": [user("q"), bot("a")], "rejected": []}, "'rejected' is an empty list of messages"),
    ({"chosen": [user("q"), bot("a")], "rejected": [user("q"), {"role": "assistant", "content": {"x": 1}}]},
     "rejected[1] 'content' must be a string, got object"),
])
def test_malformed_implicit_conversations(tmp_path: Path, record: dict[str, Any], problem: str) -> None:
    e = _error(_write(tmp_path / "bad.jsonl", [record]), objective="helpful")
    assert (e.line, e.problem) == (1, problem + " (layout trl-conversational-implicit, detected from line 1)")


def test_messages_of_a_file_the_requester_did_not_send_are_never_quoted(tmp_path: Path) -> None:
    bad = {"prompt": [{"role": "s3cr3t-role", "content": "s3cr3t-question"}], "chosen": [bot("s3cr3t-a")],
           "rejected": [bot("s3cr3t-b")]}
    for fmt in ("auto", "trl-conversational", "trl-conversational-implicit", "trl-implicit"):
        with pytest.raises(DatasetFormatError) as exc:
            load_pairs_file(_write(tmp_path / "x.jsonl", [bad]), fmt, limits=ReadLimits(quote=False))
        assert "s3cr3t" not in exc.value.problem, exc.value.problem
    e = _error(_write(tmp_path / "y.jsonl", [bad]), limits=ReadLimits(quote=False), objective="helpful")
    assert e.problem == "prompt[0] 'role' is not one of user, assistant, system (layout trl-conversational, " \
                        "detected from line 1)"


def test_real_hh_rlhf_as_conversations_gives_the_same_pairs(shared_data: Path, tmp_path: Path) -> None:
    """Oracle: HH-RLHF harmless-base test, turned into TRL conversational-implicit records (as trl-lib publishes
    it), loads to exactly the pairs of the original transcripts."""

    def conversation(text: str) -> list[dict[str, str]]:
        parts = re.split(r"\n\n(Human|Assistant): ?", text)
        assert parts[0] == ""
        return [user(c) if r == "Human" else bot(c) for r, c in zip(parts[1::2], parts[2::2], strict=True)]

    src = shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    hh = [json.loads(line) for line in gzip.decompress(src.read_bytes()).splitlines()]
    conv = _write(tmp_path / "conv.jsonl.gz", [{k: conversation(r[k]) for k in ("chosen", "rejected")} for r in hh])
    from_hh = load_pairs_file(src, objective="harmless", subset="custom")
    from_conv = load_pairs_file(conv, objective="harmless")
    assert len(from_conv) > 2000
    assert [(p.pair_id.rsplit("/", 1)[1], *_texts([p])[0], p.split) for p in from_conv] == [
        (p.pair_id.rsplit("/", 1)[1], *_texts([p])[0], p.split) for p in from_hh]
