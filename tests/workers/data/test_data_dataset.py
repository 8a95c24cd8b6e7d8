"""load_dataset: sources, filters, the seeded per-objective limit; dataset_revision."""

from __future__ import annotations

import hashlib
import sys
import types
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from workers.contract.jobs import DatasetRef
from workers.data.loaders import (
    bundled_path,
    dataset_revision,
    load_bundled,
    load_dataset,
    load_pairs_file,
    select_pairs,
)


def test_bundled_default_ref_is_the_test_split_of_both_objectives() -> None:
    pairs = load_dataset(DatasetRef())
    assert len(pairs) == 948
    assert Counter(p.objective for p in pairs) == {"helpful": 297, "harmless": 651}
    assert {p.split for p in pairs} == {"test"}
    assert len(load_dataset(DatasetRef(split="train"))) == 3754
    assert len(load_dataset(DatasetRef(split="all"))) == 4702 == len(load_bundled())
    # the order is the file's order
    order = {p.pair_id: i for i, p in enumerate(load_bundled())}
    assert [order[p.pair_id] for p in pairs] == sorted(order[p.pair_id] for p in pairs)


def test_objective_and_subset_filters() -> None:
    helpful = load_dataset(DatasetRef(objectives=["helpful"], split="train"))
    assert len(helpful) == 1245 and {p.objective for p in helpful} == {"helpful"}
    sub = load_dataset(DatasetRef(split="all", subsets=["rm-bench/chat", "hh-rlhf/harmless-base"]))
    assert Counter(p.subset for p in sub) == {"rm-bench/chat": 387, "hh-rlhf/harmless-base": 2308}
    with pytest.raises(ValueError, match="bundled: no pairs in subset 'rm-bench/math'; its subsets are: "
                                         "hh-rlhf/harmless-base, rm-bench/chat"):
        load_dataset(DatasetRef(subsets=["rm-bench/math"]))
    with pytest.raises(ValueError) as exc:
        load_dataset(DatasetRef(subsets=["rm-bench/chat"]))  # asks for harmless too: there is none
    assert str(exc.value).startswith("bundled: no harmless pairs for split=test, subsets=['rm-bench/chat']; "
                                     "the data has: harmless/test 651, harmless/train 2509, helpful/test 297")
    with pytest.raises(ValueError, match="objectives"):
        DatasetRef(objectives=[])  # refused by the contract, before any loading
    with pytest.raises(ValueError, match="no objectives asked for"):
        select_pairs(load_dataset(DatasetRef()), objectives=[])


def test_limit_per_objective_is_seeded_and_deterministic() -> None:
    ref = DatasetRef(split="train", limit=25, seed=3)
    a, b = load_dataset(ref), load_dataset(ref)
    assert a == b
    assert Counter(p.objective for p in a) == {"helpful": 25, "harmless": 25}
    full = load_dataset(DatasetRef(split="train"))
    assert {p.pair_id for p in a} <= {p.pair_id for p in full}
    other = load_dataset(DatasetRef(split="train", limit=25, seed=4))
    assert len(other) == 50 and {p.pair_id for p in other} != {p.pair_id for p in a}
    # seeded: the choice does not depend on the order of the input
    assert select_pairs(list(reversed(full)), limit=25, seed=3) == list(reversed(a))
    # a limit above the size keeps everything
    assert load_dataset(DatasetRef(split="test", objectives=["helpful"], limit=10_000)) == \
        load_dataset(DatasetRef(split="test", objectives=["helpful"]))
    # the sample draws from every subset, not the first rows of the file
    big = load_dataset(DatasetRef(split="all", limit=400, seed=0))
    assert {p.subset for p in big} == {"rm-bench/chat", "rm-bench/code", "rm-bench/safety-response",
                                       "rm-bench/safety-refuse", "hh-rlhf/harmless-base"}


def test_limit_keeps_items_whole(files: Any) -> None:
    recs = [files.rm_bench(i, f"prompt {i}") for i in range(10)]
    path = files.json("chat.json", recs)
    full = load_pairs_file(path, rm_bench_mode="full")
    kept = select_pairs(full, objectives=["helpful"], limit=20, seed=1)
    assert len(kept) == 18  # two whole items of 9 pairs; a third would exceed the limit
    assert sorted(Counter(p.item_id for p in kept).values()) == [9, 9]
    assert len(select_pairs(full, objectives=["helpful"], limit=4, seed=1)) == 4  # no item fits: part of one


def test_artifact_source_missing_artifact_and_no_paths(files: Any, tmp_path: Path) -> None:
    from workers.storage import ArtifactStore

    store = ArtifactStore(tmp_path / "store")
    recs = [files.canon(i) for i in range(6)]
    store.put_file(files.jsonl("mine.jsonl", recs), "datasets/mine.jsonl")
    pairs = load_dataset(DatasetRef(source="artifact:datasets/mine.jsonl", split="all"), store=store)
    assert [p.pair_id for p in pairs] == [f"p{i}" for i in range(6)]
    test_ref = DatasetRef(source="artifact:datasets/mine.jsonl", split="test")
    assert [p.pair_id for p in load_dataset(test_ref, store=store)] == ["p0", "p3"]
    with pytest.raises(FileNotFoundError):
        load_dataset(DatasetRef(source="artifact:datasets/gone.jsonl"), store=store)
    with pytest.raises(ValueError, match="needs the artifact store"):
        load_dataset(test_ref)
    store.put_file(files.jsonl("h.jsonl", [files.canon(0), files.canon(2)]), "datasets/h.jsonl")
    with pytest.raises(ValueError, match="no helpful pairs for split=all"):
        load_dataset(DatasetRef(source="artifact:datasets/h.jsonl", split="all"), store=store)
    for bad in (str(files.jsonl("x.jsonl", recs)), "../x.jsonl", "artifact:../etc/passwd", "artifact:/etc/passwd",
                "file:///etc/passwd", "dataset:../x"):
        with pytest.raises(ValueError):
            DatasetRef(source=bad)
    with pytest.raises(ValueError, match="not 'hh-rlhf'"):
        load_dataset(DatasetRef(format="hh-rlhf"))


def test_hf_source_goes_through_datasets_load_dataset(monkeypatch: pytest.MonkeyPatch, files: Any) -> None:
    import datasets

    calls: list[tuple[str, str | None]] = []
    rows = {"train": [files.hh([], f"train q{i}", "no.", f"yes {i}") for i in range(4)],
            "test": [files.hh([], f"test q{i}", "no.", f"yes {i}") for i in range(3)]}

    def fake_load_dataset(repo: str, data_dir: str | None = None) -> datasets.DatasetDict:
        calls.append((repo, data_dir))
        return datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in rows.items()})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    pairs = load_dataset(DatasetRef(source="hf:Anthropic/hh-rlhf/helpful-base", split="all",
                                       objectives=["helpful"]))
    assert calls == [("Anthropic/hh-rlhf", "helpful-base")]
    assert Counter(p.split for p in pairs) == {"train": 4, "test": 3}  # the hub's splits are kept
    assert {(p.objective, p.subset) for p in pairs} == {("helpful", "hh-rlhf/helpful-base")}
    assert pairs[0].pair_id == "hh-rlhf/helpful-base/test/1"
    with pytest.raises(ValueError, match="expected 'hf:<owner>/<name>"):
        load_dataset(DatasetRef(source="hf:justone"))


def test_hf_source_error_names_the_row(monkeypatch: pytest.MonkeyPatch) -> None:
    rows = {"test": [{"prompt": 1, "chosen": "a", "rejected": "b"}]}
    fake = types.SimpleNamespace(load_dataset=lambda repo, data_dir=None: rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    from workers.data.loaders import DatasetFormatError

    with pytest.raises(DatasetFormatError) as exc:
        load_dataset(DatasetRef(source="hf:o/n"))
    assert str(exc.value) == ("hf:o/n[test], row 1: 'prompt' must be a string, got int "
                              "(layout canonical, detected from row 1)")


def test_dataset_revision(files: Any) -> None:
    assert dataset_revision("bundled") == hashlib.sha256(bundled_path().read_bytes()).hexdigest()[:16]
    hf_id = "hf:Anthropic/hh-rlhf"
    assert dataset_revision(hf_id) == hashlib.sha256(hf_id.encode()).hexdigest()[:16]
    path = files.jsonl("r.jsonl", [files.canon(1)])
    rev = dataset_revision(str(path))
    assert rev == hashlib.sha256(path.read_bytes()).hexdigest()[:16] and len(rev) == 16
    files.jsonl("r.jsonl", [files.canon(2)])
    assert dataset_revision(str(path)) != rev
    with pytest.raises(FileNotFoundError):
        dataset_revision(str(files.root / "none.jsonl"))
