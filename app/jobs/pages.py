"""HTML pages and htmx partials of jobs: the job table, a job's status card, a job's page."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.core.deps import ServicesDep
from app.web.templating import render

router = APIRouter(include_in_schema=False)

RECENT_JOBS = 50
"""How many jobs the job tables show."""


@router.get("/ui/jobs", response_class=HTMLResponse)
def job_table(request: Request, services: ServicesDep) -> Response:
    return render(request, "jobs/_table.html", jobs=services.jobs.list(limit=RECENT_JOBS))


@router.get("/ui/jobs/{job_id}/status", response_class=HTMLResponse)
def job_status(request: Request, job_id: str, services: ServicesDep) -> Response:
    return render(request, "jobs/_status.html", job=services.jobs.get(job_id), cached=False)


@router.post("/ui/jobs/{job_id}/cancel", response_class=HTMLResponse)
def cancel(request: Request, job_id: str, services: ServicesDep) -> Response:
    return render(request, "jobs/_status.html", job=services.jobs.cancel(job_id), cached=False)


@router.post("/ui/jobs/{job_id}/retry", response_class=HTMLResponse)
def retry(request: Request, job_id: str, services: ServicesDep) -> Response:
    return render(request, "jobs/_status.html", job=services.jobs.retry(job_id), cached=False)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
def job_page(request: Request, job_id: str, services: ServicesDep) -> Response:
    job = services.jobs.get(job_id)
    return render(request, "jobs/job.html", job=job, cached=False, params_json=json.dumps(job.params, indent=2))
