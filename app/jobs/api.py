"""JSON routes of jobs: submit, list, inspect, cancel, retry."""

from __future__ import annotations

from fastapi import APIRouter

from app.core.deps import ServicesDep
from app.jobs.schemas import JobCreate, JobOut
from workers.contract.vocab import JobKind, JobStatus

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.post("", status_code=202)
def submit(body: JobCreate, services: ServicesDep) -> JobOut:
    job, cached = services.jobs.submit(body.kind, body.params)
    return JobOut.of(job, cached=cached)


@router.get("")
def list_jobs(services: ServicesDep, status: JobStatus | None = None, kind: JobKind | None = None,
              limit: int = 100) -> list[JobOut]:
    """The newest jobs first; `limit` is clamped to 1..1000."""
    return [JobOut.of(j) for j in services.jobs.list(status, kind, min(max(limit, 1), 1000))]


@router.get("/{job_id}")
def get_job(job_id: str, services: ServicesDep) -> JobOut:
    return JobOut.of(services.jobs.get(job_id))


@router.post("/{job_id}/cancel")
def cancel(job_id: str, services: ServicesDep) -> JobOut:
    return JobOut.of(services.jobs.cancel(job_id))


@router.post("/{job_id}/retry")
def retry(job_id: str, services: ServicesDep) -> JobOut:
    return JobOut.of(services.jobs.retry(job_id))
