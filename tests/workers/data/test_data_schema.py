"""PreferencePair validation, the Arrow round trip, the subset table."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pyarrow as pa
import pytest

from workers.data.loaders import objective_of_subset
from workers.data.schema import (
    OBJECTIVES,
    SPLITS,
    SUBSET_TYPE,
    PreferencePair,
    pairs_to_table,
    table_to_pairs,
)


def _pair(**kw: str) -> PreferencePair:
    base = {"pair_id": "a/1", "prompt": "q", "chosen": "yes", "rejected": "no", "objective": "helpful",
            "source": "unit", "subset": "unit/a", "split": "train"}
    base.update(kw)
    return PreferencePair(**base)


def test_constants() -> None:
    assert OBJECTIVES == ("helpful", "harmless")
    assert SPLITS == ("train", "test")
    assert SUBSET_TYPE == {
        "rm-bench/chat": "helpful", "rm-bench/code": "helpful", "rm-bench/safety-response": "helpful",
        "rm-bench/safety-refuse": "harmless", "hh-rlhf/harmless-base": "harmless",
    }
    for subset, objective in SUBSET_TYPE.items():
        assert objective_of_subset(subset) == objective
    assert objective_of_subset("rewardbench/refusals-dangerous") == "harmless"
    assert objective_of_subset("rewardbench/alpacaeval-easy") == "helpful"
    assert objective_of_subset("something-else") is None


def test_item_id_defaults_to_pair_id_and_pair_is_frozen() -> None:
    p = _pair()
    assert p.item_id == "a/1"
    assert _pair(item_id="item-7").item_id == "item-7"
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.chosen = "other"  # type: ignore[misc]


@pytest.mark.parametrize(("kw", "message"), [
    ({"objective": "funny"}, "objective 'funny' is not one of helpful, harmless"),
    ({"split": "dev"}, "split 'dev' is not one of train, test"),
    ({"chosen": "  "}, "'chosen' is empty"),
    ({"rejected": ""}, "'rejected' is empty"),
    ({"prompt": 3}, "'prompt' must be a string, got int"),
    ({"pair_id": ""}, "'pair_id' is empty"),
])
def test_validation(kw: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as exc:
        _pair(**kw)  # type: ignore[arg-type]
    assert str(exc.value) == message


def test_arrow_round_trip() -> None:
    pairs = [_pair(pair_id=f"a/{i}", objective=OBJECTIVES[i % 2], split=SPLITS[i % 2], item_id=f"it{i // 2}")
             for i in range(5)]
    table = pairs_to_table(pairs)
    assert table.num_rows == 5
    assert table.column_names == ["pair_id", "prompt", "chosen", "rejected", "objective", "source", "subset",
                                  "split", "item_id"]
    assert all(f.type == pa.string() for f in table.schema)
    assert table.column("item_id").to_pylist() == ["it0", "it0", "it1", "it1", "it2"]
    assert table_to_pairs(table) == pairs
    assert pairs_to_table([]).num_rows == 0


def test_table_to_pairs_names_missing_column_and_bad_row() -> None:
    table = pairs_to_table([_pair()])
    with pytest.raises(ValueError, match="table lacks column 'rejected'"):
        table_to_pairs(table.drop_columns(["rejected"]))
    bad = pa.table({**{n: table.column(n) for n in table.column_names if n != "objective"},
                    "objective": pa.array(["nice"])})
    with pytest.raises(ValueError, match=r"row 1: objective 'nice' is not one of helpful, harmless"):
        table_to_pairs(bad)
    # item_id may be absent: it defaults to pair_id
    assert table_to_pairs(table.drop_columns(["item_id"]))[0].item_id == "a/1"


def test_data_package_imports_without_torch() -> None:
    code = ("import sys; import workers.data.schema, workers.data.text, workers.data.loaders, "
            "workers.data.build_bundled; "
            "bad = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "[]"
