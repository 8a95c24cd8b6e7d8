"""Pydantic shapes of share links at the HTTP edge."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from app.core.types import UtcDateTime


class ShareCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target: str = Field(..., max_length=4000, description="a view on this server, such as /results/KEY?view=…")
    expires_in_days: float | None = Field(None, gt=0, le=3650, allow_inf_nan=False,
                                          description="lifetime (default: the server's share_ttl_days, 30)")


class ShareOut(BaseModel):
    token: str
    target: str
    read_only: bool
    url: str = Field(..., description="the link to hand out (built from the configured public URL)")
    scope: dict[str, object] = Field(..., description="what the link may read: a result, an RM or a base model")
    created_by: str
    created_at: UtcDateTime
    expires_at: UtcDateTime
    revoked_at: UtcDateTime | None
