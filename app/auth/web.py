"""Cross-site safety at the edge: allowed Host and Origin, CSRF tokens, security headers.

- Host: only the configured names (default: the bound address, localhost, 127.0.0.1, the public URL's host),
  which also defeats DNS rebinding against a loopback server.
- Origin: a request that names another origin (or that a browser marks `Sec-Fetch-Site: cross-site`) may not
  change anything.
- CSRF: a double-submit token (starlette-csrf, signed with itsdangerous) on every state-changing request from a
  browser context (the session cookie, Origin or Sec-Fetch-* headers). A script without them (the CLI,
  httpx, curl) has no ambient credential to forge, and bearer-token requests cannot be sent cross-site
  without CORS, which is off.
- Headers: a CSP without inline script, frame-ancestors none, nosniff, no referrer beyond this origin.
"""

from __future__ import annotations

import functools
from urllib.parse import urlsplit

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette_csrf import CSRFMiddleware

from app.core.settings import Settings

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
UNSAFE = ("POST", "PUT", "PATCH", "DELETE")


def _json_error(status: int, message: str) -> Response:
    return JSONResponse({"detail": message}, status_code=status)


class HostOriginMiddleware:
    """400 for a Host that is not ours; 403 for a change requested from another origin."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.hosts = set(settings.resolved_allowed_hosts)
        public = urlsplit(settings.public_url)
        self.origins = {f"{public.scheme}://{public.netloc}"}
        for h in self.hosts:
            name = f"[{h}]" if ":" in h else h
            for scheme in ("http", "https"):
                self.origins.add(f"{scheme}://{name}:{settings.port}")
                if (scheme, settings.port) in (("http", 80), ("https", 443)):
                    self.origins.add(f"{scheme}://{name}")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict((k.lower(), v) for k, v in scope["headers"])
        host = headers.get(b"host", b"").decode("latin-1")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]").lower()
        if name not in self.hosts:
            await _json_error(400, f"Host: {host[:100]!r} is not an allowed host of this server "
                                   "(settings: TENSION_ALLOWED_HOSTS)")(scope, receive, send)
            return
        if scope["method"] in UNSAFE:
            origin = headers.get(b"origin", b"").decode("latin-1")
            site = headers.get(b"sec-fetch-site", b"").decode("latin-1")
            if (origin and origin.rstrip("/") not in self.origins) or site == "cross-site":
                await _json_error(403, f"Origin: cross-origin request from {origin[:100] or site!r} refused; "
                                       "changes must come from this server's own pages")(scope, receive, send)
                return
        await self.app(scope, receive, send)


class CsrfMiddleware(CSRFMiddleware):
    """starlette-csrf, applied to browser-context requests, answering in the app's JSON error format."""

    def __init__(self, app: ASGIApp, secret: str, *, secure: bool) -> None:
        super().__init__(app, secret, cookie_secure=secure, cookie_samesite="strict", header_name="x-csrftoken")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _browser_context(scope):
            # Nothing to forge; still hand out the cookie, so the page a script fetched can post later.
            await self.app(scope, receive, functools.partial(self.send, send=send, scope=scope))
            return
        await super().__call__(scope, receive, send)

    def _get_error_response(self, request: Request) -> Response:
        return _json_error(403, "X-CSRFToken: missing or wrong CSRF token; reload the page and try again")


def _browser_context(scope: Scope) -> bool:
    """A request a browser could have been tricked into sending: it carries the session cookie, or the
    headers every current browser adds (Origin on a POST, Sec-Fetch-*). A script's cookie jar holding only
    the CSRF cookie is not a credential, so scripts need no token."""
    headers = {k.lower(): v for k, v in scope["headers"]}
    if b"authorization" in headers:
        return False
    if headers.keys() & {b"origin", b"sec-fetch-site", b"sec-fetch-mode"}:
        return True
    return b"tension_session=" in headers.get(b"cookie", b"")


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for k, v in SECURITY_HEADERS:
                    if k.decode() not in headers:
                        headers.append(k.decode(), v.decode())
            await send(message)

        await self.app(scope, receive, with_headers)
