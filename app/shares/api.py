"""JSON routes of share links: make one for a view, list one's own, revoke."""

from __future__ import annotations

from fastapi import APIRouter, Path

from app.core.db import ShareLink
from app.core.deps import DatabaseDep, SettingsDep
from app.core.settings import Settings
from app.shares import service
from app.shares.schemas import ShareCreate, ShareOut

router = APIRouter(tags=["shares"])
Token = Path(..., min_length=1, max_length=64, description="the share token")


def share_out(link: ShareLink, settings: Settings) -> ShareOut:
    return ShareOut(token=link.token, target=link.target, read_only=link.read_only,
                    url=service.share_url(settings=settings, link=link), scope=link.scope or {},
                    created_by=link.created_by, created_at=link.created_at,
                    expires_at=service.expires_at(link, settings), revoked_at=link.revoked_at)


@router.post("/api/shares", status_code=201)
def create(body: ShareCreate, db: DatabaseDep, settings: SettingsDep) -> ShareOut:
    """A read-only link to one view and the data it loads; it expires (default 30 days) and can be revoked."""
    link = service.create_share(db=db, settings=settings, target=body.target, expires_in_days=body.expires_in_days)
    return share_out(link, settings)


@router.get("/api/shares")
def list_mine(db: DatabaseDep, settings: SettingsDep) -> list[ShareOut]:
    """The caller's share links, newest first, revoked and expired ones included."""
    return [share_out(link, settings) for link in service.list_shares(db=db)]


@router.delete("/api/shares/{token}")
def revoke(db: DatabaseDep, settings: SettingsDep, token: str = Token) -> ShareOut:
    """Revoke one of one's links: from now on it answers 410. Revoking twice is harmless."""
    return share_out(service.revoke(db=db, token=token), settings)
