"""Opening a share link: a redirect to the shared view."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from app.core.deps import DatabaseDep
from app.shares import service

router = APIRouter(include_in_schema=False)


@router.get(service.PREFIX + "{token}")
def open_share(token: str, db: DatabaseDep) -> RedirectResponse:
    """Open the shared view; the token rides along in the URL and in every htmx request's header."""
    return RedirectResponse(service.opened(db=db, token=token), status_code=303)
