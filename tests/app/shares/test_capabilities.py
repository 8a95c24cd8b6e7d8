"""Share links as capabilities: one view and what it loads, read-only, expiring, revocable, rate-limited."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.auth import users
from app.auth.schemas import Role
from app.core.db import ShareLink, utcnow
from app.main import create_app
from tests.conftest import make_settings
from tests.factories import add_checkpoint
from tests.factories.http import app_client
from tests.factories.jobs import score_result, some_pairs

MODEL = "tiny-gpt2"


@pytest.fixture
def c(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, public_base_url="https://tension.example.org", share_toggles_per_minute=2,
                             allowed_hosts=["localhost", "tension.example.org"])
    with app_client(create_app(settings, start_supervisor=False)) as client:
        yield client


def _share(c: TestClient, target: str, **extra: object) -> dict:  # type: ignore[type-arg]
    r = c.post("/api/shares", json={"target": target, **extra})
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def _as_holder(c: TestClient, token: str, path: str, **kw: object):  # type: ignore[no-untyped-def]
    """A request from someone who has only the link (no cookies of the owner)."""
    fresh = TestClient(c.app, base_url="http://localhost")
    return fresh.get(path, headers={"x-tension-share": token}, **kw)  # type: ignore[arg-type]


def test_a_result_link_reads_its_result_and_nothing_else(c: TestClient) -> None:
    services = c.app.state.services  # type: ignore[attr-defined]
    key, other = score_result(services, some_pairs()), score_result(services, some_pairs())
    link = _share(c, f"/results/{key}")
    assert link["url"] == f"https://tension.example.org/s/{link['token']}"  # from settings, never the Host header
    assert link["scope"]["kind"] == "result" and link["scope"]["value"] == key
    t = link["token"]
    assert _as_holder(c, t, f"/results/{key}").status_code == 200
    assert _as_holder(c, t, f"/api/results/{key}").status_code == 200
    assert _as_holder(c, t, f"/api/results/{key}/rewards").status_code == 200
    for refused in ("/api/jobs", "/api/datasets", f"/api/results/{other}", f"/results/{other}", "/datasets",
                    "/api/shares", "/lab/runs"):
        r = _as_holder(c, t, refused)
        assert r.status_code == 403, (refused, r.status_code)
        assert "this share link opens" in r.json()["detail"]
    fresh = TestClient(c.app, base_url="http://localhost")
    assert fresh.post(f"/api/jobs?share={t}", json={}).status_code == 403
    opened = fresh.get(f"/s/{t}", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == f"/results/{key}?share={t}"


def test_share_urls_ignore_the_host_header(c: TestClient) -> None:
    r = c.post("/api/shares", json={"target": "/results/abc"}, headers={"host": "tension.example.org"})
    assert r.json()["url"].startswith("https://tension.example.org/s/")


def test_only_views_can_be_shared(c: TestClient) -> None:
    for target in ("/api/jobs", "/datasets", "http://evil.example/results/x", "/s/abc", "/jobs/123"):
        r = c.post("/api/shares", json={"target": target})
        assert r.status_code == 422 and "target" in r.json()["detail"], target


def test_revoked_and_expired_links_answer_410(c: TestClient) -> None:
    services = c.app.state.services  # type: ignore[attr-defined]
    key = score_result(services, some_pairs())
    live, gone = _share(c, f"/results/{key}"), _share(c, f"/results/{key}")
    revoked = c.delete(f"/api/shares/{gone['token']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    r = _as_holder(c, gone["token"], f"/results/{key}")
    assert r.status_code == 410 and "revoked" in r.json()["detail"]
    assert TestClient(c.app, base_url="http://localhost").get(f"/s/{gone['token']}").status_code == 410
    with services.db.session() as s:
        s.get(ShareLink, live["token"]).expires_at = utcnow() - timedelta(seconds=1)
    r = _as_holder(c, live["token"], f"/api/results/{key}")
    assert r.status_code == 410 and "expired" in r.json()["detail"]
    assert _as_holder(c, "no-such-token", f"/results/{key}").status_code == 404


def test_expiry_defaults_to_30_days_and_can_be_set(c: TestClient) -> None:
    default, short = _share(c, "/results/abc"), _share(c, "/results/abc", expires_in_days=1)
    from datetime import datetime

    days = (datetime.fromisoformat(default["expires_at"]) - datetime.fromisoformat(default["created_at"])).days
    assert days == 30
    hours = (datetime.fromisoformat(short["expires_at"]) - datetime.fromisoformat(short["created_at"])).total_seconds()
    assert abs(hours - 86400) < 5
    assert c.post("/api/shares", json={"target": "/results/abc", "expires_in_days": "NaN"}).status_code == 422


def test_people_list_and_revoke_only_their_own_links(c: TestClient) -> None:
    db = c.app.state.services.db  # type: ignore[attr-defined]
    _, alice = users.add_user(db, "alice", Role.researcher)
    _, bob = users.add_user(db, "bob", Role.researcher)
    api = TestClient(c.app, base_url="http://localhost")
    mine = api.post("/api/shares", json={"target": "/results/abc"}, headers={"authorization": f"Bearer {alice}"})
    assert mine.json()["created_by"] == "alice"
    listed = api.get("/api/shares", headers={"authorization": f"Bearer {bob}"}).json()
    assert listed == []
    theft = api.delete(f"/api/shares/{mine.json()['token']}", headers={"authorization": f"Bearer {bob}"})
    assert theft.status_code == 403
    own = api.get("/api/shares", headers={"authorization": f"Bearer {alice}"}).json()
    assert [x["token"] for x in own] == [mine.json()["token"]]


def test_the_links_page_lists_and_revokes(c: TestClient) -> None:
    link = _share(c, "/results/abc")
    page = c.get("/shares")
    assert page.status_code == 200 and link["token"][:8] in page.text and "active" in page.text
    row = c.post(f"/ui/shares/{link['token']}/revoke", headers={"hx-request": "true"})
    assert row.status_code == 200 and "revoked" in row.text and "Revoke" not in row.text


def test_a_dashboard_link_reaches_its_model_pages_and_panels_only(c: TestClient) -> None:
    services = c.app.state.services  # type: ignore[attr-defined]
    mine, theirs = add_checkpoint(services, base_model=MODEL), add_checkpoint(services, base_model="tiny-bert")
    t = _share(c, f"/models/{MODEL}/dashboard?p=10&probe_limit=16")["token"]
    allowed = [f"/models/{MODEL}/neurons/0/3", f"/api/neurons/{MODEL}/overlap", f"/lab/compare/{MODEL}",
               f"/ui/ablation/panel?base_model={MODEL}&ck={mine}"]
    for path in allowed:
        assert _as_holder(c, t, path).status_code != 403, path
    for path in ("/models/tiny-bert/dashboard", "/api/neurons/tiny-bert/overlap",
                 f"/ui/ablation/panel?base_model={MODEL}&ck={theirs}", f"/ui/live/{theirs}"):
        assert _as_holder(c, t, path).status_code == 403, path


def test_live_toggles_through_a_link_keep_the_views_settings_and_are_rate_limited(c: TestClient) -> None:
    services = c.app.state.services  # type: ignore[attr-defined]
    ck = add_checkpoint(services, base_model=MODEL)
    t = _share(c, f"/models/{MODEL}/dashboard?probe_limit=16")["token"]
    other = _as_holder(c, t, f"/api/live/{ck}/toggle?part=shared&probe_limit=64")
    assert other.status_code == 403 and "probe_limit=16" in other.json()["detail"]
    hook = _as_holder(c, t, f"/api/live/{ck}/toggle?part=shared&probe_limit=16&hook=act_output")
    assert hook.status_code == 403 and "hook" in hook.json()["detail"]
    statuses = [_as_holder(c, t, f"/api/live/{ck}/toggle?part=shared&probe_limit=16").status_code for _ in range(3)]
    assert statuses[:2] != [429, 429] and statuses[2] == 429  # 2 a minute in this server's settings
