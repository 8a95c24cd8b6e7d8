"""The bundled demo data: counts, prompt-disjoint splits, both objectives everywhere, reproducible build."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

from workers.data.build_bundled import build, counts
from workers.data.loaders import TEST_FRACTION, bundled_path, hash_split, load_bundled, load_pairs_file
from workers.data.schema import SUBSET_TYPE
from workers.data.text import dialogue_prompt

EXPECTED = {  # subset -> (train pairs, test pairs)
    "rm-bench/chat": (306, 81),
    "rm-bench/code": (564, 120),
    "rm-bench/safety-response": (375, 96),
    "rm-bench/safety-refuse": (684, 168),
    "hh-rlhf/harmless-base": (1825, 483),
}


def test_counts_per_subset_and_split_add_up() -> None:
    pairs = load_bundled()
    assert bundled_path().name == "demo_pairs.jsonl.gz" and bundled_path().is_file()
    c = Counter((p.subset, p.split) for p in pairs)
    assert {s: (c[s, "train"], c[s, "test"]) for s in SUBSET_TYPE} == EXPECTED
    assert sum(c.values()) == len(pairs) == 4702 == sum(a + b for a, b in EXPECTED.values())
    assert set(c) == {(s, sp) for s in SUBSET_TYPE for sp in ("train", "test")}
    by_obj = Counter((p.objective, p.split) for p in pairs)
    assert by_obj == {("helpful", "train"): 1245, ("helpful", "test"): 297,
                      ("harmless", "train"): 2509, ("harmless", "test"): 651}
    # RM-Bench sizes: 3 aligned pairs for each of 129 / 228 / 157 / 284 prompts
    for subset, n_prompts in (("rm-bench/chat", 129), ("rm-bench/code", 228),
                              ("rm-bench/safety-response", 157), ("rm-bench/safety-refuse", 284)):
        assert sum(c[subset, sp] for sp in ("train", "test")) == 3 * n_prompts


def test_schema_invariants() -> None:
    pairs = load_bundled()
    assert len({p.pair_id for p in pairs}) == len(pairs)
    assert all(p.item_id == p.pair_id for p in pairs)  # aligned mode: every pair is its own item
    assert all(p.objective == SUBSET_TYPE[p.subset] for p in pairs)
    assert {p.source for p in pairs} == {"rm-bench", "hh-rlhf"}
    assert all(p.chosen != p.rejected and p.chosen.strip() and p.rejected.strip() for p in pairs)
    per_prompt = Counter((p.subset, p.prompt) for p in pairs if p.source == "rm-bench")
    assert set(per_prompt.values()) <= {3, 6}  # 3 a prompt; safety-refuse repeats 2 prompts under other ids
    assert sum(v == 6 for v in per_prompt.values()) == 2


def test_splits_are_prompt_disjoint() -> None:
    pairs = load_bundled()
    splits_of: defaultdict[str, set[str]] = defaultdict(set)
    for p in pairs:
        splits_of[dialogue_prompt(p.prompt)].add(p.split)
    assert all(len(s) == 1 for s in splits_of.values())
    assert all(p.split == hash_split(p.prompt) for p in pairs)
    test_prompts = sum(s == {"test"} for s in splits_of.values())
    assert abs(test_prompts / len(splits_of) - TEST_FRACTION) < 0.02
    train_prompts = {p.prompt for p in pairs if p.split == "train"}
    assert not train_prompts & {p.prompt for p in pairs if p.split == "test"}


def test_both_objectives_in_both_splits_and_every_subset_in_both() -> None:
    pairs = load_bundled()
    assert {(p.objective, p.split) for p in pairs} == {(o, s) for o in ("helpful", "harmless")
                                                      for s in ("train", "test")}
    assert {(p.subset, p.split) for p in pairs} == {(sub, s) for sub in SUBSET_TYPE
                                                    for s in ("train", "test")}


def test_notice_and_licence_ship_with_the_data() -> None:
    folder = bundled_path().parent
    notice = (folder / "NOTICE.md").read_text()
    for needle in ("MIT", "ODC-By", "LICENSE-hh-rlhf", "Liu", "2024",
                   "RM-Bench: Benchmarking Reward Models of Language Models with Subtlety and Style",
                   "| `hh-rlhf/harmless-base` | harmless | 1825 (1823) | 483 (483) | 2308 |",
                   "| **all** | | 3754 | 948 | 4702 |"):
        assert needle in notice, needle
    lic = (folder / "LICENSE-hh-rlhf").read_text()
    assert lic.startswith("MIT License") and "Copyright (c) 2022 Anthropic" in lic


def test_rebuild_from_sources_is_byte_identical(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "bundled" / "demo_pairs.jsonl.gz"
    pairs = build(shared_data, out)
    assert out.read_bytes() == bundled_path().read_bytes()
    for name in ("NOTICE.md", "LICENSE-hh-rlhf"):
        assert (out.parent / name).read_bytes() == (bundled_path().parent / name).read_bytes(), name
    assert (out.parent / "LICENSE-hh-rlhf").read_bytes() == (shared_data / "hh-rlhf" / "LICENSE").read_bytes()
    assert {s: (r["train"], r["test"]) for s, r in counts(pairs).items()} == EXPECTED


def test_real_source_files_load_with_auto_detection(shared_data: Path) -> None:
    bundled = load_bundled()
    for name in ("chat", "code", "safety-response", "safety-refuse"):
        # layout, subset and objective are all sniffed
        pairs = load_pairs_file(shared_data / "rm-bench" / f"{name}.json")
        assert pairs == [p for p in bundled if p.subset == f"rm-bench/{name}"]
    hh = load_pairs_file(shared_data / "hh-rlhf" / "harmless-base-test.jsonl.gz")
    assert hh == [p for p in bundled if p.subset == "hh-rlhf/harmless-base"]
    full = load_pairs_file(shared_data / "rm-bench" / "chat.json", rm_bench_mode="full")
    assert len(full) == 9 * 129 and len({p.item_id for p in full}) == 129
