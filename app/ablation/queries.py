"""The ablation domain's DuckDB SQL: experiment rows, verdict flips and the list of stored results."""

from __future__ import annotations

from typing import Any

from app.core.store import StatsStore

MAX_FLIPS = 2000
"""Flipped items a result page (and the JSON API) shows at most."""


def result_rows(store: StatsStore, *, result_key: str) -> list[dict[str, Any]]:
    """Every `ablation_results` row of one result, by experiment, condition, p and group."""
    return store.query("SELECT * FROM ablation_results WHERE result_key = ? ORDER BY experiment, condition, p, grp",
                       [result_key])


def flip_rows(store: StatsStore, *, result_key: str) -> list[dict[str, Any]]:
    """The items whose verdict an ablation flipped (at most `MAX_FLIPS`), by condition and item."""
    return store.query("SELECT * FROM ablation_flips WHERE result_key = ? ORDER BY condition, item_id"
                       f" LIMIT {MAX_FLIPS}", [result_key])


def runs(store: StatsStore, *, checkpoint: str | None = None) -> list[dict[str, Any]]:
    """One row per stored result (optionally of one checkpoint): its key, RM, regime, experiment, row count."""
    sql = ("SELECT result_key, checkpoint, any_value(regime) AS regime, any_value(experiment) AS experiment,"
           " count(*) AS n_rows FROM ablation_results")
    args: list[Any] = []
    if checkpoint:
        sql += " WHERE checkpoint = ?"
        args.append(checkpoint)
    return store.query(sql + " GROUP BY result_key, checkpoint ORDER BY regime, experiment", args)
