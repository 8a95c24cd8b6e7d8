"""DuckDB SQL of scoring results (the `rewards` table)."""

from __future__ import annotations

from typing import Any

from app.core.store import StatsStore
from workers.contract.vocab import Side


def rewards(store: StatsStore, result_key: str, *, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
    """One row per scored text, ordered by pair then side."""
    return store.query(
        "SELECT pair_id, item_id, objective, subset, split, side, n_tokens, reward FROM rewards "
        "WHERE result_key = ? ORDER BY pair_id, side LIMIT ? OFFSET ?", [result_key, limit, offset])


def reward_summary(store: StatsStore, result_key: str) -> list[dict[str, Any]]:
    """Per objective and subset: pairs, accuracy (chosen reward > rejected reward), mean rewards."""
    return store.query(
        "WITH p AS (SELECT pair_id, objective, subset,"
        " max(reward) FILTER (WHERE side = ?) AS rc, max(reward) FILTER (WHERE side = ?) AS rr"
        " FROM rewards WHERE result_key = ? GROUP BY ALL)"
        " SELECT objective, subset, count(*) AS n_pairs, avg(CASE WHEN rc > rr THEN 1.0 ELSE 0.0 END) AS accuracy,"
        " avg(rc) AS mean_chosen, avg(rr) AS mean_rejected FROM p GROUP BY ALL ORDER BY objective, subset",
        [Side.chosen, Side.rejected, result_key])


def reward_values(store: StatsStore, result_key: str) -> dict[Side, list[float]]:
    """Every reward of a result, by side."""
    rows = store.query("SELECT side, reward FROM rewards WHERE result_key = ?", [result_key])
    out: dict[Side, list[float]] = {side: [] for side in Side}
    for r in rows:
        out[Side(r["side"])].append(float(r["reward"]))
    return out
