"""The login page (browser sessions) and logout. Scripts and the CLI use bearer tokens instead."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app.auth import users
from app.auth.access import SESSION_USER
from app.core.deps import DatabaseDep
from app.core.errors import Unauthorized
from app.web.templating import render

router = APIRouter(include_in_schema=False)


def _local_path(next_: str | None) -> str:
    """Where to go after login: a path on this server only (never `//host` or a URL)."""
    if not next_ or not next_.startswith("/") or next_.startswith("//") or "\\" in next_ or len(next_) > 2000:
        return "/"
    return next_


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None) -> Response:
    return render(request, "auth/login.html", next=_local_path(next))


@router.post("/login")
def login(request: Request, db: DatabaseDep, username: Annotated[str, Form(max_length=64)],
          password: Annotated[str, Form(max_length=1024)], next: Annotated[str, Form(max_length=2000)] = "/",
          ) -> Response:
    user = users.authenticate(db, username, password)
    if user is None:
        raise Unauthorized("wrong user name or password")
    request.session.clear()
    request.session[SESSION_USER] = user.id
    target = _local_path(next)
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(request: Request) -> Response:
    request.session.clear()
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": "/login"})
    return RedirectResponse("/login", status_code=303)
