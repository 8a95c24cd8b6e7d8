"""Reward-model lab pages (`/lab/...`): the launch forms, the runs list, one RM, the regime comparison.

Routes are thin: numbers come from `app.evaluation.service`, figures from `app.evaluation.figures`.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.core.db import Job
from app.core.deps import CheckpointDep, DatabaseDep, ServicesDep, StoreDep
from app.core.errors import AppError, Invalid, NotFound
from app.datasets import service as datasets
from app.evaluation import figures, service
from app.evaluation.queries import OVERALL
from app.evaluation.schemas import LaunchedJob
from app.jobs.service import JobService
from app.web.templating import templates
from workers.contract.vocab import REGIMES, JobKind, Preset, Regime, Split
from workers.models.names import REGISTERED_MODELS

router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str, **ctx: Any) -> Response:
    return templates.TemplateResponse(request, f"evaluation/{name}", ctx)


def _lab_jobs(jobs: JobService) -> list[Job]:
    recent = jobs.list(kind=JobKind.train, limit=30) + jobs.list(kind=JobKind.evaluate, limit=30)
    return sorted(recent, key=lambda j: j.created_at, reverse=True)[:30]


@router.get("/lab", response_class=HTMLResponse)
def lab_page(request: Request, services: ServicesDep) -> Response:
    return _page(request, "index.html", models=list(REGISTERED_MODELS),
                 checkpoints=service.checkpoints(db=services.db), datasets=datasets.list_datasets(db=services.db),
                 jobs=_lab_jobs(services.jobs), regimes=REGIMES)


@router.get("/lab/ui/jobs", response_class=HTMLResponse)
def lab_jobs(request: Request, services: ServicesDep) -> Response:
    return templates.TemplateResponse(request, "jobs/_table.html", {"jobs": _lab_jobs(services.jobs)})


@router.post("/lab/ui/train", response_class=HTMLResponse)
def launch_train(request: Request, services: ServicesDep, model: Annotated[str, Form()] = "",
                 model_text: Annotated[str, Form()] = "", regime: Annotated[str, Form()] = Regime.mixed,
                 preset: Annotated[Preset, Form()] = Preset.demo, seed: Annotated[int, Form()] = 0,
                 source: Annotated[str, Form()] = "bundled", limit: Annotated[str, Form()] = "") -> Response:
    name = model_text.strip() or model.strip()
    if not name:
        raise Invalid("choose a model or type a Hugging Face id / local path")
    dataset: dict[str, Any] = {"source": source, "split": Split.train}
    n = service.parse_limit(limit)
    if n is not None:
        dataset["limit"] = n
    launched: list[LaunchedJob] = []
    first_error: AppError | None = None
    for r in service.regimes_of_choice(regime):
        params = {"model": name, "regime": r, "preset": preset, "seed": seed, "dataset": dataset}
        try:
            job, cached = services.jobs.submit(JobKind.train, params)
            launched.append(LaunchedJob(regime=r, job=job, cached=cached, error=None))
        except AppError as exc:
            first_error = first_error or exc
            launched.append(LaunchedJob(regime=r, job=None, cached=False, error=str(exc)))
    if first_error is not None and not any(x.job for x in launched):
        raise first_error
    return _page(request, "launched.html", launched=launched)


@router.post("/lab/ui/evaluate", response_class=HTMLResponse)
def launch_evaluate(request: Request, services: ServicesDep, checkpoints: Annotated[list[str], Form()] = [],  # noqa: B006
                    source: Annotated[str, Form()] = "bundled", split: Annotated[Split, Form()] = Split.test,
                    limit: Annotated[str, Form()] = "") -> Response:
    chosen = [c for c in checkpoints if c.strip()]
    if not chosen:
        raise Invalid("pick at least one checkpoint to evaluate")
    dataset: dict[str, Any] = {"source": source, "split": split}
    n = service.parse_limit(limit)
    if n is not None:
        dataset["limit"] = n
    job, cached = services.jobs.submit(JobKind.evaluate, {"checkpoints": chosen, "dataset": dataset})
    return _page(request, "launched.html", launched=[LaunchedJob(regime=None, job=job, cached=cached, error=None)])


@router.get("/lab/runs", response_class=HTMLResponse)
def runs_page(request: Request, db: DatabaseDep, store: StoreDep) -> Response:
    groups: dict[str, list[Any]] = {}
    for c in service.checkpoint_list(db=db, store=store):
        groups.setdefault(c.base_model, []).append(c)
    return _page(request, "runs.html", groups=groups)


@router.get("/lab/rm/{checkpoint}", response_class=HTMLResponse)
def rm_page(request: Request, ck: CheckpointDep, db: DatabaseDep, store: StoreDep,
            eval: str | None = None) -> Response:
    runs = service.evaluation_runs(db=db, checkpoint_ids=[ck.id])
    if eval:
        if ck.id not in service.run_out(service.evaluation_run(db=db, key=eval)).checkpoints:
            raise NotFound(f"evaluation {eval!r} did not evaluate checkpoint {ck.id!r}")
        key: str | None = eval
    else:
        key = runs[0].result_key if runs else None
    history = service.training_history(store=store, checkpoint=ck.id)
    rows = service.subset_rows(store=store, key=key, checkpoint_ids=[ck.id]) if key else []
    rows.sort(key=lambda r: (service.type_order(r.subset_type), r.subset))
    bins = service.reliability(store=store, key=key, checkpoint=ck.id) if key else []
    specs = {
        "training": figures.training_figure(history) if history else None,
        "accuracy": figures.rm_accuracy_figure(rows, ck.regime) if rows else None,
        "reliability": figures.rm_reliability_figure(bins) if bins else None,
    }
    return _page(request, "rm.html", ck=service.checkpoint_out(ck), meta=service.finite(ck.meta or {}),
                 runs=[service.run_out(r) for r in runs], result_key=key, rows=rows,
                 overall=next((r for r in rows if r.subset == OVERALL), None), history=history,
                 figures=service.finite(specs), type_label=figures.type_label)


@router.get("/lab/compare/{base_model:path}", response_class=HTMLResponse)
def compare_page(request: Request, base_model: str, db: DatabaseDep, store: StoreDep, seed: str = "",
                 eval: str = "") -> Response:
    cmp = service.comparison(db=db, store=store, base_model=base_model, seed=service.parse_seed(seed),
                             key=eval.strip() or None)
    specs = {
        "accuracy": figures.compare_accuracy_figure(cmp) if cmp.subsets else None,
        "types": figures.compare_types_figure(cmp) if cmp.types else None,
        "transfer": figures.transfer_figure(cmp) if cmp.transfer else None,
        "reliability": figures.compare_reliability_figure(cmp.reliability) if cmp.reliability else None,
    }
    runs = service.evaluation_runs(db=db, checkpoint_ids=[c.id for cs in cmp.checkpoints.values() for c in cs])
    return _page(request, "compare.html", cmp=cmp, figures=service.finite(specs),
                 all_seeds=sorted({c.seed for c in service.checkpoints(db=db, base_model=base_model)}),
                 runs=[service.run_out(r) for r in runs], regimes=REGIMES, type_label=figures.type_label,
                 missing=[r for r in REGIMES if not cmp.checkpoints[r]])
