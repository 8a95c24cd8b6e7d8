"""Live toggles on Ray Serve (executor `ray`) against a real Ray cluster with Serve (.ci/run starts it, token
authentication on): the API deploys one Serve application per session through the dashboard's REST API and
the replica answers, over Serve's HTTP proxy, with the same numbers as a local `workers.live` process for
the same RM, probe pairs and toggle: the exact answer, the estimate, streamed rounds; a cancel and a
supersede stop the replica's work; an idle replica is scaled to zero and the next toggle wakes it (counted
as a start-up). Every application this module deployed is removed at its end (others are kept)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from tests.app.neurons.pipeline import RealRMs, settings_from
from tests.factories.http import app_client

RAY_ADDRESS = os.environ.get("TENSION_TEST_RAY_ADDRESS")
RAY_TOKEN = os.environ.get("TENSION_TEST_RAY_TOKEN")
SERVE_URL = os.environ.get("TENSION_TEST_SERVE_URL")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    not (RAY_ADDRESS and SERVE_URL), reason="TENSION_TEST_RAY_ADDRESS / TENSION_TEST_SERVE_URL not set (.ci/run)")]

QUERY = {"part": "shared", "p": "25", "probe_limit": "16"}  # 2 rounds of 8 pairs per objective


def _details() -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {RAY_TOKEN}"} if RAY_TOKEN else {}
    r = httpx.get(f"{RAY_ADDRESS}/api/serve/applications/", headers=headers, timeout=30)
    r.raise_for_status()
    return dict(r.json())


def _ray_settings(real_rms: RealRMs, where: Path, **overrides: object):  # type: ignore[no-untyped-def]
    # A quarter CPU a session: CI's nodes have one CPU each, and opening a view warms its three RMs' sessions
    # (at one CPU each, the third could never be scheduled beside the others). Ray gives it one torch thread.
    options: dict[str, object] = {"serve_num_cpus": 0.25, **overrides}
    return settings_from(real_rms.captured, where, executor="ray", ray_address=RAY_ADDRESS, ray_token=RAY_TOKEN,
                         serve_url=SERVE_URL, **options)


def _live_children() -> list[psutil.Process]:
    """`python -m workers.live` processes this test process spawned (the local pool's workers)."""
    out = []
    for p in psutil.Process().children(recursive=True):
        try:
            if "workers.live" in p.cmdline():
                out.append(p)
        except psutil.Error:
            continue
    return out


@pytest.fixture(scope="module", autouse=True)
def _remove_our_apps(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Whatever happens, remove the Serve applications of this session's data dirs, and only those."""
    yield
    from app.ablation.serve_pool import ServeAdmin

    base = str(tmp_path_factory.getbasetemp())
    admin = ServeAdmin(str(RAY_ADDRESS), RAY_TOKEN, str(SERVE_URL))
    ours = {n for n, a in (admin.details().get("applications") or {}).items()
            if base in str(((a.get("deployed_app_config") or {}).get("args") or {}).get("config", {}).get("store_url"))}
    admin.remove(ours)
    admin.close()


@pytest.fixture(scope="module")
def local(real_rms: RealRMs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with app_client(create_app(settings_from(real_rms.captured, tmp_path_factory.mktemp("local")))) as client:
        yield client


@pytest.fixture(scope="module")
def served(real_rms: RealRMs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with app_client(create_app(_ray_settings(real_rms, tmp_path_factory.mktemp("served")))) as client:
        yield client


def _wait_run(client: TestClient, rid: str, timeout: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {"version": -1}
    while time.monotonic() < deadline:
        body = client.get(f"/api/live/runs/{rid}", params={"wait": 2, "since": body["version"]}).json()
        if body["state"] != "running" and body["ended"]:
            return body
    raise AssertionError(body)


def _same_answer(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert set(a["objectives"]) == set(b["objectives"]) == {"helpful", "harmless"}
    for o, x in a["objectives"].items():
        y = b["objectives"][o]
        assert x["n_pairs"] == y["n_pairs"] and x["flips"] == y["flips"]
        for part in ("baseline", "ablated", "delta"):
            assert x[part] == pytest.approx(y[part], rel=1e-6, abs=1e-6), (o, part)


def _same_estimate(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert set(a) == set(b)
    for o in a:
        assert a[o] == pytest.approx(b[o], rel=1e-9, abs=1e-12), o


def test_a_live_toggle_is_answered_by_a_serve_deployment(real_rms: RealRMs, local: TestClient,
                                                         served: TestClient) -> None:
    mixed = real_rms.checkpoints["mixed"]
    expected = local.get(f"/api/live/{mixed}/toggle", params=QUERY)
    assert expected.status_code == 200, expected.text
    spawned_before = {p.pid for p in _live_children()}

    got = served.get(f"/api/live/{mixed}/toggle", params=QUERY)
    assert got.status_code == 200, got.text
    # The same exact answer as the local worker's, for the same RM, probe pairs and neurons.
    _same_answer(got.json(), expected.json())
    assert got.json()["n_neurons"] == expected.json()["n_neurons"] > 0

    # It really was Serve: the pool is the Serve pool, its application runs a replica, no local worker started.
    from app.ablation.serve_pool import ServeLivePool, app_name

    pool = served.app.state.live_pool
    assert isinstance(pool, ServeLivePool)
    (key,) = pool._sessions
    name = app_name(key, served.app.state.services.settings.resolved_artifact_store)
    app = _details()["applications"][name]
    assert app["status"] == "RUNNING"
    assert [r["state"] for r in app["deployments"]["LiveSession"]["replicas"]] == ["RUNNING"]
    assert app["deployed_app_config"]["import_path"] == "workers.serve_live:build"
    assert app["deployed_app_config"]["runtime_env"]["py_modules"][0].startswith("gcs://")  # code shipped
    assert {p.pid for p in _live_children()} - spawned_before == set()
    sessions = served.get("/api/live/sessions").json()
    assert [s["key"] for s in sessions] == [key] and sessions[0]["ready"] and sessions[0]["rss_mb"] > 50
    assert sessions[0]["startup_s"] > 0  # deploy to LiveReady, Serve's start-up included

    # The estimate: the same estimator table, the same numbers.
    e_local = local.get(f"/api/live/{mixed}/estimate", params=QUERY).json()
    e_served = served.get(f"/api/live/{mixed}/estimate", params=QUERY)
    assert e_served.status_code == 200, e_served.text
    assert e_served.json()["estimate"] is True
    _same_estimate(e_served.json()["objectives"], e_local["objectives"])

    # A bad toggle is refused by name, as locally.
    bad = served.get(f"/api/live/{mixed}/toggle", params={"neurons": "{\"99\": [1]}"})
    assert bad.status_code in (404, 422) and "99" in bad.text


def test_streamed_rounds_cancel_and_supersede_on_serve(real_rms: RealRMs, local: TestClient,
                                                       served: TestClient) -> None:
    helpful = real_rms.checkpoints["helpful"]
    run = _wait_run(served, served.get(f"/api/live/{helpful}/stream", params=QUERY).json()["id"])
    ref = _wait_run(local, local.get(f"/api/live/{helpful}/stream", params=QUERY).json()["id"])
    assert run["state"] == ref["state"] == "done"
    assert run["rounds_computed"] == ref["rounds_computed"] == 4  # 2 rounds of the set, 2 of its control
    for phase in ("exact", "control"):
        assert run[phase]["final"] and run[phase]["n_rounds"] == 2
        for o, v in run[phase]["objectives"].items():
            w = ref[phase]["objectives"][o]
            assert v["n_done"] == w["n_done"] and v["flips_to_wrong"] == w["flips_to_wrong"]
            assert v["delta_margin"] == pytest.approx(w["delta_margin"], rel=1e-6, abs=1e-9)
            assert v["delta_margin_ci"] == pytest.approx(w["delta_margin_ci"], rel=1e-6, abs=1e-9)
    assert run["control"]["control_neurons"] == ref["control"]["control_neurons"]
    _same_estimate(run["estimate"]["objectives"], ref["estimate"]["objectives"])

    # A stopped run stops on the replica: it ends cancelled, with fewer rounds than it had.
    big = {**QUERY, "p": "50", "probe_limit": "512"}
    first = served.get(f"/api/live/{helpful}/stream", params=big).json()
    time.sleep(1.0)
    served.delete(f"/api/live/runs/{first['id']}")
    stopped = _wait_run(served, first["id"])
    assert stopped["state"] == "cancelled"
    n_rounds = stopped["exact"]["n_rounds"] if stopped["exact"] else None
    assert stopped["rounds_computed"] is not None and (n_rounds is None or stopped["rounds_computed"] < 2 * n_rounds)

    # A newer toggle of the same caller supersedes the older one, whose work stops; the newer one completes.
    older = served.get(f"/api/live/{helpful}/stream", params=big).json()
    time.sleep(1.0)
    newer = served.get(f"/api/live/{helpful}/stream", params={**QUERY, "p": "30"}).json()  # not in its cache
    gone, done = _wait_run(served, older["id"]), _wait_run(served, newer["id"])
    assert gone["state"] == "superseded" and gone["ended"]
    n_rounds = gone["exact"]["n_rounds"] if gone["exact"] else None
    assert n_rounds is None or gone["rounds_computed"] < 2 * n_rounds
    assert done["state"] == "done" and done["rounds_computed"] == 4


def test_an_idle_replica_is_scaled_to_zero_and_the_next_toggle_wakes_it(real_rms: RealRMs, local: TestClient,
                                                                          tmp_path: Path) -> None:
    harmless = real_rms.checkpoints["harmless"]
    expected = local.get(f"/api/live/{harmless}/toggle", params=QUERY).json()
    with app_client(create_app(_ray_settings(real_rms, tmp_path, serve_idle_s=2))) as client:
        first = client.get(f"/api/live/{harmless}/toggle", params=QUERY)
        assert first.status_code == 200, first.text
        pool = client.app.state.live_pool
        (session,) = pool._sessions.values()
        deadline = time.monotonic() + 90
        while pool.admin.replicas(session.name) != 0:
            assert time.monotonic() < deadline, "the idle replica was not scaled to zero"
            time.sleep(1.0)
        assert client.get("/api/live/sessions").json()[0]["ready"] is False  # asked without waking it
        assert pool.admin.replicas(session.name) == 0

        run = client.get(f"/api/live/{harmless}/stream", params=QUERY).json()
        assert run["worker_was_ready"] is False  # the pool saw the replica gone: this toggle pays the start
        woken = _wait_run(client, run["id"])
        assert woken["state"] == "done"
        assert woken["timings"]["startup_ms"] and woken["timings"]["startup_ms"] > 0
        assert session.scale_ups == 1 and pool.admin.replicas(session.name) == 1
        for o, v in woken["exact"]["answer"]["objectives"].items():
            assert v["delta"] == pytest.approx(expected["objectives"][o]["delta"], rel=1e-6, abs=1e-6)
        _same_answer(first.json(), expected)


def test_a_session_no_node_can_hold_is_refused_naming_the_resource(real_rms: RealRMs, tmp_path: Path) -> None:
    """Serve would keep such a replica pending forever; the toggle is answered at once with a 503 (the server's
    settings, not the request, are at fault) naming CPU and its setting, and nothing is deployed."""
    before = set(_details().get("applications") or {})
    settings = _ray_settings(real_rms, tmp_path / "huge", serve_num_cpus=64)
    with app_client(create_app(settings)) as client:
        r = client.get(f"/api/live/{real_rms.checkpoints['mixed']}/toggle", params=QUERY)
    assert r.status_code == 503, r.text
    assert "CPU 64" in r.text and "RuntimeError" not in r.text and "TENSION_SERVE_NUM_CPUS" in r.text
    assert set(_details().get("applications") or {}) == before
