"""create_app(): routers, error handlers, static files and the lifespan that owns the stores."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import plotly
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware

from app.auth.access import AccessMiddleware
from app.auth.web import CsrfMiddleware, HostOriginMiddleware, SecurityHeadersMiddleware
from app.core.errors import AppError
from app.core.services import Services
from app.core.settings import Settings, get_settings
from app.datasets.limits import UploadSizeLimit
from workers.contract.version import code_version

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
log = logging.getLogger("tension")

# Every module with a `router`, in the order routes are matched (one line per module; pages last).
ROUTER_MODULES: tuple[str, ...] = (
    "app.auth.api",
    "app.auth.pages",
    "app.jobs.api",
    "app.datasets.api",
    "app.scoring.api",
    "app.evaluation.api",
    "app.evaluation.pages",
    "app.neurons.api",
    "app.neurons.pages",
    "app.ablation.api",
    "app.shares.api",
    "app.ablation.dial",  # before pages: /ui/live/dial is not /ui/live/{checkpoint}
    "app.ablation.pages",
    "app.ablation.agreement_pages",
    "app.jobs.pages",
    "app.datasets.pages",
    "app.scoring.pages",
    "app.shares.pages",
    "app.web.glossary",
    "app.studies.api",
    "app.studies.pages",
)


def create_app(settings: Settings | None = None, *, start_supervisor: bool = True) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = Services.build(settings)
        app.state.services = services
        if start_supervisor:
            services.jobs.start()
        try:
            yield
        finally:
            pool = getattr(app.state, "live_pool", None)
            if pool is not None:
                pool.close()
            services.close()

    if settings.auth == "off" and not settings.loopback:
        raise ValueError(f"TENSION_AUTH=off is refused when bound to {settings.host}: only a loopback server may "
                         "run without users")
    settings.ensure_dirs()
    app = FastAPI(title="RM Tension Explorer", version="0.1.0", lifespan=lifespan, docs_url=None, redoc_url=None,
                  responses=ERROR_RESPONSES)
    # Outermost last: headers on every answer, then Host/Origin, gzip, session, CSRF, who-may-do-what.
    app.add_middleware(UploadSizeLimit, max_bytes=settings.max_upload_bytes)  # before multipart spooling
    app.add_middleware(AccessMiddleware, settings=settings, error=_error)
    app.add_middleware(CsrfMiddleware, secret=settings.resolved_secret_key(),
                       secure=settings.public_url.startswith("https"))
    app.add_middleware(SessionMiddleware, secret_key=settings.resolved_secret_key(), session_cookie="tension_session",
                       max_age=settings.session_max_age_s, same_site="lax",
                       https_only=settings.public_url.startswith("https"))
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)
    app.add_middleware(HostOriginMiddleware, settings=settings)
    app.add_middleware(SecurityHeadersMiddleware)

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        return _error(request, exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return _error(request, 422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if isinstance(exc.__cause__, RecursionError):  # FastAPI's "error parsing the body", named
            return _error(request, 422, "body: JSON nested too deeply to read")
        response = _error(request, exc.status_code, str(exc.detail))
        if exc.status_code == 405:  # every method the path has, not only those of the first route matched
            response.headers["Allow"] = ", ".join(_allowed_methods(request.url.path))
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _error(request, 500, f"internal error ({type(exc).__name__}); nothing was changed")

    @app.get("/healthz", tags=["meta"])
    def healthz(request: Request) -> Health:
        services: Services = request.app.state.services
        return Health(status="ok", schema_=SchemaVersions(metadata=services.metadata_revision,
                                                         duckdb=services.store.schema_version),
                      executor=settings.executor, database=services.db.engine.dialect.name,
                      code_version=code_version())

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="application/javascript")

    app.mount("/static", StaticFiles(directory=FRONTEND / "static"), name="static")

    import importlib

    for module in ROUTER_MODULES:
        app.include_router(importlib.import_module(module).router)
    return app


class ErrorOut(BaseModel):
    """The one error format: what went wrong, naming the field or limit concerned."""

    detail: str


_ERRORS = {400: "bad request (a Host this server does not answer to)",
           401: "no user: log in or send a bearer token", 403: "not allowed for this user or share link",
           404: "not found", 409: "wrong state", 410: "share link revoked or expired",
           413: "too large", 422: "invalid value (the message names the field)",
           429: "rate limited", 502: "a worker answered outside the protocol",
           503: "a helper process is unavailable; retry"}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut, "description": text} for code, text in _ERRORS.items()}


class SchemaVersions(BaseModel):
    metadata: str
    duckdb: int


class Health(BaseModel):
    """What is running: schema revisions, executor, database dialect and the worker code version."""

    model_config = ConfigDict(populate_by_name=True)
    status: str
    schema_: SchemaVersions = Field(alias="schema")
    executor: str
    database: str
    code_version: str


def _allowed_methods(path: str) -> list[str]:
    import importlib

    literal: set[str] = set()  # routes whose path is exactly this one win over templated ones
    templated: set[str] = set()
    for module in ROUTER_MODULES:
        for route in importlib.import_module(module).router.routes:
            regex = getattr(route, "path_regex", None)
            if regex is not None and regex.match(path):
                into = templated if "{" in getattr(route, "path", "{") else literal
                into |= set(getattr(route, "methods", None) or ())
    return sorted(literal or templated)


def _error(request: Request, status: int, message: str) -> Response:
    if request.headers.get("hx-request"):
        from app.web.templating import templates

        return templates.TemplateResponse(request, "_shared/_error_message.html", {"message": message},
                                          status_code=status)
    return JSONResponse({"detail": message}, status_code=status)
