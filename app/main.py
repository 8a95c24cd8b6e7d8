"""create_app(): routers, error handlers, static files and the lifespan that owns the stores."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import plotly
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.gzip import GZipMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from app.core.errors import AppError
from app.core.services import Services
from app.core.settings import Settings, get_settings
from workers.contract.version import code_version

FRONTEND = Path(__file__).resolve().parent.parent / "frontend"
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
log = logging.getLogger("tension")

# Every module with a `router`, in the order routes are matched (one line per module; pages last).
ROUTER_MODULES: tuple[str, ...] = (
    "app.jobs.api",
    "app.datasets.api",
    "app.scoring.api",
    "app.evaluation.api",
    "app.evaluation.pages",
    "app.neurons.api",
    "app.neurons.pages",
    "app.ablation.api",
    "app.shares.api",
    "app.ablation.pages",
    "app.jobs.pages",
    "app.datasets.pages",
    "app.scoring.pages",
    "app.shares.pages",
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

    app = FastAPI(title="RM Tension Explorer", version="0.1.0", lifespan=lifespan)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)

    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        return _error(request, exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return _error(request, 422, "invalid request: " + "; ".join(parts))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return _error(request, 500, f"internal error ({type(exc).__name__}); nothing was changed")

    @app.middleware("http")
    async def read_only_shares(request: Request, call_next):  # type: ignore[no-untyped-def]
        """Requests made through a share token (or from beyond this machine) may look, never change."""
        from app.shares import service as shares

        token = request.query_params.get("share") or request.headers.get(shares.HEADER)
        client = request.client.host if request.client else ""
        local = client in ("127.0.0.1", "::1", "localhost", "testclient")
        services = getattr(request.app.state, "services", None)
        link = shares.resolve(services.db, token) if (token and services is not None) else None
        request.state.read_only = link is not None or not local
        request.state.share_token = link.token if link is not None else None
        if not local and link is None and request.url.path not in ("/healthz",) \
                and not request.url.path.startswith(("/s/", "/static/")):
            return _error(request, 403, "this server is only reachable through a share link from other machines")
        if request.state.read_only and request.method not in ("GET", "HEAD", "OPTIONS"):
            return _error(request, 403, "read-only share link: changes (launching jobs, uploads, edits) are refused")
        return await call_next(request)

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


def _error(request: Request, status: int, message: str) -> Response:
    if request.headers.get("hx-request"):
        from app.web.templating import templates

        return templates.TemplateResponse(request, "_shared/_error_message.html", {"message": message},
                                          status_code=status)
    return JSONResponse({"detail": message}, status_code=status)
