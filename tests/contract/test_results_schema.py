"""Each result row model of the contract must match its DuckDB table in migrations/duckdb/ exactly."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import pytest

from app.core.store import INTERNAL_TABLES, StatsStore
from workers.contract.results import ROW_MODELS, ResultRow

DUCK_TYPES = {str: "VARCHAR", int: ("INTEGER", "BIGINT"), float: "DOUBLE", bool: "BOOLEAN"}


def _model_columns(model: type[ResultRow]) -> list[tuple[str, tuple[str, ...], bool]]:
    out = []
    for name, f in model.model_fields.items():
        args = [a for a in getattr(f.annotation, "__args__", ()) if a is not type(None)]
        base = args[0] if args else f.annotation
        types = DUCK_TYPES[base]
        out.append((name, types if isinstance(types, tuple) else (types,), bool(args)))
    return out


def schema_mismatches(store: StatsStore, model: type[ResultRow]) -> list[str]:
    """Every way `model` and its table disagree (names and order, types, nullability)."""
    rows = store.query("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
                       "WHERE table_name = ? AND column_name <> 'result_key' ORDER BY ordinal_position", [model.TABLE])
    if not rows:
        return [f"no table {model.TABLE!r} in the DuckDB migrations"]
    table = [(r["column_name"], r["data_type"], r["is_nullable"] == "YES") for r in rows]
    cols = _model_columns(model)
    problems = []
    if [c[0] for c in cols] != [t[0] for t in table]:
        problems.append(f"{model.TABLE}: model columns {[c[0] for c in cols]} != table columns {[t[0] for t in table]}")
    by_name = {t[0]: t for t in table}
    for name, types, nullable in cols:
        if name not in by_name:
            continue
        _, dtype, t_null = by_name[name]
        if dtype not in types:
            problems.append(f"{model.TABLE}.{name}: model type {types} != table type {dtype}")
        if nullable != t_null:
            problems.append(f"{model.TABLE}.{name}: model nullable={nullable} != table nullable={t_null}")
    return problems


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> StatsStore:
    return StatsStore(Path(tmp_path_factory.mktemp("duck")) / "s.duckdb")


@pytest.mark.parametrize("model", ROW_MODELS, ids=lambda m: m.TABLE)
def test_row_model_matches_its_table(store: StatsStore, model: type[ResultRow]) -> None:
    assert schema_mismatches(store, model) == []


def test_every_result_table_has_a_row_model(store: StatsStore) -> None:
    tables = {r["table_name"] for r in store.query("SELECT table_name FROM information_schema.tables")}
    internal = set(INTERNAL_TABLES)  # bookkeeping and derived indexes (app.core.store.INDEXES)
    assert tables - internal == {m.TABLE for m in ROW_MODELS}


def test_a_disagreeing_model_is_caught(store: StatsStore) -> None:
    from workers.contract.results import AblationFlipRow, RewardRow

    class ExtraColumn(RewardRow):
        TABLE: ClassVar[str] = "rewards"
        temperature: float | None

    class WrongType(ResultRow):
        TABLE: ClassVar[str] = "ablation_flips"
        checkpoint: str
        experiment: str
        condition: str
        p: str | None  # DOUBLE in the table
        item_id: str
        subset: str | None
        objective: str | None
        before: bool | None
        after: bool | None
        margin_before: float | None
        margin_after: float | None

    class WrongNullability(AblationFlipRow):
        TABLE: ClassVar[str] = "ablation_flips"
        item_id: str | None  # type: ignore[assignment]  # NOT NULL in the table

    assert any("temperature" in p for p in schema_mismatches(store, ExtraColumn))
    assert any("ablation_flips.p" in p for p in schema_mismatches(store, WrongType))
    assert any("item_id" in p and "nullable" in p for p in schema_mismatches(store, WrongNullability))
