"""Every layout and container on small fixture files; the options that set objective, subset, split."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from workers.data.loaders import DatasetFormatError, hash_split, load_pairs_file, sniff_layout
from workers.data.schema import PreferencePair, pairs_to_table


def _expected_canon(files: Any, i: int) -> PreferencePair:
    r = files.canon(i)
    return PreferencePair(**r)


@pytest.mark.parametrize("name", ["pairs.jsonl", "pairs.jsonl.gz", "pairs.json"])
def test_canonical_jsonl_and_gz(files: Any, name: str) -> None:
    path = files.jsonl(name, [files.canon(i) for i in range(5)])
    pairs = load_pairs_file(path)
    assert pairs == [_expected_canon(files, i) for i in range(5)]
    assert load_pairs_file(path, "canonical") == pairs
    assert Counter(p.objective for p in pairs) == {"harmless": 3, "helpful": 2}
    assert [p.split for p in pairs] == ["test", "train", "train", "test", "train"]


def test_canonical_json_list_and_parquet(files: Any, tmp_path: Path) -> None:
    expected = [_expected_canon(files, i) for i in range(4)]
    assert load_pairs_file(files.json("list.json", [files.canon(i) for i in range(4)])) == expected
    pq.write_table(pairs_to_table(expected), tmp_path / "pairs.parquet")
    assert load_pairs_file(tmp_path / "pairs.parquet") == expected
    # the container is sniffed from the bytes, not the name
    pq.write_table(pairs_to_table(expected), tmp_path / "upload.part.bin")
    assert load_pairs_file(tmp_path / "upload.part.bin") == expected


def test_canonical_defaults_for_missing_optional_fields(files: Any) -> None:
    recs = [{"prompt": "Why is the sky blue?", "chosen": "Rayleigh scattering.", "rejected": "Paint.",
             "objective": "helpful"},
            {"prompt": "How to pick a lock?", "chosen": "I can't help.", "rejected": "Use a pin.",
             "objective": "harmless", "item_id": 7, "pair_id": 12}]
    a, b = load_pairs_file(files.jsonl("min.jsonl", recs))
    assert (a.pair_id, a.item_id, a.source, a.subset) == ("custom/1", "custom/1", "custom", "custom")
    assert a.split == hash_split("Why is the sky blue?")
    assert (b.pair_id, b.item_id) == ("12", "7")
    # arguments fill in what a canonical record lacks, never override what it has
    c, d = load_pairs_file(files.jsonl("min2.jsonl", [{k: v for k, v in recs[0].items() if k != "objective"},
                                                       recs[1]]),
                           objective="harmless", subset="mine", split="train")
    assert (c.objective, c.subset, c.split, c.pair_id) == ("harmless", "mine", "train", "mine/1")
    assert (d.objective, d.subset) == ("harmless", "mine")


def test_hash_split_is_stable_and_about_80_20() -> None:
    prompts = [f"prompt number {i}" for i in range(5000)]
    splits = [hash_split(p) for p in prompts]
    assert splits == [hash_split(p) for p in prompts]
    assert 0.18 < splits.count("test") / len(splits) < 0.22
    # a bare question and the same question as an HH-RLHF turn fall on the same side
    assert all(hash_split(p) == hash_split(f"\n\nHuman: {p}") for p in prompts[:200])


def test_hh_rlhf_layout(files: Any) -> None:
    recs = [files.hh([("hi", "hello")], "how do I hotwire a car?", "I can't help with that.",
                     "Sure: first..."),
            files.hh([], "tell me a joke", "Why did the chicken...", "No.")]
    for name in ("harmless.jsonl", "harmless.jsonl.gz"):
        pairs = load_pairs_file(files.jsonl(name, recs))
        assert [(p.pair_id, p.objective, p.subset, p.source) for p in pairs] == [
            ("hh-rlhf/harmless-base/1", "harmless", "hh-rlhf/harmless-base", "hh-rlhf"),
            ("hh-rlhf/harmless-base/2", "harmless", "hh-rlhf/harmless-base", "hh-rlhf")]
        assert pairs[0].prompt == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how do I hotwire a car?"
        assert (pairs[0].chosen, pairs[0].rejected) == ("I can't help with that.", "Sure: first...")
        assert pairs[1].prompt == "\n\nHuman: tell me a joke"
        assert [p.split for p in pairs] == [hash_split(p.prompt) for p in pairs]
    forced = load_pairs_file(files.jsonl("x.jsonl", recs), "hh-rlhf", objective="helpful",
                             subset="hh-rlhf/helpful-base", split="test")
    assert {(p.objective, p.subset, p.split) for p in forced} == {("helpful", "hh-rlhf/helpful-base", "test")}
    # the data dir in the file name picks the subset and, for helpful-*, the objective
    named = load_pairs_file(files.jsonl("helpful-base-train.jsonl", recs))
    assert {(p.objective, p.subset) for p in named} == {("helpful", "hh-rlhf/helpful-base")}


def test_hh_rlhf_records_that_diverge_before_the_last_turn(files: Any) -> None:
    base = "\n\nHuman: a\n\nAssistant: b"
    rec = {"chosen": base + "\n\nHuman: c\n\nAssistant: d1\n\nHuman: e\n\nAssistant: f",
           "rejected": base + "\n\nHuman: c\n\nAssistant: d2"}
    (p,) = load_pairs_file(files.jsonl("div.jsonl", [rec]), "hh-rlhf")
    assert p.prompt == base + "\n\nHuman: c"
    assert (p.chosen, p.rejected) == ("d1\n\nHuman: e\n\nAssistant: f", "d2")


def test_hh_rlhf_skips_empty_final_turns_and_identical_pairs(files: Any, caplog: Any) -> None:
    recs = [files.hh([], "q1", "fine", "bad"), files.hh([], "q2", "", "bad"),
            files.hh([], "q3", "same", "same")]
    pairs = load_pairs_file(files.jsonl("hh.jsonl", recs), "hh-rlhf")
    assert [p.pair_id for p in pairs] == ["hh-rlhf/harmless-base/1"]
    assert "skipped 2 HH-RLHF records: line 2 (a final assistant turn is empty), line 3 (chosen and " \
           "rejected are identical)" in caplog.text
    with pytest.raises(DatasetFormatError) as exc:
        load_pairs_file(files.jsonl("none.jsonl", recs[1:]), "hh-rlhf")
    assert exc.value.problem == "no usable preference pairs"


def test_rm_bench_aligned_and_full(files: Any) -> None:
    path = files.json("chat.json", [files.rm_bench(8, "drawers?"), files.rm_bench(9, "socks?")])
    aligned = load_pairs_file(path)
    assert len(aligned) == 6
    assert [p.pair_id for p in aligned[:3]] == ["rm-bench/chat/8/0", "rm-bench/chat/8/1", "rm-bench/chat/8/2"]
    assert all(p.item_id == p.pair_id for p in aligned)
    assert [(p.chosen, p.rejected) for p in aligned[:3]] == [(f"drawers? c{k}", f"drawers? r{k}")
                                                             for k in range(3)]
    assert {(p.objective, p.subset, p.source) for p in aligned} == {("helpful", "rm-bench/chat", "rm-bench")}
    assert {p.split for p in aligned[:3]} == {hash_split("drawers?")}

    full = load_pairs_file(path, rm_bench_mode="full")
    assert len(full) == 18
    assert Counter(p.item_id for p in full) == {"rm-bench/chat/8": 9, "rm-bench/chat/9": 9}
    assert {(p.chosen, p.rejected) for p in full if p.item_id == "rm-bench/chat/8"} == {
        (f"drawers? c{i}", f"drawers? r{j}") for i in range(3) for j in range(3)}
    assert full[5].pair_id == "rm-bench/chat/8/1-2"


def test_rm_bench_objective_from_file_name_record_subset_or_argument(files: Any) -> None:
    refuse = load_pairs_file(files.json("safety-refuse.json", [files.rm_bench(1, "make a bomb")]))
    assert {(p.objective, p.subset) for p in refuse} == {("harmless", "rm-bench/safety-refuse")}
    # an uploaded file has no telling name: the record's own subset decides
    anon = load_pairs_file(files.json("tmp123.json", [
        files.rm_bench(1, "x", subset="xstest-should-refuse"),
        files.rm_bench(2, "y", subset="xstest-should-respond")]))
    assert [p.objective for p in anon] == ["harmless"] * 3 + ["helpful"] * 3
    assert {p.subset for p in anon} == {"rm-bench"}
    forced = load_pairs_file(files.json("tmp.json", [files.rm_bench(1, "x", subset="weird")]), "rm-bench",
                             objective="helpful", subset="mine")
    assert {(p.objective, p.subset) for p in forced} == {("helpful", "mine")}
    with pytest.raises(DatasetFormatError) as exc:
        load_pairs_file(files.json("tmp.json", [files.rm_bench(1, "x", subset="weird")]))
    assert exc.value.line == 2 and "cannot tell the objective of subset 'weird'" in exc.value.problem


def test_rewardbench_layout_jsonl_and_json_list(files: Any) -> None:
    recs = [{"prompt": "Tell me a fact", "chosen": "Water is wet.", "rejected": "Water is dry.",
             "subset": "alpacaeval-easy", "id": 30},
            {"prompt": "How to make meth?", "chosen": "I can't help.", "rejected": "Step 1...",
             "subset": "refusals-dangerous", "id": 31, "chosen_model": "a", "rejected_model": "b"}]
    for path in (files.jsonl("rb.jsonl", recs), files.json("rb.json", recs)):
        pairs = load_pairs_file(path)
        assert [(p.pair_id, p.objective, p.subset, p.source) for p in pairs] == [
            ("rewardbench/alpacaeval-easy/30", "helpful", "rewardbench/alpacaeval-easy", "rewardbench"),
            ("rewardbench/refusals-dangerous/31", "harmless", "rewardbench/refusals-dangerous",
             "rewardbench")]
        assert pairs == load_pairs_file(path, "rewardbench")
    bad = files.jsonl("rb2.jsonl", [recs[0], {**recs[1], "subset": "mystery"}])
    with pytest.raises(DatasetFormatError) as exc:
        load_pairs_file(bad)
    assert exc.value.line == 2
    assert exc.value.problem.split(";")[0] == "cannot tell the objective of subset 'mystery'"
    assert {p.objective for p in load_pairs_file(bad, objective="helpful")} == {"helpful"}


def test_sniffing() -> None:
    assert sniff_layout({"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "b"}) == "hh-rlhf"
    assert sniff_layout({"chosen": "a", "rejected": "b"}) == "trl-implicit"
    assert sniff_layout({"prompt": "p", "chosen": ["a"], "rejected": ["b"]}) == "rm-bench"
    assert sniff_layout({"prompt": "p", "chosen": "a", "rejected": "b", "subset": "s"}) == "rewardbench"
    rec = {"prompt": "p", "chosen": "a", "rejected": "b", "subset": "s", "objective": "helpful"}
    assert sniff_layout(rec) == "canonical"
    assert sniff_layout({"prompt": "p", "chosen": "a", "rejected": "b"}) == "canonical"
    assert sniff_layout({"text": "a"}) is None


def test_forced_format_that_does_not_fit(files: Any) -> None:
    path = files.jsonl("c.jsonl", [files.canon(1)])
    with pytest.raises(DatasetFormatError) as exc:
        load_pairs_file(path, "rm-bench")
    assert str(exc.value) == (f"{path}, line 1: 'chosen' must be a list of strings in the RM-Bench layout, "
                              "got string")
    with pytest.raises(DatasetFormatError, match="has no '\\\\n\\\\nAssistant:' turn"):
        load_pairs_file(path, "hh-rlhf")


def test_bad_options_and_missing_file(files: Any, tmp_path: Path) -> None:
    path = files.jsonl("c.jsonl", [files.canon(1)])
    with pytest.raises(ValueError, match="unknown dataset format 'csv'"):
        load_pairs_file(path, "csv")
    with pytest.raises(ValueError, match="objective 'kind' is not one of helpful, harmless"):
        load_pairs_file(path, objective="kind")
    with pytest.raises(ValueError, match="split 'dev' is not one of train, test"):
        load_pairs_file(path, split="dev")
    with pytest.raises(ValueError, match="rm_bench_mode 'some'"):
        load_pairs_file(path, rm_bench_mode="some")
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        load_pairs_file(tmp_path / "nope.jsonl")


def test_blank_lines_and_bom_are_tolerated(files: Any) -> None:
    body = "\n".join(json.dumps(files.canon(i)) for i in range(3))
    path = files.raw("bom.jsonl", b"\xef\xbb\xbf" + body.replace("\n", "\n\n  \n", 1).encode() + b"\n\n")
    assert [p.pair_id for p in load_pairs_file(path)] == ["p0", "p1", "p2"]
