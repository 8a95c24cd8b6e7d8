"""Opening a share link (a redirect to the shared view) and the page of one's own links."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.core.db import utcnow
from app.core.deps import DatabaseDep, SettingsDep
from app.shares import service
from app.web.templating import render

router = APIRouter(include_in_schema=False)


@router.get(service.PREFIX + "{token}")
def open_share(token: str, db: DatabaseDep, settings: SettingsDep) -> RedirectResponse:
    """Open the shared view; the token rides along in the URL and in every htmx request's header."""
    return RedirectResponse(service.opened(db=db, settings=settings, token=token[:64]), status_code=303)


@router.get("/shares", response_class=HTMLResponse)
def my_shares(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    links = [_row(link, settings) for link in service.list_shares(db=db)]
    return render(request, "_shared/shares.html", links=links)


def _row(link: Any, settings: Any) -> dict[str, Any]:
    expires = service.expires_at(link, settings)
    return {"token": link.token, "target": link.target, "created_at": link.created_at, "expires_at": expires,
            "revoked_at": link.revoked_at, "expired": expires <= utcnow()}


@router.post("/ui/shares/{token}/revoke", response_class=HTMLResponse)
def revoke_row(request: Request, token: str, db: DatabaseDep, settings: SettingsDep) -> Response:
    """The revoke button: revoke, then the row as it now reads."""
    link = service.revoke(db=db, token=token[:64])
    return render(request, "_shared/_share_row.html", l=_row(link, settings))
