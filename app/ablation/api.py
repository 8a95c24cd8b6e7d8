"""Ablation API: live toggles (GET: a look, allowed through read-only links) and experiment results."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.concurrency import run_in_threadpool

from app.ablation import service
from app.ablation.live import LivePoolDep, new_request_id
from app.ablation.runs import LiveRunsDep, live_channel, run_out
from app.ablation.schemas import (
    AblationResult,
    AblationRunSummary,
    LiveEstimateOut,
    LiveRunOut,
    LiveSessionOut,
    LiveToggleAnswer,
    ToggleQuery,
)
from app.core.deps import CheckpointDep, ServicesDep, StoreDep
from app.core.errors import Unavailable

RunId = Annotated[str, Path(max_length=64, pattern=r"^[0-9a-f]{1,64}$", description="a live run's id")]

router = APIRouter(tags=["ablation"])


@router.get("/api/live/{checkpoint}/toggle", response_model=LiveToggleAnswer)
async def toggle(request: Request, checkpoint: CheckpointDep, query: Annotated[ToggleQuery, Query()],
                 services: ServicesDep, pool: LivePoolDep, runs: LiveRunsDep) -> LiveToggleAnswer:
    """Switch neurons off in a warm copy of the RM; the per-objective shift on the probe pairs, exact, at once.

    Computed round by round like the pages' toggles: a client that goes away stops the work on the worker."""
    chosen = await run_in_threadpool(service.toggle_neurons, store=services.store, db=services.db,
                                     checkpoint=checkpoint, which=query)
    run = await run_in_threadpool(
        service.start_live_run, store=services.store, settings=services.settings, pool=pool, runs=runs,
        checkpoint=checkpoint, chosen=chosen, how=query, hook=query.hook, path=query.path, control=False,
        watched=False, channel=f"api:{new_request_id()}", meta={"what": "neurons (API)"})
    while not run.finished:
        if await request.is_disconnected():
            runs.stop(run.id, "abandoned")
            raise Unavailable("the client went away; the toggle's work was stopped")
        await run_in_threadpool(run.wait, run.version, 0.5)
    exact = run.rounds.get("set")
    if run.state != "done" or exact is None or exact.answer is None:
        raise Unavailable(f"the toggle ended {run.state}: {run.error or 'no exact answer'}")
    return LiveToggleAnswer(**dict(exact.answer), roundtrip_ms=run.exact_ms or run.since_ms(),
                            n_neurons=chosen.size(), neurons=chosen.as_json())


@router.get("/api/live/{checkpoint}/stream", response_model=LiveRunOut)
def stream(request: Request, checkpoint: CheckpointDep, query: Annotated[ToggleQuery, Query()],
           services: ServicesDep, pool: LivePoolDep, runs: LiveRunsDep) -> LiveRunOut:
    """Start a live run (answers at once): poll `/api/live/runs/{id}` for its estimate and exact rounds. A
    newer run of the same caller supersedes it; one nobody polls for a few seconds is stopped."""
    chosen = service.toggle_neurons(store=services.store, db=services.db, checkpoint=checkpoint, which=query)
    run = service.start_live_run(store=services.store, settings=services.settings, pool=pool, runs=runs,
                                 checkpoint=checkpoint, chosen=chosen, how=query, hook=query.hook, path=query.path,
                                 channel=live_channel(request), meta={"what": "neurons (API)"})
    return run_out(run)


@router.get("/api/live/runs/{run_id}", response_model=LiveRunOut)
def run_status(request: Request, run_id: RunId, runs: LiveRunsDep,
               since: Annotated[int, Query(ge=-1, le=1_000_000, description="wait for a version after this")] = -1,
               wait: Annotated[float, Query(ge=0, le=10, description="seconds to wait for a change")] = 0.0,
               ) -> LiveRunOut:
    """A live run as it stands (optionally a long poll: until its version passes `since`, at most `wait` s)."""
    run = runs.get(run_id, channel=live_channel(request))
    if wait:
        run.wait(since, wait)
    return run_out(run)


@router.delete("/api/live/runs/{run_id}", response_model=LiveRunOut)
def run_cancel(request: Request, run_id: RunId, runs: LiveRunsDep) -> LiveRunOut:
    """Stop a run's exact work on its worker."""
    run = runs.get(run_id, channel=live_channel(request))
    runs.stop(run.id, "cancelled")
    return run_out(run)


@router.get("/api/live/sessions", response_model=list[LiveSessionOut])
def sessions(pool: LivePoolDep) -> list[LiveSessionOut]:
    """The warm live workers, least recently used first: ready or starting, start-up time, memory."""
    return [LiveSessionOut.model_validate(s) for s in pool.status()]


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
