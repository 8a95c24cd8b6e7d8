"""Live runs through the routes: estimate at once, exact rounds by polling, supersede, cancel, record.

The live pool is the fake one (`tests/factories/ablation.py`): what is checked is the routes' and the runs'
work (which requests reach the worker, what a poll shows, who may see a run, what is recorded). The real
worker's streaming and cancelling are checked in `test_live_estimate.py` and in the Chromium tests."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from html import unescape
from types import SimpleNamespace
from typing import Any

import pytest

from app.main import create_app
from tests.conftest import make_settings
from tests.factories.ablation import MODEL, FakeLivePool, FakeLiveWorker, answer_for, captured_rms
from tests.factories.http import app_client
from workers.contract.live import LiveStreamRequest, LiveToggleRequest

PROBE = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("runs"))
    with app_client(create_app(settings, start_supervisor=False)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        pool = client.app.state.live_pool = FakeLivePool()  # type: ignore[attr-defined]
        checkpoints = {str(r): ck for r, ck in captured_rms(services).items()}
        yield SimpleNamespace(client=client, pool=pool, checkpoints=checkpoints, services=services)


def _poll_done(client: Any, rid: str, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        body = client.get(f"/api/live/runs/{rid}", params={"wait": 1, "since": body.get("version", -1)}).json()
        if body["state"] != "running" and body["ended"]:
            return body
    raise AssertionError(f"run {rid} still running: {body}")


def test_a_run_shows_estimate_then_exact_rounds_then_control(world: SimpleNamespace) -> None:
    ck = world.checkpoints["mixed"]
    q = {"part": "shared", "p": "25", "probe_limit": PROBE}
    started = world.client.get(f"/api/live/{ck}/stream", params=q)
    assert started.status_code == 200, started.text
    run = _poll_done(world.client, started.json()["id"])
    assert run["state"] == "done" and run["rounds_computed"] == 4  # the fake: 2 rounds of the set, 2 of control
    worker: FakeLiveWorker = next(w for k, w in world.pool.workers.items() if k.startswith(ck))
    req = worker.streams[-1]
    exact = answer_for(LiveToggleRequest(neurons=req.neurons), PROBE)
    for o, v in run["exact"]["objectives"].items():
        assert v["delta_margin"] == pytest.approx(exact.objectives[o].delta.margin)
        assert v["n_done"] == v["n_total"] == PROBE
        assert run["estimate"]["objectives"][o]["delta_margin"] == pytest.approx(exact.objectives[o].delta.margin / 2)
    assert run["exact"]["final"] and run["exact"]["answer"]["objectives"]
    # The control: the same number of neurons in each layer, not the set itself.
    control = run["control"]["control_neurons"]
    assert {k: len(v) for k, v in control.items()} == {k: len(v) for k, v in run["neurons"].items()}
    assert control != run["neurons"]
    t = run["timings"]
    assert t["estimate_ms"] is not None and t["first_round_ms"] <= t["exact_ms"] <= t["total_ms"]


def test_the_fragment_polls_itself_until_done_then_offers_the_queue_button(world: SimpleNamespace) -> None:
    ck = world.checkpoints["helpful"]
    html = world.client.get(f"/ui/live/{ck}", params={"part": "shared", "p": "25", "probe_limit": PROBE}).text
    rid = re.search(r'data-run="([0-9a-f]+)"', html).group(1)  # type: ignore[union-attr]
    assert 'id="estimate-caveat"' in html and "first-order" in html
    since = -1
    for _ in range(20):
        html = world.client.get(f"/ui/live/runs/{rid}", params={"since": since}).text
        state = re.search(r'data-state="(\w+)"', html).group(1)  # type: ignore[union-attr]
        if state != "running":
            break
        assert f'hx-get="/ui/live/runs/{rid}?since=' in html and 'id="queue-full"' not in html
        since = int(re.search(r'data-version="(\d+)"', html).group(1))  # type: ignore[union-attr]
    assert state == "done"
    assert "hx-get=\"/ui/live/runs/" not in html  # a finished run stops polling
    assert 'id="queue-full"' in html and 'id="shift-table"' in html and 'id="plot-run"' in html
    kinds = re.findall(r'<tr data-objective="(\w+)" data-kind="(\w+)"', html)
    assert {k for _, k in kinds} == {"estimate", "exact", "control"}
    assert re.search(r'id="timing-estimate">estimate \d+ ms', html) and 'id="timing-exact"' in html


class GatedWorker(FakeLiveWorker):
    """A fake worker whose stream waits at a gate before each round: a run stays running until released."""

    gate: threading.Event

    def stream(self, request: LiveStreamRequest, timeout: float = 0) -> Iterator[Any]:
        for msg in super().stream(request, timeout):
            self.gate.wait(5)
            yield msg


def test_a_newer_toggle_supersedes_the_older_and_cancels_its_work(world: SimpleNamespace) -> None:
    ck = world.checkpoints["harmless"]
    q = {"part": "shared", "p": "25", "probe_limit": PROBE}
    world.client.get(f"/api/live/{ck}/toggle", params=q)  # make the worker
    key = next(k for k in world.pool.workers if k.startswith(ck))
    gated = GatedWorker(world.pool.workers[key].config)
    gated.gate = threading.Event()
    world.pool.workers[key] = gated
    first = world.client.get(f"/api/live/{ck}/stream", params=q).json()
    second = world.client.get(f"/api/live/{ck}/stream", params={**q, "p": "50"}).json()
    gated.gate.set()
    old = _poll_done(world.client, first["id"])
    new = _poll_done(world.client, second["id"])
    assert old["state"] == "superseded" and first["id"] in gated.cancels
    assert old["rounds_computed"] is not None and old["rounds_computed"] < 4  # its work stopped early
    assert new["state"] == "done" and second["id"] not in gated.cancels


def test_cancel_and_other_channels(world: SimpleNamespace) -> None:
    ck = world.checkpoints["mixed"]
    key = next(k for k in world.pool.workers if k.startswith(ck))
    gated = GatedWorker(world.pool.workers[key].config)
    gated.gate = threading.Event()
    world.pool.workers[key] = gated
    rid = world.client.get(f"/api/live/{ck}/stream", params={"part": "shared", "p": "25",
                                                             "probe_limit": PROBE}).json()["id"]
    cancelled = world.client.delete(f"/api/live/runs/{rid}")
    gated.gate.set()
    assert cancelled.status_code == 200 and rid in gated.cancels
    assert _poll_done(world.client, rid)["state"] == "cancelled"
    assert world.client.get("/api/live/runs/" + "0" * 32).status_code == 404
    assert world.client.get("/api/live/runs/not-hex").status_code == 422
    world.pool.workers[key] = FakeLiveWorker(gated.config)


def test_finished_runs_are_recorded_for_the_agreement_page(world: SimpleNamespace) -> None:
    ck = world.checkpoints["mixed"]
    rid = world.client.get(f"/api/live/{ck}/stream", params={"part": "shared", "p": "10",
                                                             "probe_limit": PROBE}).json()["id"]
    _poll_done(world.client, rid)
    deadline = time.monotonic() + 5
    rec = None
    while time.monotonic() < deadline and rec is None:
        rec = next((r for r in world.client.get("/api/live/records").json() if r["id"] == rid), None)
        time.sleep(0.05)
    assert rec is not None and rec["state"] == "done"
    for o, e in rec["estimate"].items():
        assert e["delta_margin"] == pytest.approx(rec["exact"][o]["delta_margin"] / 2)
    assert rec["control_exact"] and rec["timings"]["exact_ms"] is not None
    page = world.client.get("/live/agreement", params={"checkpoint": ck})
    assert page.status_code == 200 and "neurons (API)" in unescape(page.text)


def test_opening_the_dashboard_warms_the_view_s_rms_selected_first(world: SimpleNamespace) -> None:
    ck = world.checkpoints["harmless"]
    world.pool.warmed.clear()
    html = world.client.get("/ui/live/warm", params={"base_model": MODEL, "seed": 0, "ck": ck}).text
    deadline = time.monotonic() + 5
    while len(world.pool.warmed) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [k.split(":")[0] for k in world.pool.warmed][0] == ck
    assert {k.split(":")[0] for k in world.pool.warmed} == set(world.checkpoints.values())
    assert 'id="live-warm"' in html and 'data-warmed="3"' in html
    sessions = world.client.get("/api/live/sessions").json()
    assert {s["key"].split(":")[0] for s in sessions} >= set(world.checkpoints.values())


def test_a_run_nobody_polls_is_abandoned_and_its_work_stopped(world: SimpleNamespace,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from app.ablation import runs as runs_module

    monkeypatch.setattr(runs_module, "ABANDON_S", 0.2)
    ck = world.checkpoints["helpful"]
    key = next(k for k in world.pool.workers if k.startswith(ck))
    gated = GatedWorker(world.pool.workers[key].config)
    gated.gate = threading.Event()
    world.pool.workers[key] = gated
    html = world.client.get(f"/ui/live/{ck}", params={"part": "shared", "p": "25", "probe_limit": PROBE}).text
    rid = re.search(r'data-run="([0-9a-f]+)"', html).group(1)  # type: ignore[union-attr]
    time.sleep(0.4)  # the page went away: no poll
    world.client.get("/api/live/runs/" + "f" * 32)  # any later request reaps stale runs
    deadline = time.monotonic() + 5
    while rid not in gated.cancels and time.monotonic() < deadline:
        time.sleep(0.02)
    gated.gate.set()
    assert rid in gated.cancels
    assert _poll_done(world.client, rid)["state"] == "abandoned"
    world.pool.workers[key] = FakeLiveWorker(gated.config)
