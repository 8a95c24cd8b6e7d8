"""HTML pages and htmx partials; each calls the same services as the JSON API."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select

from app.core.db import Checkpoint
from app.core.errors import Invalid, NotFound
from app.core.services import Services, get_services
from app.datasets import service as datasets
from app.scoring import service as scoring
from app.web.templating import templates
from workers.models.names import REGISTERED_MODELS

router = APIRouter(include_in_schema=False)


def _page(request: Request, name: str, **ctx: Any) -> Response:
    return templates.TemplateResponse(request, name, ctx)


@router.get("/", response_class=HTMLResponse)
def index(request: Request, services: Services = Depends(get_services)) -> Response:
    with services.db.session() as s:
        checkpoints = list(s.scalars(select(Checkpoint).order_by(Checkpoint.created_at.desc())))
    return _page(request, "index.html", jobs=services.jobs.list(limit=50), models=list(REGISTERED_MODELS),
                 checkpoints=checkpoints, datasets=datasets.list_datasets(services))


@router.get("/ui/jobs", response_class=HTMLResponse)
def job_table(request: Request, services: Services = Depends(get_services)) -> Response:
    return _page(request, "partials/job_table.html", jobs=services.jobs.list(limit=50))


@router.post("/ui/jobs/score", response_class=HTMLResponse)
def launch_score(request: Request, model: str = Form(...), checkpoint: str = Form(""),
                 source: str = Form("bundled"), split: str = Form("test"), limit: str = Form(""),
                 max_length: int = Form(128), services: Services = Depends(get_services)) -> Response:
    dataset: dict[str, Any] = {"source": source, "split": split}
    if limit.strip():
        try:
            dataset["limit"] = int(limit)
        except ValueError as exc:
            raise Invalid(f"pairs per objective must be a whole number, got {limit!r}") from exc
    params = {"model": model, "checkpoint": checkpoint or None, "dataset": dataset, "max_length": max_length}
    job, cached = services.jobs.submit("score", params)
    return _page(request, "partials/job_status.html", job=job, cached=cached)


@router.get("/ui/jobs/{job_id}/status", response_class=HTMLResponse)
def job_status(request: Request, job_id: str, services: Services = Depends(get_services)) -> Response:
    return _page(request, "partials/job_status.html", job=services.jobs.get(job_id), cached=False)


@router.post("/ui/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel(request: Request, job_id: str, services: Services = Depends(get_services)) -> Response:
    return _page(request, "partials/job_status.html", job=services.jobs.cancel(job_id), cached=False)


@router.post("/ui/jobs/{job_id}/retry", response_class=HTMLResponse)
def retry(request: Request, job_id: str, services: Services = Depends(get_services)) -> Response:
    return _page(request, "partials/job_status.html", job=services.jobs.retry(job_id), cached=False)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, services: Services = Depends(get_services)) -> Response:
    job = services.jobs.get(job_id)
    return _page(request, "job.html", job=job, cached=False, params_json=json.dumps(job.params, indent=2))


@router.get("/results/{result_key}", response_class=HTMLResponse)
def result_page(request: Request, result_key: str, services: Services = Depends(get_services)) -> Response:
    manifest = services.store.manifest(result_key)
    if manifest is None:
        raise NotFound(f"no stored result with key {result_key!r}")
    values = scoring.reward_values(services, result_key)
    hist_spec = {
        "data": [{"type": "histogram", "x": values[side], "name": side, "opacity": 0.6, "nbinsx": 40}
                 for side in ("chosen", "rejected")],
        "layout": {"barmode": "overlay", "xaxis": {"title": {"text": "reward"}},
                   "yaxis": {"title": {"text": "texts"}}, "margin": {"t": 20}},
    }
    return _page(request, "result.html", result_key=result_key, manifest=manifest, hist_spec=hist_spec,
                 summary=scoring.reward_summary(services, result_key),
                 rows=scoring.rewards(services, result_key, limit=200))


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, services: Services = Depends(get_services)) -> Response:
    from workers.data.loaders import load_bundled

    bundled = load_bundled()
    return _page(request, "datasets.html", datasets=datasets.list_datasets(services), bundled_n=len(bundled),
                 bundled_subsets=sorted({p.subset for p in bundled}))


@router.post("/ui/datasets", response_class=HTMLResponse)
def upload(request: Request, file: UploadFile = File(...), format: str = Form("auto"),
           services: Services = Depends(get_services)) -> Response:
    ds = datasets.store_upload(services, file.file, file.filename or "upload", format)
    return HTMLResponse(templates.env.from_string(
        "<p>Stored <b>{{ d.name }}</b>: {{ d.n_pairs }} pairs ({{ d.objectives|join(', ') }}), "
        "source <code>dataset:{{ d.id }}</code></p>").render(d=ds))
