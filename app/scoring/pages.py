"""HTML pages of scoring: the jobs page (launch form and job table), the launch partial, a result's page."""

from __future__ import annotations

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.core.deps import ServicesDep, StoreDep
from app.datasets import service as datasets
from app.jobs.pages import RECENT_JOBS
from app.scoring import figures, queries, service
from app.scoring.api import stored_manifest
from app.web.templating import render
from workers.contract.vocab import JobKind, Split
from workers.models.names import REGISTERED_MODELS

router = APIRouter(include_in_schema=False)

RESULT_PAGE_ROWS = 200
"""Rewards listed on a result's page (the histogram and summary cover all)."""


@router.get("/jobs", response_class=HTMLResponse)
def index(request: Request, services: ServicesDep) -> Response:
    return render(request, "scoring/index.html", jobs=services.jobs.list(limit=RECENT_JOBS),
                  models=list(REGISTERED_MODELS), checkpoints=service.recent_checkpoints(db=services.db),
                  datasets=datasets.list_datasets(db=services.db), splits=[Split.test, Split.train, Split.all])


@router.post("/ui/jobs/score", response_class=HTMLResponse)
def launch_score(request: Request, services: ServicesDep, model: str = Form(...), checkpoint: str = Form(""),
                 source: str = Form("bundled"), split: Split = Form(Split.test), limit: str = Form(""),
                 max_length: int = Form(128)) -> Response:
    params = service.form_params(model=model, checkpoint=checkpoint, source=source, split=split, limit=limit,
                                 max_length=max_length)
    job, cached = services.jobs.submit(JobKind.score, params)
    return render(request, "jobs/_status.html", job=job, cached=cached)


@router.get("/results/{result_key}", response_class=HTMLResponse)
def result_page(request: Request, result_key: str, store: StoreDep) -> Response:
    manifest = stored_manifest(store, result_key)
    return render(request, "scoring/result.html", result_key=result_key, manifest=manifest,
                  hist_spec=figures.reward_histogram(queries.reward_values(store, result_key)),
                  summary=queries.reward_summary(store, result_key),
                  rows=queries.rewards(store, result_key, limit=RESULT_PAGE_ROWS))
