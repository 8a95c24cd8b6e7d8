"""JSON route of share links: create one for a view."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.core.deps import DatabaseDep, SettingsDep
from app.shares import service
from app.shares.schemas import ShareCreate, ShareOut

router = APIRouter(tags=["shares"])


@router.post("/api/shares", status_code=201)
def create(body: ShareCreate, request: Request, db: DatabaseDep, settings: SettingsDep) -> ShareOut:
    link = service.create_share(db=db, target=body.target)
    return ShareOut(token=link.token, target=link.target, read_only=link.read_only,
                    url=service.share_url(settings=settings, link=link, base=str(request.base_url)))
