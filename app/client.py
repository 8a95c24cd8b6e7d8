"""How the CLI reaches the product: the running server's HTTP API, or an embedded instance.

The DuckDB file has one owner. When a server is up the CLI talks to it; when none is, the CLI
builds the same services in-process for the duration of the command.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

import httpx

from app.jobs.routes import job_out
from app.jobs.service import JobError
from app.settings import Settings


class Backend(Protocol):
    def submit(self, kind: str, params: dict[str, Any]) -> dict[str, Any]: ...
    def job(self, job_id: str) -> dict[str, Any]: ...
    def jobs(self, status: str | None, kind: str | None, limit: int) -> list[dict[str, Any]]: ...
    def cancel(self, job_id: str) -> dict[str, Any]: ...
    def retry(self, job_id: str) -> dict[str, Any]: ...
    def get(self, path: str) -> Any: ...
    def close(self) -> None: ...


class HttpBackend:
    def __init__(self, base_url: str) -> None:
        self.http = httpx.Client(base_url=base_url, timeout=60)

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.http.request(method, path, **kw)
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail", r.text)
            except (ValueError, AttributeError):
                detail = r.text
            raise JobError(str(detail), r.status_code)
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

    def get(self, path: str) -> Any:
        return self._call("GET", path)

    def close(self) -> None:
        self.http.close()


class EmbeddedBackend:
    """The same services the server uses, in this process; the API's routes are reused via TestClient."""

    def __init__(self, settings: Settings) -> None:
        from fastapi.testclient import TestClient

        from app.main import create_app

        self._tc = TestClient(create_app(settings))
        self._tc.__enter__()
        self._http = HttpBackend.__new__(HttpBackend)
        self._http.http = self._tc  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._http, name)

    def close(self) -> None:
        self._tc.__exit__(None, None, None)


def connect(settings: Settings, url: str | None = None, embedded: bool | None = None) -> Backend:
    """Use the server at `url` if it answers; otherwise run embedded (unless told not to)."""
    base = url or f"http://{settings.host}:{settings.port}"
    if embedded is not True:
        try:
            httpx.get(base + "/healthz", timeout=2).raise_for_status()
            return HttpBackend(base)
        except httpx.HTTPError:
            if embedded is False:
                raise JobError(f"no server answers at {base}; start one with `tension serve`", 503) from None
    return EmbeddedBackend(settings)  # type: ignore[return-value]


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


__all__ = ["Backend", "HttpBackend", "EmbeddedBackend", "connect", "dumps", "job_out"]
