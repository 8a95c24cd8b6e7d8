"""Who may do what, decided once per request before any route runs.

Order of checks (pure ASGI, so it costs one dict lookup on the fast path):
1. Public routes (static files, /healthz, the login page) pass.
2. A share token (`?share=` or the `X-Tension-Share` header) is a capability: GET/HEAD only, within its scope
   (`app.shares.scope`), live toggles rate-limited per link; unknown 404, revoked or expired 410.
3. `Authorization: Bearer <token>` names a user (an unknown token is a 401, never a fallback).
4. A signed session cookie (Starlette's SessionMiddleware, itsdangerous) names a user.
5. Nobody: in the one-person mode (bound to loopback, no users, auth not forced on) the request acts as
   `local`, a researcher; otherwise pages redirect to /login and everything else is a 401.
Then the role: viewers read (GET/HEAD), researchers also launch, upload and share.
"""

from __future__ import annotations

import time
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from app.auth import users
from app.auth.schemas import ANONYMOUS, LOCAL, Actor, ActorKind, Role
from app.core.db import CURRENT_ACTOR, Database
from app.core.errors import AppError, Forbidden, Unauthorized
from app.core.settings import Settings
from app.shares import scope as share_scope
from app.shares import service as shares

PUBLIC_PREFIXES = ("/static/", "/login", "/healthz", "/favicon.ico")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
SESSION_USER = "uid"


def login_required(settings: Settings, db: Database) -> bool:
    """Whether a request without a user is refused."""
    if settings.auth != "auto":
        return settings.auth == "on"  # "off" is refused at start-up unless bound to loopback
    return not settings.loopback or users.users_exist(db)


class AccessMiddleware:
    """Resolves the request's actor (into `request.state.actor` and the creator context) and enforces rights."""

    def __init__(self, app: ASGIApp, settings: Settings, error: object) -> None:
        self.app = app
        self.settings = settings
        self.error = error  # (request, status, message) -> Response, the app's one error format
        self.limiter = shares.RateLimiter(settings.share_toggles_per_minute)
        self._users_seen: tuple[float, bool] = (0.0, False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        state = scope.setdefault("state", {})
        state.update(actor=ANONYMOUS, read_only=False, share_token=None)
        try:
            actor = self._resolve(request)
        except AppError as exc:
            await self._respond(request, exc, scope, receive, send)
            return
        state.update(actor=actor, read_only=actor.kind == ActorKind.share or not actor.may_write,
                     share_token=actor.share_token)
        reset = CURRENT_ACTOR.set(actor.name)
        try:
            await self.app(scope, receive, send)
        finally:
            CURRENT_ACTOR.reset(reset)

    async def _respond(self, request: Request, exc: AppError, scope: Scope, receive: Receive, send: Send) -> None:
        response: Response
        if isinstance(exc, Unauthorized) and request.method == "GET" and not request.headers.get("hx-request") \
                and not request.url.path.startswith("/api/") and "text/html" in request.headers.get("accept", ""):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
        else:
            response = self.error(request, exc.status, exc.message)  # type: ignore[operator]
            if isinstance(exc, Unauthorized):
                response.headers["WWW-Authenticate"] = 'Bearer realm="tension"'
        await response(scope, receive, send)

    def _db(self, request: Request) -> Database:
        return request.app.state.services.db  # type: ignore[no-any-return]

    def _resolve(self, request: Request) -> Actor:
        path, method = request.url.path, request.method
        token = request.query_params.get("share") or request.headers.get(shares.HEADER)
        if token:
            return self._share(request, token)
        if path.startswith(PUBLIC_PREFIXES) or path.startswith(shares.PREFIX):
            return self._user(request) or ANONYMOUS
        actor = self._user(request)
        if actor is None:
            if self._login_required(request):
                raise Unauthorized("log in, or send `Authorization: Bearer <token>` (`tension token NAME` makes one)")
            actor = LOCAL
        if method not in SAFE_METHODS and not actor.may_write:
            raise Forbidden(f"role {actor.role}: viewers may read; launching, uploading and sharing need a "
                            "researcher")
        return actor

    def _login_required(self, request: Request) -> bool:
        """Cached for a second: the CLI adds users from another process, and this runs on every request."""
        at, required = self._users_seen
        now = time.monotonic()
        if now - at > 1.0:
            required = login_required(self.settings, self._db(request))
            self._users_seen = (now, required)
        return required

    def _user(self, request: Request) -> Actor | None:
        db = self._db(request)
        auth = request.headers.get("authorization")
        if auth:
            scheme, _, value = auth.partition(" ")
            user = users.user_by_token(db, value.strip()) if scheme.lower() == "bearer" else None
            if user is None:
                raise Unauthorized("Authorization: unknown or rotated API token (use `Bearer <token>`)")
            return Actor(ActorKind.user, user.name, Role(user.role))
        session = request.scope.get("session") or {}
        if SESSION_USER in session:
            user = users.user_by_id(db, session.get(SESSION_USER))
            if user is not None:
                return Actor(ActorKind.user, user.name, Role(user.role))
        return None

    def _share(self, request: Request, token: str) -> Actor:
        db = self._db(request)
        link = shares.live_link(db, self.settings, token)
        path = request.url.path
        if request.method not in ("GET", "HEAD"):
            raise Forbidden("read-only share link: changes (launching jobs, uploads, edits) are refused")
        if not path.startswith(("/static/", "/healthz", "/glossary", shares.PREFIX)):
            why = share_scope.refusal(db, shares.scope(link), link.target, path, request.url.query)
            if why:
                raise Forbidden(why)
            if share_scope.LIVE_PATHS.match(path):
                self.limiter.take(link.token)
        return Actor(ActorKind.share, f"share:{link.token[:8]}", Role.viewer, share_token=link.token)

