"""Scoring jobs: validation at submission and reading rewards back from DuckDB."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from app.core.checks import check_checkpoint, check_model, load_checked_dataset, resolve_dataset
from workers.contract.jobs import ScoreParams

if TYPE_CHECKING:
    from app.core.services import Services


def prepare_score(services: Services, params: ScoreParams) -> str:
    check_model(params.model)
    ck_rev = ""
    if params.checkpoint:
        ck_rev = check_checkpoint(services, params.checkpoint).id
    params.dataset = resolve_dataset(services, params.dataset)
    _, revision = load_checked_dataset(services, params.dataset)
    return f"{revision}:{ck_rev}"


def rewards(services: Services, result_key: str, limit: int = 1000, offset: int = 0) -> list[dict[str, Any]]:
    return services.store.query(
        "SELECT pair_id, item_id, objective, subset, split, side, n_tokens, reward FROM rewards "
        "WHERE result_key = ? ORDER BY pair_id, side LIMIT ? OFFSET ?", [result_key, limit, offset])


def reward_summary(services: Services, result_key: str) -> list[dict[str, Any]]:
    return services.store.query(
        "WITH p AS (SELECT pair_id, objective, subset,"
        " max(reward) FILTER (WHERE side='chosen') AS rc, max(reward) FILTER (WHERE side='rejected') AS rr"
        " FROM rewards WHERE result_key = ? GROUP BY ALL)"
        " SELECT objective, subset, count(*) AS n_pairs, avg(CASE WHEN rc > rr THEN 1.0 ELSE 0.0 END) AS accuracy,"
        " avg(rc) AS mean_chosen, avg(rr) AS mean_rejected FROM p GROUP BY ALL ORDER BY objective, subset",
        [result_key])


def reward_values(services: Services, result_key: str) -> dict[str, list[float]]:
    rows = services.store.query("SELECT side, reward FROM rewards WHERE result_key = ?", [result_key])
    out: dict[str, list[float]] = {"chosen": [], "rejected": []}
    for r in rows:
        out[r["side"]].append(float(r["reward"]))
    return out
