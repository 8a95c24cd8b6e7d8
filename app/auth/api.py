"""Who am I: the caller as the server sees it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.auth.access import login_required
from app.auth.schemas import Actor, Me
from app.core.deps import ServicesDep

router = APIRouter(tags=["auth"])


@router.get("/api/me")
def me(request: Request, services: ServicesDep) -> Me:
    actor: Actor = request.state.actor
    return Me(name=actor.name, kind=actor.kind, role=actor.role,
              login_required=login_required(services.settings, services.db))
