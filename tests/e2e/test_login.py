"""The docker-compose api's settings (logins on, bound beyond loopback), driven by a real Chromium: a visitor is
sent to the login page, logs in, and then uses the product; pages run under the CSP with no script errors."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from app.auth import users
from app.auth.schemas import Role
from tests.conftest import LiveServer, free_port, make_settings

pytestmark = pytest.mark.e2e
COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def compose_api_settings() -> dict[str, str]:
    """The api service's TENSION_ variables, `${VAR:-default}` resolved to their defaults."""
    env = yaml.safe_load(COMPOSE.read_text())["services"]["api"]["environment"]
    out = {}
    for k, v in env.items():
        if k.startswith("TENSION_"):
            out[k[8:].lower()] = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(v))
    return out


@pytest.fixture(scope="module")
def compose_like(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    env = compose_api_settings()
    assert env["auth"] == "on" and env["host"] == "0.0.0.0"
    port = free_port()
    settings = make_settings(tmp_path_factory.mktemp("compose"), auth=env["auth"], allowed_hosts=env["allowed_hosts"],
                             public_base_url=env["public_base_url"].replace(":8000", f":{port}"))
    with LiveServer(settings, host=env["host"], port=port, url_host="localhost", start_supervisor=False) as srv:
        users.add_user(srv.services.db, "alice", Role.researcher, "correct horse battery")
        yield srv.url


def test_a_visitor_logs_in_and_uses_the_product(compose_like: str, page) -> None:  # type: ignore[no-untyped-def]
    url = compose_like
    page.goto(url + "/datasets")
    assert page.url.startswith(url + "/login?next=")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "wrong password")
    page.click("#login-button")
    page.wait_for_selector("#login-error .error")
    assert "wrong user name or password" in page.inner_text("#login-error")
    page.fill("input[name=password]", "correct horse battery")
    page.click("#login-button")
    page.wait_for_url(url + "/datasets")
    assert "alice · researcher" in page.inner_text("#whoami")
    assert page.locator("#share-button").count() == 0  # the job list is not a shareable view
    page.click("#logout-button")  # an htmx POST: it carries the CSRF token from the cookie
    page.wait_for_url(re.compile(r".*/login.*"))
    assert page.js_errors == []


def test_the_api_refuses_the_browser_host_it_was_not_told_about(compose_like: str) -> None:
    port = compose_like.rsplit(":", 1)[1]
    r = httpx.get(f"http://127.0.0.1:{port}/api/jobs", headers={"host": "tension.attacker.example"})
    assert r.status_code == 400
