"""`select_top` selects with `workers.neurons.selection.top_percent`; the DuckDB SQL it used before is the oracle.

The former implementation (θ = quantile_cont(S, 1 − p/100) in SQL, S ≥ θ, tie flag from the untied count) is
kept here verbatim and run on the same `neuron_stats` rows: masks, requested and selected counts and the tie
flag must be equal, the threshold equal to ~1e-12 relative (numpy and DuckDB interpolate in a different
order, so θ may differ in its last bits; no selection does). Fast and torch-free: no app, no training.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pytest

from app.core.errors import Invalid
from app.neurons import service
from workers.neurons import selection as sel

SCHEMA = ("CREATE TABLE neuron_stats (result_key VARCHAR, checkpoint VARCHAR, base_model VARCHAR, regime VARCHAR,"
          " hook VARCHAR, objective VARCHAR, side VARCHAR, layer INTEGER, neuron INTEGER, mean DOUBLE,"
          " mean_sq_change DOUBLE, frac_pos DOUBLE, n_tokens BIGINT)")
STAT_COLUMN = {"A": "mean", "C": "mean_sq_change", "P": "frac_pos"}
PERCENTS = (0.0, 0.5, 1.0, 2.5, 5.0, 10.0, 12.3, 20.0, 25.0, 33.3, 37.5, 50.0, 90.0, 99.9, 100.0)


class _Store:
    def __init__(self, conn: duckdb.DuckDBPyConnection) -> None:
        self.conn = conn

    def query(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        cur = self.conn.execute(sql, params or [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]


def _old_select_top(store: _Store, shape: tuple[int, int], p: float, stat: str, objs: list[str]) -> dict[str, Any]:
    """The DuckDB implementation `select_top` had before it called `top_percent` (verbatim SQL and logic)."""
    mask = np.zeros(shape, dtype=bool)
    requested = sel.requested_count(shape[0] * shape[1], p)
    if p == 0:
        return {"mask": mask, "threshold": float("inf"), "requested": 0, "selected": 0, "tied": False}
    score_sql = (
        "WITH per_side AS (SELECT layer, neuron, side,"
        f" sum(n_tokens * {STAT_COLUMN[stat]}) / sum(n_tokens) AS x FROM neuron_stats"
        f" WHERE checkpoint = ? AND hook = ? AND objective IN ({','.join('?' * len(objs))})"
        " GROUP BY layer, neuron, side)"
        " SELECT layer, neuron, avg(x) AS score, count(*) AS n_sides FROM per_side GROUP BY layer, neuron")
    sql = (f"WITH s AS ({score_sql}), t AS (SELECT quantile_cont(score, ?) AS theta FROM s)"
           " SELECT layer, neuron, theta FROM s, t WHERE score >= theta")
    rows = store.query(sql, ["ck", "down_proj_input", *objs, 1 - p / 100])
    for r in rows:
        mask[r["layer"], r["neuron"]] = True
    theta = float(rows[0]["theta"]) if rows else float("nan")
    selected = int(mask.sum())
    tied = p > 0 and selected > max(requested, sel.untied_count(mask.size, p))
    return {"mask": mask, "threshold": theta, "requested": requested, "selected": selected, "tied": tied}


def _store(rng: np.random.Generator, kind: int) -> tuple[_Store, tuple[int, int]]:
    """A mixed-regime RM's `neuron_stats` rows (both objectives, both sides) with seeded scores."""
    shape = (int(rng.integers(1, 5)), int(rng.integers(1, 200)))
    conn = duckdb.connect()
    conn.execute(SCHEMA)
    rows = []
    for objective in ("helpful", "harmless"):
        for side in ("chosen", "rejected"):
            if kind == 0:  # distinct scores
                a = rng.normal(size=shape)
            elif kind == 1:  # heavy ties (the study's GPT-2-large case in miniature)
                a = rng.integers(0, 4, size=shape).astype(float)
            else:  # rounded: some ties
                a = np.round(rng.normal(size=shape), 2)
            c = rng.exponential(size=shape)
            fp = rng.integers(0, 5, size=shape) / 4
            n_tok = int(rng.integers(1, 50))
            rows += [("rk", "ck", "tiny-bert", "mixed", "down_proj_input", objective, side, layer, neuron,
                      float(a[layer, neuron]), float(c[layer, neuron]), float(fp[layer, neuron]), n_tok)
                     for layer in range(shape[0]) for neuron in range(shape[1])]
    conn.executemany(f"INSERT INTO neuron_stats VALUES ({', '.join('?' * 13)})", rows)
    return _Store(conn), shape


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_select_top_equals_the_former_duckdb_selection(kind: int) -> None:
    rng = np.random.default_rng(kind)
    for _ in range(4):
        store, shape = _store(rng, kind)
        for stat in ("A", "C", "P"):
            for scope, objs in (("own", ["helpful", "harmless"]), ("helpful", ["helpful"])):
                for p in PERCENTS:
                    got = service.select_top(store=store, checkpoint="ck", p=p, stat=stat,  # type: ignore[arg-type]
                                             scope=scope)
                    want = _old_select_top(store, shape, p, stat, objs)
                    where = (stat, scope, p)
                    assert np.array_equal(got.mask, want["mask"]), where
                    assert (got.requested, got.selected, got.tied) == \
                        (want["requested"], want["selected"], want["tied"]), where
                    assert got.threshold == pytest.approx(want["threshold"], rel=1e-12, abs=1e-300), where


def test_select_top_refuses_bad_p_and_missing_statistics() -> None:
    store, _ = _store(np.random.default_rng(9), 0)
    with pytest.raises(Invalid, match="p must be"):
        service.select_top(store=store, checkpoint="ck", p=101.0)  # type: ignore[arg-type]
    store.conn.execute("UPDATE neuron_stats SET frac_pos = NULL WHERE layer = 0 AND neuron = 0")
    with pytest.raises(Invalid, match="NaN"):
        service.select_top(store=store, checkpoint="ck", p=10.0, stat="P")  # type: ignore[arg-type]
