"""Reward-model lab JSON API (`/api/lab/...`): thin routes over `app.evaluation.service`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

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

router = APIRouter(prefix="/api/lab", tags=["evaluation"])


@router.get("/checkpoints")
def api_checkpoints(db: DatabaseDep, store: StoreDep, base_model: str | None = None) -> CheckpointList:
    return CheckpointList(checkpoints=service.checkpoint_list(db=db, store=store, base_model=base_model))


@router.get("/checkpoints/{checkpoint}")
def api_checkpoint(ck: CheckpointDep, db: DatabaseDep) -> CheckpointDetail:
    return service.checkpoint_detail(db=db, ck=ck)


@router.get("/checkpoints/{checkpoint}/history")
def api_history(ck: CheckpointDep, store: StoreDep) -> History:
    return History(checkpoint=ck.id, rows=service.training_history(store=store, checkpoint=ck.id))


@router.get("/evaluations")
def api_evaluations(services: ServicesDep, db: DatabaseDep,
                    checkpoint: Annotated[str | None, Query(description="only evaluations covering it")] = None,
                    ) -> EvaluationList:
    if checkpoint is not None:
        check_checkpoint(services, checkpoint)
    runs = service.evaluation_runs(db=db, checkpoint_ids=[checkpoint] if checkpoint else None)
    return EvaluationList(evaluations=[service.run_out(r) for r in runs])


@router.get("/evaluations/{result_key}")
def api_evaluation(result_key: str, db: DatabaseDep, store: StoreDep) -> EvaluationDetail:
    return service.evaluation_detail(store=store, run=service.evaluation_run(db=db, key=result_key))


@router.get("/evaluations/{result_key}/flips")
def api_flips(result_key: str, db: DatabaseDep, store: StoreDep,
              a: Annotated[str, Query(description="checkpoint id")],
              b: Annotated[str, Query(description="checkpoint id")],
              limit: Annotated[int, Query(description="at most this many items (1 to 10000)")] = 200) -> Flips:
    run = service.evaluation_run(db=db, key=result_key)
    return service.flips(store=store, run=run, a=a, b=b, limit=limit)


@router.get("/compare/{base_model:path}")
def api_compare(base_model: str, db: DatabaseDep, store: StoreDep, seed: int | None = None,
                eval: Annotated[str | None, Query(description="evaluation result key")] = None) -> Comparison:
    return service.comparison(db=db, store=store, base_model=base_model, seed=seed, key=eval or None)
