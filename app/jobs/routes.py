from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.core.services import Services, get_services
from app.jobs.schemas import JobCreate, JobOut

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


def job_out(job: Any, cached: bool = False) -> JobOut:
    out = JobOut.model_validate(job)
    out.cached = cached
    return out


@router.post("", status_code=202)
def submit(body: JobCreate, services: Services = Depends(get_services)) -> JobOut:
    job, cached = services.jobs.submit(body.kind, body.params)
    return job_out(job, cached)


@router.get("")
def list_jobs(status: str | None = None, kind: str | None = None, limit: int = 100,
              services: Services = Depends(get_services)) -> list[JobOut]:
    return [job_out(j) for j in services.jobs.list(status, kind, min(max(limit, 1), 1000))]


@router.get("/{job_id}")
def get_job(job_id: str, services: Services = Depends(get_services)) -> JobOut:
    return job_out(services.jobs.get(job_id))


@router.post("/{job_id}/cancel")
def cancel(job_id: str, services: Services = Depends(get_services)) -> JobOut:
    return job_out(services.jobs.cancel(job_id))


@router.post("/{job_id}/retry")
def retry(job_id: str, services: Services = Depends(get_services)) -> JobOut:
    return job_out(services.jobs.retry(job_id))
