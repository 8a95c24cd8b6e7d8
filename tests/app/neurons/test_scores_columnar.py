"""Scores are summed by numpy from a columnar fetch; the SQL aggregation that computed them before is the oracle.

Edge cases of the statistics a capture may hold, each in its own neuron: a NULL statistic (on every row of a
side, or on one objective only), a NULL or zero token count, a missing side, a NaN, a neuron with no rows,
and a checkpoint captured twice at one hook (two results whose rows add up). Every scope and statistic must
give what the former SQL gives: NaN, ±inf and finite values in the same places, finite values to 1e-12.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.core.store import StatsStore
from app.neurons import service
from workers.contract.artifacts import ResultManifest, ResultTable
from workers.contract.results import NeuronStatRow
from workers.contract.vocab import STAT_COLUMN, HookPoint, Scope, Stat
from workers.jobs.io import arrow_schema
from workers.storage import ArtifactStore

SHAPE = (2, 8)
OBJECTIVES = {Scope.own: ["helpful", "harmless"], Scope.helpful: ["helpful"], Scope.harmless: ["harmless"],
              Scope.all: ["helpful", "harmless"]}


def _former_scores(store: StatsStore, stat: Stat, objectives: list[str]) -> np.ndarray:
    """The SQL `queries.scores` ran before the columnar fetch (verbatim), into an array as `score_array` did."""
    col = STAT_COLUMN[stat]
    sql = (
        "WITH per_side AS (SELECT layer, neuron, side,"
        f" sum(n_tokens * {col}) / sum(n_tokens) AS x FROM neuron_stats"
        f" WHERE checkpoint = ? AND hook = ? AND objective IN ({','.join('?' * len(objectives))})"
        " GROUP BY layer, neuron, side)"
        " SELECT layer, neuron, avg(x) AS score, count(*) AS n_sides FROM per_side GROUP BY layer, neuron")
    out = np.full(SHAPE, np.nan)
    for r in store.query(sql, ["ck", "down_proj_input", *objectives]):
        out[r["layer"], r["neuron"]] = np.nan if r["score"] is None else r["score"]
    return out


def _rows(rng: np.random.Generator, *, second: bool = False) -> list[dict[str, Any]]:
    rows = []
    for objective in ("helpful", "harmless"):
        for side in ("chosen", "rejected"):
            n = int(rng.integers(5, 500))
            for layer in range(SHAPE[0]):
                for neuron in range(SHAPE[1]):
                    if (layer, neuron) == (1, 7) or (second and layer == 0):
                        continue  # (1, 7): no rows at all; the second capture covers layer 1 only
                    if (layer, neuron) == (0, 4) and side == "rejected":
                        continue  # one side missing
                    value = float(rng.normal())
                    row = {"checkpoint": "ck", "base_model": "m", "regime": "mixed", "hook": "down_proj_input",
                           "objective": objective, "side": side, "layer": layer, "neuron": neuron, "mean": value,
                           "mean_sq_change": value ** 2, "frac_pos": float(rng.uniform()), "var": None, "max": None,
                           "n_tokens": n}
                    if (layer, neuron) == (0, 0) and side == "chosen":
                        row.update(mean=None, mean_sq_change=None, frac_pos=None)  # a side without the statistic
                    if (layer, neuron) == (0, 1) and objective == "harmless":
                        row.update(mean=None, mean_sq_change=None, frac_pos=None)  # one objective without it
                    if (layer, neuron) == (0, 2) and objective == "helpful":
                        row["n_tokens"] = None
                    if (layer, neuron) == (0, 3) and side == "chosen":
                        row["n_tokens"] = 0
                    if (layer, neuron) == (0, 5):
                        row.update(mean=float("nan"), frac_pos=float("nan"))
                    rows.append(row)
    return rows


def _ingest(store: StatsStore, root: Path, job: str, rows: list[dict[str, Any]]) -> None:
    (root / "jobs" / job).mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema(NeuronStatRow)), root / "jobs" / job / "s.parquet")
    store.ingest(ResultManifest(job_id=job, kind="capture", result_key=f"key-{job}", tables=[
        ResultTable(table="neuron_stats", key=f"jobs/{job}/s.parquet", rows=len(rows))]), ArtifactStore(root),
        f"jobs/{job}")


@pytest.mark.parametrize("twice", [False, True], ids=["one capture", "captured twice"])
def test_scores_equal_the_former_sql(tmp_path: Path, twice: bool) -> None:
    rng = np.random.default_rng(3)
    store = StatsStore(":memory:")
    _ingest(store, tmp_path, "a", _rows(rng))
    if twice:
        _ingest(store, tmp_path, "b", _rows(rng, second=True))
    for stat in Stat:
        for scope, objectives in OBJECTIVES.items():
            got = service.score_array(store=store, checkpoint="ck", stat=stat, scope=scope,
                                      hook=HookPoint.down_proj_input)
            want = _former_scores(store, stat, objectives)
            where = (stat, scope)
            assert got.shape == SHAPE, where
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=str(where))
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want), err_msg=str(where))
            finite = np.isfinite(want)
            np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=0, err_msg=str(where))
    assert np.isnan(service.score_array(store=store, checkpoint="ck"))[1, 7]  # no rows: NaN
    store.close()


def test_cached_scores_are_read_only_and_shared(tmp_path: Path) -> None:
    store = StatsStore(":memory:")
    _ingest(store, tmp_path, "a", _rows(np.random.default_rng(4)))
    a = service.score_array(store=store, checkpoint="ck")
    assert service.score_array(store=store, checkpoint="ck") is a
    with pytest.raises(ValueError, match="read-only"):
        a[0, 0] = 1.0
    assert store.cache.hits >= 1
    store.close()
