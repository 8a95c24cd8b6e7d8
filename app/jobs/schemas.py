"""Pydantic shapes of jobs at the HTTP edge."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workers.contract.vocab import JobKind


class JobCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: JobKind
    params: dict[str, Any] = Field(default_factory=dict)


class JobOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    params: dict[str, Any]
    result_key: str
    status: str
    progress: float
    message: str
    metrics: dict[str, Any]
    heartbeat_at: datetime | None
    log_tail: str
    error: str | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    cached: bool = False
