"""The one shape every preference pair takes, whatever file it came from. Torch-free."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import pyarrow as pa

from workers.contract.vocab import Objective, Split

OBJECTIVES: tuple[str, ...] = tuple(Objective)
SPLITS: tuple[str, ...] = (Split.train, Split.test)
"""The splits a pair can be in (`Split.all` is a selection, not a split)."""

#: Each subset of the bundled demo data and the objective it measures.
SUBSET_TYPE: dict[str, str] = {
    "rm-bench/chat": "helpful",
    "rm-bench/code": "helpful",
    "rm-bench/safety-response": "helpful",
    "rm-bench/safety-refuse": "harmless",
    "hh-rlhf/harmless-base": "harmless",
}

_STR_FIELDS = ("pair_id", "prompt", "chosen", "rejected", "objective", "source", "subset", "split", "item_id")


@dataclass(frozen=True)
class PreferencePair:
    """One (prompt, chosen, rejected) comparison.

    `item_id` groups pairs that form one evaluation item (best-of-n, "min chosen > max rejected");
    it defaults to `pair_id`, i.e. every pair is its own item.
    The constructor validates: a `ValueError` names the offending field.
    """

    pair_id: str
    prompt: str
    chosen: str
    rejected: str
    objective: str
    source: str
    subset: str
    split: str
    item_id: str = ""

    def __post_init__(self) -> None:
        for name in _STR_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str):
                raise ValueError(f"{name!r} must be a string, got {type(value).__name__}")
        if not self.item_id:
            object.__setattr__(self, "item_id", self.pair_id)
        if not self.pair_id:
            raise ValueError("'pair_id' is empty")
        for name in ("chosen", "rejected"):
            if not getattr(self, name).strip():
                raise ValueError(f"{name!r} is empty")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective {self.objective!r} is not one of {', '.join(OBJECTIVES)}")
        if self.split not in SPLITS:
            raise ValueError(f"split {self.split!r} is not one of {', '.join(SPLITS)}")

    def to_dict(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, row: Mapping[str, Any]) -> PreferencePair:
        """Build from a mapping holding every field (`item_id` may be missing or empty)."""
        missing = [n for n in _STR_FIELDS[:-1] if n not in row]
        if missing:
            raise ValueError(f"missing key {missing[0]!r}")
        return cls(**{n: row[n] for n in _STR_FIELDS if n in row and row[n] is not None})


ARROW_SCHEMA = pa.schema([pa.field(name, pa.string(), nullable=False) for name in _STR_FIELDS])


def pairs_to_table(pairs: Iterable[PreferencePair]) -> pa.Table:
    """One string column per field, in field order."""
    rows = list(pairs)
    return pa.table({name: pa.array([getattr(p, name) for p in rows], pa.string()) for name in _STR_FIELDS},
                    schema=ARROW_SCHEMA)


def table_to_pairs(table: pa.Table) -> list[PreferencePair]:
    """Inverse of `pairs_to_table`; every row is validated (ValueError names row and problem)."""
    missing = [n for n in _STR_FIELDS[:-1] if n not in table.column_names]
    if missing:
        raise ValueError(f"table lacks column {missing[0]!r}")
    out = []
    for i, row in enumerate(table.to_pylist()):
        try:
            out.append(PreferencePair.from_dict(row))
        except ValueError as exc:
            raise ValueError(f"row {i + 1}: {exc}") from exc
    return out
