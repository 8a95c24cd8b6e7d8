"""The neuron domain's DuckDB SQL: captures, score aggregates, one neuron's statistics and examples.

Each function takes the `StatsStore` and returns plain rows; no numpy, no HTTP, no SQL elsewhere in
`app.neurons`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.core.store import StatsStore
from workers.contract.vocab import STAT_COLUMN, HookPoint, Objective, Stat

_CAPTURES = (
    "SELECT checkpoint, any_value(base_model) AS base_model, any_value(regime) AS regime, hook,"
    " max(layer) + 1 AS n_layers, max(neuron) + 1 AS n_neurons, any_value(result_key) AS result_key"
    " FROM neuron_stats {where} GROUP BY checkpoint, hook ORDER BY base_model, regime")


def captures(store: StatsStore, base_model: str | None = None) -> list[dict[str, Any]]:
    """One row per captured (checkpoint, hook): base model, regime, layers × neurons, result key."""
    if base_model:
        return store.query(_CAPTURES.format(where="WHERE base_model = ?"), [base_model])
    return store.query(_CAPTURES.format(where=""))


def capture(store: StatsStore, checkpoint: str, hook: HookPoint) -> dict[str, Any] | None:
    """The `captures` row of one checkpoint at one hook, or None."""
    rows = store.query(_CAPTURES.format(where="WHERE checkpoint = ? AND hook = ?"), [checkpoint, str(hook)])
    return rows[0] if rows else None


def scores(store: StatsStore, checkpoint: str, hook: HookPoint, stat: Stat,
           objectives: Sequence[Objective]) -> list[dict[str, Any]]:
    """Per (layer, neuron): the mean over sides of the token-weighted mean of `stat` over `objectives`."""
    col = STAT_COLUMN[stat]
    sql = (
        "WITH per_side AS (SELECT layer, neuron, side,"
        f" sum(n_tokens * {col}) / sum(n_tokens) AS x FROM neuron_stats"
        f" WHERE checkpoint = ? AND hook = ? AND objective IN ({','.join('?' * len(objectives))})"
        " GROUP BY layer, neuron, side)"
        " SELECT layer, neuron, avg(x) AS score, count(*) AS n_sides FROM per_side GROUP BY layer, neuron")
    return store.query(sql, [checkpoint, str(hook), *map(str, objectives)])


def neuron_stats(store: StatsStore, base_model: str, hook: HookPoint, layer: int, neuron: int) -> list[dict[str, Any]]:
    """One neuron's statistics rows in every captured RM of a base model at one hook."""
    return store.query(
        "SELECT checkpoint, regime, hook, objective, side, mean, mean_sq_change, frac_pos, var, max, n_tokens"
        " FROM neuron_stats WHERE base_model = ? AND hook = ? AND layer = ? AND neuron = ?"
        " ORDER BY regime, checkpoint, objective, side", [base_model, str(hook), layer, neuron])


def neuron_examples(store: StatsStore, base_model: str, hook: HookPoint, layer: int,
                    neuron: int) -> list[dict[str, Any]]:
    """One neuron's top activating examples, matched to their capture (and so their hook) by result key."""
    return store.query(
        "SELECT e.checkpoint, s.regime, e.objective, e.side, e.rank, e.pair_id, e.token_pos, e.value,"
        " e.text_before, e.token, e.text_after FROM neuron_examples e"
        " JOIN (SELECT DISTINCT result_key, regime FROM neuron_stats WHERE base_model = ? AND hook = ?) s"
        " USING (result_key) WHERE e.layer = ? AND e.neuron = ?"
        " ORDER BY s.regime, e.checkpoint, e.objective, e.side, e.rank", [base_model, str(hook), layer, neuron])
