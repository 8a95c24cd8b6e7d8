"""Pydantic shapes of jobs at the HTTP edge."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.core.types import UtcDateTime
from workers.contract.artifacts import WorkerRuntime
from workers.contract.vocab import JobKind, JobStatus


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="the kind's typed params (see workers.contract.jobs)")


class JobRuntime(BaseModel):
    """`jobs.runtime`: what a job asked its executor for, and where it ran as the executor and the worker tell."""

    request: dict[str, float] = Field(default_factory=dict,
                                      description="resources asked of the executor (Ray: CPU, memory in bytes, "
                                                  "GPU, custom ones); empty for local")
    parameters: int | None = Field(None, description="the model's parameters the memory request was sized from")
    placement: dict[str, str] = Field(default_factory=dict,
                                      description="the executor's ids: ray_submission_id, ray_node_id, "
                                                  "ray_node_ip")
    worker: WorkerRuntime | None = Field(None, description="the worker's own report (runtime.json)")

    @classmethod
    def of(cls, job: Any) -> JobRuntime:
        """A job row's record (empty for rows from before it was kept, or an unreadable one)."""
        try:
            return cls.model_validate(job.runtime or {})
        except ValidationError:
            return cls()


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: JobKind
    params: dict[str, Any]
    result_key: str
    status: JobStatus
    progress: float
    message: str
    metrics: dict[str, Any]
    heartbeat_at: UtcDateTime | None
    log_tail: str
    error: str | None
    attempts: int
    created_by: str = Field("local", description="who launched it (a user name; `local` in the one-person mode)")
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    cached: bool = Field(False, description="true when a finished or running job with the same result key was reused")
    executor: str = Field("local", description="the executor that ran it (local, ray)")
    runtime: JobRuntime | None = Field(None, description="resources asked for, node, GPU and peak memory")

    @classmethod
    def of(cls, job: Any, *, cached: bool = False) -> JobOut:
        """A job row as the API shows it."""
        return cls.model_validate(job).model_copy(update={"cached": cached})
