"""Ablation API: live toggles (GET: a look, allowed through read-only links) and experiment results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.ablation import service
from app.ablation.live import LivePoolDep
from app.ablation.schemas import (
    AblationResult,
    AblationRunSummary,
    LiveEstimateOut,
    LiveToggleAnswer,
    ToggleQuery,
)
from app.core.deps import CheckpointDep, ServicesDep, StoreDep

router = APIRouter(tags=["ablation"])


@router.get("/api/live/{checkpoint}/toggle", response_model=LiveToggleAnswer)
def toggle(checkpoint: CheckpointDep, query: Annotated[ToggleQuery, Query()], services: ServicesDep,
           pool: LivePoolDep) -> LiveToggleAnswer:
    """Switch neurons off in a warm copy of the RM; the per-objective shift on the probe pairs."""
    chosen = service.toggle_neurons(store=services.store, db=services.db, checkpoint=checkpoint, which=query)
    return service.live_toggle(store=services.store, settings=services.settings, pool=pool, checkpoint=checkpoint,
                               chosen=chosen, how=query, hook=query.hook, path=query.path)


@router.get("/api/live/{checkpoint}/estimate", response_model=LiveEstimateOut)
def estimate(checkpoint: CheckpointDep, query: Annotated[ToggleQuery, Query()], services: ServicesDep,
             pool: LivePoolDep) -> LiveEstimateOut:
    """The first-order estimate of the same toggle: milliseconds once the worker's estimator is built (the
    first request builds it), labelled as an estimate; `/toggle` gives the exact answer."""
    chosen = service.toggle_neurons(store=services.store, db=services.db, checkpoint=checkpoint, which=query)
    return service.live_estimate(store=services.store, settings=services.settings, pool=pool, checkpoint=checkpoint,
                                 chosen=chosen, how=query, hook=query.hook)


@router.get("/api/ablations", response_model=list[AblationRunSummary])
def list_runs(store: StoreDep, checkpoint: Annotated[str | None, Query(max_length=64)] = None,
              ) -> list[AblationRunSummary]:
    """Every stored ablation result (optionally of one checkpoint)."""
    return service.ablation_runs(store=store, checkpoint=checkpoint)


@router.get("/api/ablations/{result_key}", response_model=AblationResult)
def result(result_key: str, store: StoreDep) -> AblationResult:
    """Every row of one result and the items whose verdict it flipped."""
    return service.results(store=store, result_key=result_key)
