"""JSON routes of stored results: any result's manifest, and a scoring result's rewards."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.core.deps import StoreDep
from app.core.errors import NotFound
from app.core.store import StatsStore
from app.scoring import queries
from app.scoring.schemas import RewardOut, RewardsOut, RewardSummaryOut
from workers.contract.artifacts import ResultManifest

router = APIRouter(prefix="/api/results", tags=["results"])


def stored_manifest(store: StatsStore, result_key: str) -> ResultManifest:
    """The manifest of an ingested result; an unknown key is a 404."""
    raw = store.manifest(result_key)
    if raw is None:
        raise NotFound(f"no stored result with key {result_key!r}")
    return ResultManifest.model_validate(raw)


@router.get("/{result_key}")
def result(result_key: str, store: StoreDep) -> ResultManifest:
    return stored_manifest(store, result_key)


@router.get("/{result_key}/rewards")
def rewards(result_key: str, store: StoreDep,
            limit: Annotated[int, Query(description="rows per page, clamped to 1..100000")] = 1000,
            offset: Annotated[int, Query(description="rows to skip (negative counts as 0)")] = 0) -> RewardsOut:
    if not store.is_ingested(result_key):
        raise NotFound(f"no stored result with key {result_key!r}")
    rows = queries.rewards(store, result_key, limit=min(max(limit, 1), 100000), offset=max(offset, 0))
    return RewardsOut(result_key=result_key,
                      summary=[RewardSummaryOut.model_validate(r) for r in queries.reward_summary(store, result_key)],
                      rows=[RewardOut.model_validate(r) for r in rows])
