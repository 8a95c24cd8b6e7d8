"""Shared fixtures: real SQLite/PostgreSQL, a real DuckDB file, a real server on loopback."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.factories.http import app_client

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

POSTGRES_URL = os.environ.get("TENSION_TEST_POSTGRES_URL")


def _db_params() -> list[object]:
    marks = [] if POSTGRES_URL else [pytest.mark.skip(reason="TENSION_TEST_POSTGRES_URL not set (.ci/run sets it)")]
    return ["sqlite", pytest.param("postgres", marks=[pytest.mark.postgres, *marks])]


@pytest.fixture(params=_db_params())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty metadata database: a SQLite file, or a new schema-free PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.db'}"
        return
    import sqlalchemy as sa

    assert POSTGRES_URL
    name = f"t_{os.getpid()}_{int(time.time() * 1000) % 10_000_000}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = POSTGRES_URL.rsplit("/", 1)[0] + "/" + name
    try:
        yield url
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def make_settings(tmp_path: Path, **overrides: object):  # type: ignore[no-untyped-def]
    from app.core.settings import Settings

    base: dict[str, object] = {"data_dir": tmp_path / "var", "concurrency": 2, "device": "cpu"}
    base.update(overrides)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path):  # type: ignore[no-untyped-def]
    return make_settings(tmp_path)


@pytest.fixture
def client(settings):  # type: ignore[no-untyped-def]

    from app.main import create_app

    with app_client(create_app(settings)) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """A real uvicorn server in a thread, bound to `host` (the settings say so too: the access rules depend on
    it), reached at `url_host` (default: `host`); `with` waits until /healthz answers."""

    def __init__(self, settings, *, host: str = "127.0.0.1", port: int | None = None,  # type: ignore[no-untyped-def]
                 url_host: str | None = None, start_supervisor: bool = True) -> None:
        import uvicorn

        from app.main import create_app

        self.port = port or free_port()
        self.url = f"http://{url_host or host}:{self.port}"
        settings = settings.model_copy(update={"host": host, "port": self.port})
        self.app = create_app(settings, start_supervisor=start_supervisor)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host=host, port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    @property
    def services(self):  # type: ignore[no-untyped-def]
        return self.app.state.services


@pytest.fixture
def live_server(settings) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    with LiveServer(settings) as srv:
        yield srv


@pytest.fixture(scope="session")
def real_rms(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """Three tiny-bert RMs trained and captured by real jobs, once per session (see
    tests/app/neurons/pipeline.py: `build_real_rms`, `settings_from`)."""
    from tests.app.neurons.pipeline import build_real_rms

    return build_real_rms(tmp_path_factory.mktemp("real-rms"))


def wait_job(get, job_id: str, timeout: float = 300) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """Poll a job through a callable returning its JSON until it finishes."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        job = get(job_id)
        if job["status"] not in ("queued", "running"):
            return job  # type: ignore[no-any-return]
        time.sleep(0.25)
    raise TimeoutError(f"job {job_id} still running after {timeout} s")
