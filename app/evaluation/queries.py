"""The lab's DuckDB reads: evaluation tables and training curves, as plain row dicts."""

from __future__ import annotations

from typing import Any

from app.core.store import StatsStore

OVERALL = "all"
"""The subset (and subset type) name of an evaluation's overall row."""

_FLIPPED = (" FROM eval_items x JOIN eval_items y USING (result_key, item_id)"
            " WHERE x.result_key = ? AND x.checkpoint = ? AND y.checkpoint = ? AND x.correct <> y.correct")


def _in(values: list[str]) -> str:
    return f"({','.join('?' * len(values))})"


def subset_rows(store: StatsStore, key: str, checkpoint_ids: list[str] | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM eval_subsets WHERE result_key = ?"
    args: list[Any] = [key]
    if checkpoint_ids:
        sql += f" AND checkpoint IN {_in(checkpoint_ids)}"
        args += checkpoint_ids
    return store.query(sql + " ORDER BY regime, seed, subset", args)


def overall_rows(store: StatsStore, checkpoint_ids: list[str]) -> list[dict[str, Any]]:
    """Every stored overall row (subset 'all') of the given checkpoints, in any evaluation."""
    return store.query(
        "SELECT result_key, checkpoint, accuracy, ci_lo, ci_hi, n_items FROM eval_subsets"
        f" WHERE subset = ? AND checkpoint IN {_in(checkpoint_ids)}", [OVERALL, *checkpoint_ids])


def type_rows(store: StatsStore, checkpoint_ids: list[str]) -> list[dict[str, Any]]:
    """Per evaluation, checkpoint and subset type: the item-weighted accuracy of that type's subsets."""
    return store.query(
        "SELECT result_key, checkpoint, subset_type, sum(accuracy * n_items) / sum(n_items) AS accuracy,"
        " sum(n_items) AS n_items FROM eval_subsets"
        f" WHERE subset <> ? AND accuracy IS NOT NULL AND n_items > 0 AND checkpoint IN {_in(checkpoint_ids)}"
        " GROUP BY ALL", [OVERALL, *checkpoint_ids])


def seed_summary(store: StatsStore, key: str) -> list[dict[str, Any]]:
    """Mean ± sample std over seeds, per regime and subset (the paper's reporting unit)."""
    return store.query(
        "SELECT base_model, regime, subset, subset_type, count(*) AS n_seeds, avg(accuracy) AS mean_accuracy,"
        " coalesce(stddev_samp(accuracy), 0) AS std_accuracy, avg(ci_lo) AS ci_lo, avg(ci_hi) AS ci_hi,"
        " avg(length_longer) AS length_longer, avg(length_shorter) AS length_shorter, avg(ece) AS ece"
        " FROM eval_subsets WHERE result_key = ? GROUP BY ALL ORDER BY base_model, subset, regime", [key])


def reliability(store: StatsStore, key: str, checkpoint: str) -> list[dict[str, Any]]:
    return store.query(
        "SELECT scope, bin_lo, bin_hi, count, mean_confidence, accuracy FROM eval_reliability"
        " WHERE result_key = ? AND checkpoint = ? ORDER BY scope, bin_lo", [key, checkpoint])


def transfer(store: StatsStore, key: str) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM eval_transfer WHERE result_key = ? ORDER BY seed, subset", [key])


def training_history(store: StatsStore, checkpoint: str) -> list[dict[str, Any]]:
    return store.query(
        "SELECT step, epoch, train_loss, train_acc, eval_loss, eval_acc FROM training_history"
        " WHERE checkpoint = ? ORDER BY step", [checkpoint])


def flipped_items(store: StatsStore, key: str, a: str, b: str, limit: int = 200) -> list[dict[str, Any]]:
    """Items whose verdict differs between two checkpoints in one evaluation."""
    return store.query(
        "SELECT x.item_id, x.subset, x.correct AS correct_a, y.correct AS correct_b, x.margin AS margin_a,"
        " y.margin AS margin_b" + _FLIPPED + " ORDER BY x.subset, x.item_id LIMIT ?", [key, a, b, limit])


def flip_counts(store: StatsStore, key: str, a: str, b: str) -> dict[str, int]:
    """How many items flip between two checkpoints, and in which direction (a right / b right)."""
    row = store.query(
        "SELECT count(*) AS n_flipped, count(*) FILTER (WHERE x.correct) AS a_only,"
        " count(*) FILTER (WHERE y.correct) AS b_only" + _FLIPPED, [key, a, b])[0]
    return {k: int(v or 0) for k, v in row.items()}
