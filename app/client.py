"""How the CLI reaches the product: the running server's HTTP API, or an embedded instance.

The DuckDB file has one owner. When a server is up the CLI talks to it; when none is, the CLI
builds the same services in-process for the duration of the command. Either way every call goes
through the API's routes, so the CLI never reimplements a service. Importing this module loads
neither the services nor torch: the embedded instance is built only when no server answers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Protocol

import httpx

from app.core.settings import Settings


class ApiError(RuntimeError):
    """The API refused a request (or none could be reached); `status` is the HTTP status."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    def submit(self, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...
    def job(self, job_id: str) -> dict[str, Any]: ...
    def jobs(self, status: str | None, kind: str | None, limit: int) -> list[dict[str, Any]]: ...
    def cancel(self, job_id: str) -> dict[str, Any]: ...
    def retry(self, job_id: str) -> dict[str, Any]: ...
    def upload_dataset(self, path: Path, fmt: str = "auto", name: str | None = None,
                       objective: str | None = None) -> dict[str, Any]: ...
    def datasets(self) -> list[dict[str, Any]]: ...
    def get(self, path: str) -> Any: ...
    def post(self, path: str, body: dict[str, Any] | None = None) -> Any: ...
    def close(self) -> None: ...


class HttpBackend:
    def __init__(self, base_url: str, token: str | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base_url, timeout=60, headers=headers,
                                 event_hooks={"request": [self._echo_csrf]})

    def _echo_csrf(self, request: httpx.Request) -> None:
        """Once the server has set its CSRF cookie, send it back as the header, as the pages do."""
        token = self.http.cookies.get("csrftoken")
        if token:
            request.headers["x-csrftoken"] = token

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ApiError(f"the server at {self.http.base_url} did not answer: {exc}", 503) from exc
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except (ValueError, AttributeError):
                detail = r.text
            raise ApiError(detail if isinstance(detail, str) else json.dumps(detail), r.status_code)
        return r.json()

    def submit(self, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/api/jobs", json={"kind": kind, "params": params})  # type: ignore[no-any-return]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/jobs/{job_id}")  # type: ignore[no-any-return]

    def jobs(self, status: str | None, kind: str | None, limit: int) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"status": status, "kind": kind, "limit": limit}.items() if v}
        return self._call("GET", "/api/jobs", params=params)  # type: ignore[no-any-return]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/jobs/{job_id}/cancel")  # type: ignore[no-any-return]

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/jobs/{job_id}/retry")  # type: ignore[no-any-return]

    def upload_dataset(self, path: Path, fmt: str = "auto", name: str | None = None,
                       objective: str | None = None) -> dict[str, Any]:
        """POST the file to /api/datasets; the answer's `source` (`dataset:<id>`) names it in job params."""
        form = {k: v for k, v in {"format": fmt, "name": name, "objective": objective}.items() if v is not None}
        with path.open("rb") as f:
            return self._call("POST", "/api/datasets", files={"file": (path.name, f)},  # type: ignore[no-any-return]
                              data=form)

    def datasets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/datasets")  # type: ignore[no-any-return]

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, json=body)

    def close(self) -> None:
        self.http.close()


class EmbeddedBackend(HttpBackend):
    """The same services the server uses, in this process; the API's routes are reused via TestClient."""

    def __init__(self, settings: Settings) -> None:
        from fastapi.testclient import TestClient

        from app.main import create_app

        # In this process, as the OS user who owns the data: no login (the server's users are for requests).
        local = settings.model_copy(update={"auth": "off", "host": "127.0.0.1"})
        self._tc = TestClient(create_app(local), base_url="http://localhost")
        self._tc.__enter__()
        self.http = self._tc  # type: ignore[assignment]  # an httpx-compatible client (Starlette's)

    def close(self) -> None:
        self._tc.__exit__(None, None, None)


def connect(settings: Settings, url: str | None = None, embedded: bool | None = None) -> Backend:
    """Use the server at `url` if it answers; otherwise run embedded (unless told not to)."""
    base = url or f"http://{settings.host}:{settings.port}"
    if embedded is not True:
        try:
            httpx.get(base + "/healthz", timeout=2).raise_for_status()
            return HttpBackend(base, token=os.environ.get("TENSION_TOKEN"))
        except httpx.HTTPError:
            if embedded is False:
                raise ApiError(f"no server answers at {base}; start one with `tension serve`", 503) from None
    return EmbeddedBackend(settings)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


__all__ = ["ApiError", "Backend", "EmbeddedBackend", "HttpBackend", "connect", "dumps"]
