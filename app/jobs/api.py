"""JSON routes of jobs: submit, list, inspect, cancel, retry."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from app.core.deps import ServicesDep
from app.jobs.schemas import JobCreate, JobOut
from workers.contract.vocab import JobKind, JobStatus

router = APIRouter(prefix="/api/jobs", tags=["jobs"])


@router.post("", status_code=202)
def submit(body: JobCreate, services: ServicesDep) -> JobOut:
    job, cached = services.jobs.submit(body.kind, body.params)
    return JobOut.of(job, cached=cached)


JobId = Annotated[str, Path(max_length=64, description="job id")]


@router.get("")
def list_jobs(services: ServicesDep, status: JobStatus | None = None, kind: JobKind | None = None,
              limit: Annotated[int, Query(ge=1, le=1000, description="newest jobs to list")] = 100) -> list[JobOut]:
    """The newest jobs first."""
    return [JobOut.of(j) for j in services.jobs.list(status, kind, limit)]


@router.get("/{job_id}")
def get_job(job_id: JobId, services: ServicesDep) -> JobOut:
    return JobOut.of(services.jobs.get(job_id))


@router.post("/{job_id}/cancel")
def cancel(job_id: JobId, services: ServicesDep) -> JobOut:
    return JobOut.of(services.jobs.cancel(job_id))


@router.post("/{job_id}/retry")
def retry(job_id: JobId, services: ServicesDep) -> JobOut:
    return JobOut.of(services.jobs.retry(job_id))
