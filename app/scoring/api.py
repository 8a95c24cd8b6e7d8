"""JSON routes of stored results: any result's manifest, and a scoring result's rewards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.core.deps import StoreDep
from app.core.errors import NotFound
from app.core.store import StatsStore
from app.scoring import queries
from app.scoring.schemas import RewardOut, RewardsOut, RewardSummaryOut
from workers.contract.artifacts import ResultManifest

router = APIRouter(prefix="/api/results", tags=["results"])

MAX_PAGE = 100_000
MAX_OFFSET = 2**63 - 1
"""DuckDB's OFFSET is a signed 64-bit integer."""

ResultKey = Annotated[str, Path(max_length=128, description="a result key")]


def stored_manifest(store: StatsStore, result_key: str) -> ResultManifest:
    """The manifest of an ingested result; an unknown key is a 404."""
    raw = store.manifest(result_key)
    if raw is None:
        raise NotFound(f"no stored result with key {result_key!r}")
    return ResultManifest.model_validate(raw)


@router.get("/{result_key}")
def result(result_key: ResultKey, store: StoreDep) -> ResultManifest:
    return stored_manifest(store, result_key)


@router.get("/{result_key}/rewards")
def rewards(result_key: ResultKey, store: StoreDep,
            limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="rows per page")] = 1000,
            offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="rows to skip")] = 0) -> RewardsOut:
    if not store.is_ingested(result_key):
        raise NotFound(f"no stored result with key {result_key!r}")
    rows = queries.rewards(store, result_key, limit=limit, offset=offset)
    return RewardsOut(result_key=result_key,
                      summary=[RewardSummaryOut.model_validate(r) for r in queries.reward_summary(store, result_key)],
                      rows=[RewardOut.model_validate(r) for r in rows])
