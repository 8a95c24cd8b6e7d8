"""An ASGI middleware that stops a dataset upload's body at `max_upload_bytes` while it arrives.

Starlette spools a multipart upload to a temporary file before any route runs, so the route's own size
check (`service.store_upload`) only sees a body already on disk. This refuses it earlier: a declared
Content-Length beyond the limit is answered 413 before a byte is read, and a body without one is counted
as it streams and cut off at the limit (the route's answer, if any, is replaced by the 413).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_PATHS = frozenset({"/api/datasets", "/ui/datasets"})
MULTIPART_OVERHEAD = 64 * 1024
"""Room for the multipart boundaries and form fields around the file."""


class _BodyTooLarge(Exception):
    pass


class UploadSizeLimit:
    """`app.add_middleware(UploadSizeLimit, max_bytes=settings.max_upload_bytes)`."""

    def __init__(self, app: ASGIApp, max_bytes: int, paths: frozenset[str] = UPLOAD_PATHS) -> None:
        self.app, self.max_bytes, self.paths = app, max_bytes, paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") not in self.paths:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes + MULTIPART_OVERHEAD
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(send)
            return
        state = {"seen": 0, "over": False, "started": False}

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > limit:
                    state["over"] = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message: Message) -> None:
            if state["over"]:
                return  # the app's answer to a cut-off body is replaced by the 413 below
            if message["type"] == "http.response.start":
                state["started"] = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not state["over"]:
                raise
        if state["over"] and not state["started"]:
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps({"detail": f"upload larger than {self.max_bytes:,} bytes as sent (limit max_upload_bytes "
                                     f"= {self.max_bytes:,}; the operator may raise TENSION_MAX_UPLOAD_BYTES)"}
                          ).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
