"""Roles, the acting identity, and the user shapes at the HTTP edge."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from pydantic import BaseModel, Field

from app.core.types import UtcDateTime

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Role(StrEnum):
    """viewer: reads everything; researcher: reads, launches jobs, uploads datasets, makes share links."""

    viewer = "viewer"
    researcher = "researcher"


class ActorKind(StrEnum):
    user = "user"  # a named user, by API token or session cookie
    local = "local"  # the one-person loopback mode: no users configured, no login
    share = "share"  # a share-link capability: read-only, one view
    anonymous = "anonymous"  # nobody (public routes only)


@dataclass(frozen=True)
class Actor:
    """Who a request acts as, resolved once by the access middleware."""

    kind: ActorKind
    name: str
    role: Role | None = None
    share_token: str | None = None

    @property
    def may_write(self) -> bool:
        return self.role == Role.researcher and self.kind in (ActorKind.user, ActorKind.local)

    @property
    def may_read(self) -> bool:
        return self.kind != ActorKind.anonymous


ANONYMOUS = Actor(ActorKind.anonymous, "anonymous")
LOCAL = Actor(ActorKind.local, "local", Role.researcher)


class Me(BaseModel):
    """The caller as the server sees it."""

    name: str
    kind: ActorKind
    role: Role | None
    login_required: bool = Field(..., description="whether this server asks every request for a user")


class UserOut(BaseModel):
    name: str
    role: Role
    active: bool
    has_password: bool
    token_created_at: UtcDateTime | None
    created_at: UtcDateTime
