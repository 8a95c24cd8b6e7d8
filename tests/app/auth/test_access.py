"""Users, roles, sessions, CSRF, Host/Origin and security headers, through the real app and a real database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.auth import users
from app.auth.schemas import Role
from app.core.db import Job
from app.main import create_app
from tests.conftest import make_settings
from tests.factories.http import app_client

SCORE = {"kind": "score", "params": {"model": "tiny-bert", "dataset": {"limit": 2}}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[TestClient]:
    """A loopback server with users (so every request needs one); no worker runs."""
    with app_client(create_app(make_settings(tmp_path), start_supervisor=False)) as c:
        yield c


def _db(c: TestClient):  # type: ignore[no-untyped-def]
    return c.app.state.services.db  # type: ignore[attr-defined]


def _add(c: TestClient, name: str, role: Role, password: str | None = "correct horse") -> str:
    _, token = users.add_user(_db(c), name, role, password)
    c.app.user_middleware  # noqa: B018  (the access middleware re-reads "users exist" within a second)
    _expire_users_cache(c)
    return token


def _expire_users_cache(c: TestClient) -> None:
    stack = c.app.middleware_stack  # type: ignore[attr-defined]
    while stack is not None:
        if hasattr(stack, "_users_seen"):
            stack._users_seen = (0.0, False)
        stack = getattr(stack, "app", None)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_loopback_without_users_is_a_one_person_tool(server: TestClient) -> None:
    me = server.get("/api/me").json()
    assert me == {"name": "local", "kind": "local", "role": "researcher", "login_required": False}
    assert server.post("/api/jobs", json=SCORE).status_code == 202


def test_once_a_user_exists_every_request_needs_one(server: TestClient) -> None:
    _add(server, "vera", Role.viewer)
    r = server.get("/api/jobs")
    assert r.status_code == 401 and "Bearer" in r.headers["www-authenticate"]
    assert "tension token" in r.json()["detail"]
    page = server.get("/datasets", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == "/login?next=%2Fdatasets"
    assert server.get("/login").status_code == 200 and server.get("/healthz").status_code == 200
    assert server.get("/api/jobs", headers=_bearer("tns_not-a-token")).status_code == 401


def test_roles_viewer_reads_researcher_also_launches_and_jobs_record_their_creator(server: TestClient) -> None:
    viewer, researcher = _add(server, "vera", Role.viewer), _add(server, "rita", Role.researcher)
    assert server.get("/api/jobs", headers=_bearer(viewer)).status_code == 200
    refused = server.post("/api/jobs", json=SCORE, headers=_bearer(viewer))
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    assert server.post("/api/shares", json={"target": "/results/abc"}, headers=_bearer(viewer)).status_code == 403
    job = server.post("/api/jobs", json=SCORE, headers=_bearer(researcher))
    assert job.status_code == 202 and job.json()["created_by"] == "rita"
    with _db(server).session() as s:
        assert s.get(Job, job.json()["id"]).created_by == "rita"
    pair = b'{"prompt": "p", "chosen": "a", "rejected": "b", "objective": "helpful"}\n'
    ds = server.post("/api/datasets", files={"file": ("d.jsonl", pair)}, data={"format": "canonical"},
                     headers=_bearer(researcher))
    assert ds.status_code == 201, ds.text
    assert ds.json()["created_by"] == "rita"
    from app.core.db import NeuronSet
    from tests.factories.neurons import add_capture

    cap = add_capture(server.app.state.services, regime="helpful")  # type: ignore[attr-defined]
    named = server.post("/api/neuron-sets", json={"name": "s1", "checkpoint": cap.checkpoint},
                        headers=_bearer(researcher))
    assert named.status_code == 201, named.text
    with _db(server).session() as s:
        assert s.query(NeuronSet).one().created_by == "rita"
    assert server.get("/api/me", headers=_bearer(researcher)).json()["name"] == "rita"


def test_rotating_a_token_or_removing_a_user_locks_the_old_token_out(server: TestClient) -> None:
    old = _add(server, "rita", Role.researcher)
    new = users.rotate_token(_db(server), "rita")
    assert server.get("/api/jobs", headers=_bearer(old)).status_code == 401
    assert server.get("/api/jobs", headers=_bearer(new)).status_code == 200
    users.remove_user(_db(server), "rita")
    assert server.get("/api/jobs", headers=_bearer(new)).status_code == 401


def test_tokens_and_passwords_are_stored_only_hashed(server: TestClient) -> None:
    token = _add(server, "rita", Role.researcher, password="correct horse")
    with _db(server).engine.connect() as conn:
        dump = " ".join(str(v) for row in conn.exec_driver_sql("SELECT * FROM users") for v in row)
    assert token not in dump and token[4:] not in dump and "correct horse" not in dump
    assert "$argon2id$" in dump


def test_browser_login_sets_a_session_and_logout_ends_it(server: TestClient) -> None:
    _add(server, "rita", Role.researcher, password="correct horse")
    server.get("/login")  # the CSRF cookie, as a browser gets it with the page
    bad = server.post("/login", data={"username": "rita", "password": "wrong password", "next": "/"},
                      headers={"hx-request": "true"})
    assert bad.status_code == 401 and "wrong user name or password" in bad.text
    ok = server.post("/login", data={"username": "rita", "password": "correct horse", "next": "/datasets"},
                     headers={"hx-request": "true"})
    assert ok.status_code == 204 and ok.headers["hx-redirect"] == "/datasets"
    assert "tension_session" in server.cookies
    assert server.get("/api/me").json()["name"] == "rita"
    page = server.get("/datasets")
    assert page.status_code == 200 and "rita · researcher" in page.text
    assert server.post("/logout", headers={"hx-request": "true"}).headers["hx-redirect"] == "/login"
    assert server.get("/api/me").status_code == 401


def test_login_never_redirects_off_site(server: TestClient) -> None:
    _add(server, "rita", Role.researcher, password="correct horse")
    server.get("/login")
    for evil in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        r = server.post("/login", data={"username": "rita", "password": "correct horse", "next": evil},
                        headers={"hx-request": "true"})
        assert r.status_code == 204, r.text
        assert r.headers["hx-redirect"] == "/"


def test_state_changes_from_a_browser_need_the_csrf_token(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path), start_supervisor=False), base_url="http://localhost") as c:
        c.get("/datasets")
        assert "csrftoken" in c.cookies
        browser = {"sec-fetch-site": "same-origin", "origin": "http://localhost:8000"}
        forged = c.post("/api/jobs", json=SCORE, headers=browser)  # the cookie but not the header: a forgery
        assert forged.status_code == 403 and "CSRF" in forged.json()["detail"]
        wrong = c.post("/api/jobs", json=SCORE, headers={**browser, "x-csrftoken": "not-the-token"})
        assert wrong.status_code == 403
        ok = c.post("/api/jobs", json=SCORE, headers={**browser, "x-csrftoken": c.cookies["csrftoken"]})
        assert ok.status_code == 202
        # A script whose cookie jar holds only the CSRF cookie is not a browser: nothing to forge.
        assert c.post("/api/jobs", json=SCORE).status_code == 202


def test_scripts_without_cookies_or_browser_headers_need_no_csrf_token(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path), start_supervisor=False), base_url="http://localhost",
                    cookies=None) as c:
        assert c.post("/api/jobs", json=SCORE).status_code == 202  # no cookie yet: a script, like the CLI
        c.get("/datasets")
        assert c.post("/api/jobs", json=SCORE).status_code == 202  # a cookie jar, still no browser headers


def test_cross_origin_and_wrong_host_writes_are_refused(server: TestClient) -> None:
    server.get("/datasets")
    evil = server.post("/ui/jobs/score", data={"model": "tiny-bert"}, headers={"origin": "http://evil.example"})
    assert evil.status_code == 403 and "cross-origin" in evil.json()["detail"]
    upload = server.post("/ui/datasets", files={"file": ("x.jsonl", b"{}")}, headers={"origin": "http://evil.example"})
    assert upload.status_code == 403
    other_port = server.post("/api/jobs", json=SCORE, headers={"origin": "http://localhost:9999"})
    assert other_port.status_code == 403
    site = server.post("/api/jobs", json=SCORE, headers={"sec-fetch-site": "cross-site"})
    assert site.status_code == 403
    assert server.post("/api/jobs", json=SCORE, headers={"origin": "http://localhost:8000"}).status_code == 202
    rebind = server.get("/api/jobs", headers={"host": "attacker.example"})
    assert rebind.status_code == 400 and "attacker.example" in rebind.json()["detail"]
    with _db(server).session() as s:
        assert s.query(Job).count() == 1


def test_every_answer_carries_the_security_headers(server: TestClient) -> None:
    for path in ("/datasets", "/api/jobs", "/static/app.js", "/nope"):
        h = server.get(path).headers
        csp = h["content-security-policy"]
        script = next(d for d in csp.split(";") if d.strip().startswith("script-src"))
        assert script.strip() == "script-src 'self'", csp
        assert "frame-ancestors 'none'" in csp
        assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"


def test_pages_have_no_inline_script(server: TestClient) -> None:
    import re

    html = server.get("/datasets").text
    for tag in re.findall(r"<script\b[^>]*>", html):
        assert "src=" in tag or 'type="application/json"' in tag, tag
    assert not re.search(r"\son[a-z]+=", html)


def test_auth_off_is_refused_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="only a loopback server"):
        create_app(make_settings(tmp_path, auth="off", host="0.0.0.0"))


def test_gzip_shrinks_the_plotly_bundle(server: TestClient) -> None:
    with server.stream("GET", "/static/plotly.min.js", headers={"accept-encoding": "gzip"}) as r:
        assert r.headers.get("content-encoding") == "gzip"
        sent = b"".join(r.iter_raw())
    import gzip

    assert len(gzip.decompress(sent)) > 4_000_000 and len(sent) < 2_000_000, len(sent)
