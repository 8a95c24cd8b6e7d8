"""Pydantic shapes of share links at the HTTP edge."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ShareCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(..., description="a path on this server, such as /results/KEY?view=…")


class ShareOut(BaseModel):
    token: str
    target: str
    read_only: bool
    url: str = Field(..., description="the link to hand out")
