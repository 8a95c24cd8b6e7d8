from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse
from pydantic import BaseModel

from app.core.errors import NotFound
from app.core.services import Services, get_services
from app.shares import service

router = APIRouter(tags=["shares"])


class ShareCreate(BaseModel):
    target: str


@router.post("/api/shares", status_code=201)
def create(body: ShareCreate, request: Request, services: Services = Depends(get_services)) -> dict[str, Any]:
    link = service.create_share(services, body.target)
    return {"token": link.token, "target": link.target, "read_only": link.read_only,
            "url": service.share_url(services, link, str(request.base_url))}


@router.get("/s/{token}", include_in_schema=False)
def open_share(token: str, services: Services = Depends(get_services)) -> RedirectResponse:
    """Open the shared view; the token rides along in the URL and in every htmx request's header."""
    link = service.resolve(services, token)
    if link is None:
        raise NotFound("unknown or revoked share link")
    sep = "&" if "?" in link.target else "?"
    return RedirectResponse(f"{link.target}{sep}share={token}", status_code=303)
