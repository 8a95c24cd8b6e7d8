"""Reward-model lab JSON API (`/api/lab/...`): thin routes over `app.evaluation.service`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.core.checks import check_checkpoint
from app.core.deps import CheckpointDep, DatabaseDep, ServicesDep, StoreDep
from app.evaluation import service
from app.evaluation.schemas import (
    CheckpointDetail,
    CheckpointList,
    Comparison,
    EvaluationDetail,
    EvaluationList,
    Flips,
    History,
)
from workers.contract.jobs import MAX_SEED

router = APIRouter(prefix="/api/lab", tags=["evaluation"])

CheckpointQuery = Annotated[str, Query(max_length=64, description="checkpoint id")]
CoveringQuery = Annotated[str | None, Query(max_length=64, description="only evaluations covering it")]
ResultKey = Annotated[str, Path(max_length=128, description="evaluation result key")]


@router.get("/checkpoints")
def api_checkpoints(db: DatabaseDep, store: StoreDep,
                    base_model: Annotated[str | None, Query(max_length=300)] = None) -> CheckpointList:
    return CheckpointList(checkpoints=service.checkpoint_list(db=db, store=store, base_model=base_model))


@router.get("/checkpoints/{checkpoint}")
def api_checkpoint(ck: CheckpointDep, db: DatabaseDep) -> CheckpointDetail:
    return service.checkpoint_detail(db=db, ck=ck)


@router.get("/checkpoints/{checkpoint}/history")
def api_history(ck: CheckpointDep, store: StoreDep) -> History:
    return History(checkpoint=ck.id, rows=service.training_history(store=store, checkpoint=ck.id))


@router.get("/evaluations")
def api_evaluations(services: ServicesDep, db: DatabaseDep,
                    checkpoint: CoveringQuery = None) -> EvaluationList:
    if checkpoint is not None:
        check_checkpoint(services, checkpoint)
    runs = service.evaluation_runs(db=db, checkpoint_ids=[checkpoint] if checkpoint else None)
    return EvaluationList(evaluations=[service.run_out(r) for r in runs])


@router.get("/evaluations/{result_key}")
def api_evaluation(result_key: ResultKey, db: DatabaseDep, store: StoreDep) -> EvaluationDetail:
    return service.evaluation_detail(store=store, run=service.evaluation_run(db=db, key=result_key))


@router.get("/evaluations/{result_key}/flips")
def api_flips(result_key: ResultKey, db: DatabaseDep, store: StoreDep, a: CheckpointQuery, b: CheckpointQuery,
              limit: Annotated[int, Query(ge=1, le=10_000, description="at most this many items")] = 200) -> Flips:
    run = service.evaluation_run(db=db, key=result_key)
    return service.flips(store=store, run=run, a=a, b=b, limit=limit)


@router.get("/compare/{base_model:path}")
def api_compare(base_model: Annotated[str, Path(max_length=300)], db: DatabaseDep, store: StoreDep,
                seed: Annotated[int | None, Query(ge=0, le=MAX_SEED)] = None,
                eval: Annotated[str | None, Query(max_length=128, description="evaluation result key")] = None
                ) -> Comparison:
    return service.comparison(db=db, store=store, base_model=base_model, seed=seed, key=eval or None)
