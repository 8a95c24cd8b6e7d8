"""A TestClient that behaves like the product's own pages: a Host the server answers to, and the CSRF
token echoed from its cookie on every request (as `frontend/static/app.js` does for htmx)."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.testclient import TestClient


def app_client(app: Any, *, base_url: str = "http://localhost", **kwargs: Any) -> TestClient:
    client = TestClient(app, base_url=base_url, **kwargs)

    def echo_csrf(request: httpx.Request) -> None:
        token = client.cookies.get("csrftoken")
        if token and "x-csrftoken" not in request.headers:
            request.headers["x-csrftoken"] = token

    client.event_hooks["request"].append(echo_csrf)
    return client
