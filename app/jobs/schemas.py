"""Pydantic shapes of jobs at the HTTP edge."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.types import UtcDateTime
from workers.contract.vocab import JobKind, JobStatus


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    params: dict[str, Any] = Field(default_factory=dict,
                                   description="the kind's typed params (see workers.contract.jobs)")


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

    @classmethod
    def of(cls, job: Any, *, cached: bool = False) -> JobOut:
        """A job row as the API shows it."""
        return cls.model_validate(job).model_copy(update={"cached": cached})
