"""The neuron domain's DuckDB SQL: captures, score inputs, one neuron's statistics and examples.

Each function takes the `StatsStore` and returns plain rows, or for the bulk of a capture's statistics
columns (numpy arrays from DuckDB's columnar fetch); no HTTP, no SQL elsewhere in `app.neurons`.
Captures are looked up in the capture index `neuron_captures` (one row per result, checkpoint and hook,
kept by ingest; migrations/duckdb/005_neuron_captures.sql), never by scanning the statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from app.core.store import StatsStore
from workers.contract.vocab import STAT_COLUMN, HookPoint, Objective, Stat

_CAPTURES = (
    "SELECT checkpoint, any_value(base_model) AS base_model, any_value(regime) AS regime, hook,"
    " max(n_layers) AS n_layers, max(n_neurons) AS n_neurons, min(result_key) AS result_key,"
    " list(result_key ORDER BY result_key) AS result_keys"
    " FROM neuron_captures {where} GROUP BY checkpoint, hook ORDER BY base_model, regime, checkpoint, hook")


def captures(store: StatsStore, base_model: str | None = None) -> list[dict[str, Any]]:
    """One row per captured (checkpoint, hook): base model, regime, layers × neurons, result key(s)."""
    if base_model:
        return store.query(_CAPTURES.format(where="WHERE base_model = ?"), [base_model])
    return store.query(_CAPTURES.format(where=""))


def score_inputs(store: StatsStore, info: dict[str, Any], hook: HookPoint, stat: Stat,
                 objectives: Sequence[Objective]) -> dict[str, np.ndarray]:
    """A capture's rows for the score of `stat` over `objectives`, as columns: i (the row's bin: layer ×
    n_neurons + neuron, plus layers × n_neurons for the rejected side), n (tokens) and nx (tokens ×
    statistic; masked where NULL). `info`: the capture's `captures` row."""
    col = STAT_COLUMN[stat]
    keys = list(info["result_keys"])
    n_neurons, size = int(info["n_neurons"]), int(info["n_layers"]) * int(info["n_neurons"])
    return store.columns(
        f"SELECT layer::BIGINT * {n_neurons} + neuron + CASE WHEN side = 'chosen' THEN 0 ELSE {size} END AS i,"
        f" n_tokens AS n, n_tokens * {col} AS nx FROM neuron_stats"
        f" WHERE result_key IN ({','.join('?' * len(keys))}) AND checkpoint = ? AND hook = ?"
        f" AND objective IN ({','.join('?' * len(objectives))}) AND side IN ('chosen', 'rejected')",
        [*keys, info["checkpoint"], str(hook), *map(str, objectives)])


def neuron_stats(store: StatsStore, result_keys: Sequence[str], base_model: str, hook: HookPoint, layer: int,
                 neuron: int) -> list[dict[str, Any]]:
    """One neuron's statistics rows in every captured RM of a base model at one hook (`result_keys`: the
    base model's captures at that hook)."""
    if not result_keys:
        return []
    return store.query(
        "SELECT checkpoint, regime, hook, objective, side, mean, mean_sq_change, frac_pos, var, max, n_tokens"
        f" FROM neuron_stats WHERE result_key IN ({','.join('?' * len(result_keys))})"
        " AND base_model = ? AND hook = ? AND layer = ? AND neuron = ?"
        " ORDER BY regime, checkpoint, objective, side", [*result_keys, base_model, str(hook), layer, neuron])


def neuron_examples(store: StatsStore, regimes: dict[str, str | None], layer: int,
                    neuron: int) -> list[dict[str, Any]]:
    """One neuron's top activating examples in the captures `regimes` names (result key → its RM's regime,
    from the capture index: a base model's captures at one hook), each with that regime."""
    if not regimes:
        return []
    keys = sorted(regimes)
    rows = store.query(
        "SELECT result_key, checkpoint, objective, side, rank, pair_id, token_pos, value, text_before, token,"
        f" text_after FROM neuron_examples WHERE result_key IN ({','.join('?' * len(keys))})"
        " AND layer = ? AND neuron = ?", [*keys, layer, neuron])
    out = [{"checkpoint": r.pop("checkpoint"), "regime": regimes[r.pop("result_key")], **r} for r in rows]
    out.sort(key=lambda r: (r["regime"] is None, r["regime"] or "", r["checkpoint"], r["objective"], r["side"],
                            r["rank"]))
    return out
