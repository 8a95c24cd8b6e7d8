"""A server bound beyond 127.0.0.1 (here 127.0.0.2, auth on), over real HTTP: every route refuses a request
without credentials, and each role gets exactly its rights."""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterator

import httpx
import pytest

from app.auth import users
from app.auth.schemas import Role
from app.main import ROUTER_MODULES
from tests.conftest import LiveServer, make_settings

HOST = "127.0.0.2"
PUBLIC = ("/login", "/healthz", "/logout")
SAFE = {"GET", "HEAD"}


def _routes() -> list[tuple[str, str]]:
    """Every (method, concrete path) the app serves, path parameters filled with harmless values."""
    out = []
    for module in ROUTER_MODULES:
        for route in importlib.import_module(module).router.routes:
            path = re.sub(r"\{[a-z_]+:int\}", "1", route.path)  # type: ignore[attr-defined]
            path = re.sub(r"\{[a-z_]+(:path)?\}", "x", path)
            for method in sorted(route.methods):  # type: ignore[attr-defined]
                out.append((method, path))
    return out


@pytest.fixture(scope="module")
def exposed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    settings = make_settings(tmp_path_factory.mktemp("exposed"), auth="on")
    with LiveServer(settings, host=HOST, start_supervisor=False) as srv:
        db = srv.services.db
        tokens = {role: users.add_user(db, f"u-{role}", Role(role))[1] for role in ("viewer", "researcher")}
        yield srv.url, tokens


def test_there_are_routes_to_check() -> None:
    assert len(_routes()) > 50


def test_every_route_refuses_without_credentials(exposed: tuple[str, dict[str, str]]) -> None:
    url, _ = exposed
    with httpx.Client(base_url=url, timeout=30) as c:
        for method, path in _routes():
            if path in PUBLIC or path.startswith("/s/"):
                continue
            c.cookies.clear()  # a script's request: no CSRF cookie, so what answers is the access check
            r = c.request(method, path, headers={"accept": "application/json"})
            assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
            c.cookies.clear()
            page = c.request(method, path, headers={"accept": "text/html"})
            assert page.status_code in (401, 303), (method, path)
            if page.status_code == 303:
                assert method == "GET" and page.headers["location"].startswith("/login?next=")


def test_each_role_gets_exactly_its_rights(exposed: tuple[str, dict[str, str]]) -> None:
    url, tokens = exposed
    with httpx.Client(base_url=url, timeout=60) as c:
        for role, token in tokens.items():
            auth = {"authorization": f"Bearer {token}", "accept": "application/json"}
            for method, path in _routes():
                if path in PUBLIC or path.startswith("/s/"):
                    continue
                c.cookies.clear()
                r = c.request(method, path, headers=auth)
                assert r.status_code < 500, (role, method, path, r.status_code, r.text[:300])
                if method in SAFE or role == "researcher":
                    assert r.status_code not in (401, 403), (role, method, path, r.status_code, r.text[:200])
                else:
                    assert r.status_code == 403 and "viewer" in r.json()["detail"], (role, method, path)
