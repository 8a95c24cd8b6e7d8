"""HTML pages and htmx partials of jobs: the job table, a job's status card, a job's page."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.core.deps import ServicesDep
from app.jobs.schemas import JobRuntime
from app.web.templating import render, templates

router = APIRouter(include_in_schema=False)

RECENT_JOBS = 50
"""How many jobs the job tables show."""

MB = 1024 * 1024


@dataclass(frozen=True)
class RuntimeView:
    """What a job's card says of where it ran: plain values, the template escapes them."""

    host: str | None
    node_ip: str | None
    ray_node_id: str | None
    gpu: str | None
    peak_mb: float | None
    peak_gpu_mb: float | None
    request: str
    dashboard_link: str | None


def _request_text(request: dict[str, float]) -> str:
    return ", ".join(f"memory {v / MB:,.0f} MB" if k == "memory" else f"{k} {v:g}" for k, v in sorted(request.items()))


def job_runtime(request: Request, job: Any) -> RuntimeView | None:
    """The runtime line of a job's card; None before anything is known. The Ray dashboard link needs
    TENSION_RAY_DASHBOARD_URL (the address browsers reach, not the API's)."""
    rt = JobRuntime.of(job)
    w = rt.worker
    if w is None and not rt.request and not rt.placement:
        return None
    dashboard = request.app.state.services.settings.ray_dashboard_url
    sid = rt.placement.get("ray_submission_id")
    return RuntimeView(
        host=w.hostname if w else None, node_ip=(w.node_ip if w else None) or rt.placement.get("ray_node_ip"),
        ray_node_id=rt.placement.get("ray_node_id"), gpu=w.device if w else None,
        peak_mb=w.peak_rss_bytes / MB if w and w.peak_rss_bytes else None,
        peak_gpu_mb=w.peak_gpu_bytes / MB if w and w.peak_gpu_bytes else None, request=_request_text(rt.request),
        dashboard_link=f"{dashboard.rstrip('/')}/#/jobs/{sid}" if dashboard and sid else None)


templates.env.globals["job_runtime"] = job_runtime


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
