"""The tension dial through its routes, with the fake live pool: estimated curves at once, exact points by
polling, one channel per set, the identity, bad factors, escaping and share links.

The fake's numbers are a closed formula (`tests/factories/ablation.py`): in mode 'scale' every shift is the
zero-mode shift × (1 − factor), and its estimate is half the exact shift."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from html import unescape
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.ablation import service
from app.ablation.schemas import ToggleWhich
from app.core.checks import check_checkpoint
from app.main import create_app
from tests.conftest import make_settings
from tests.factories.ablation import MODEL, FakeLivePool, FakeLiveWorker, answer_for, captured_rms
from tests.factories.http import app_client
from workers.contract.live import LiveStreamRequest, LiveToggleRequest
from workers.contract.vocab import AblationMode

PROBE = 8
VIEW = {"base_model": MODEL, "p": "25", "probe_limit": str(PROBE)}
PARTS = ("shared", "helpful_specific", "harmless_specific")
FACTORS = [0.25 * i for i in range(9)]
HOSTILE = "<img src=x onerror=alert(1)>\"'&model"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("dial"))
    with app_client(create_app(settings, start_supervisor=False)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        pool = client.app.state.live_pool = FakeLivePool()  # type: ignore[attr-defined]
        checkpoints = {str(r): ck for r, ck in captured_rms(services).items()}
        hostile = {str(r): ck for r, ck in captured_rms(services, base_model=HOSTILE).items()}
        mixed = check_checkpoint(services, checkpoints["mixed"])
        sets = {part: service.toggle_neurons(store=services.store, db=services.db, checkpoint=mixed,
                                             which=ToggleWhich(part=part, p=25)).as_json() for part in PARTS}
        yield SimpleNamespace(client=client, pool=pool, checkpoints=checkpoints, services=services, sets=sets,
                              hostile=hostile)


def _worker(world: SimpleNamespace) -> FakeLiveWorker:
    ck = world.checkpoints["mixed"]
    return next(w for k, w in world.pool.workers.items() if k.startswith(f"{ck}:{PROBE}:"))


def _spec(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="plot-dial-spec">(.*?)</script>', html, re.S)
    assert m, html[:2000]
    return json.loads(m.group(1))  # type: ignore[no-any-return]


def _traces(spec: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {t["meta"]["part"]: t for t in spec["data"] if t["meta"]["kind"] == kind}


def _fake_shift(neurons: dict[str, list[int]], factor: float) -> float:
    """The fake's exact Δ accuracy (same for both objectives), in pp."""
    n = sum(len(v) for v in neurons.values())
    return 100 * -min(0.75, 0.01 * n) * (1 - factor)


def _streams(worker: FakeLiveWorker, n: int, timeout: float = 5.0) -> list[LiveStreamRequest]:
    """The worker's stream requests once there are `n` (a run's thread sends its request just after start)."""
    deadline = time.monotonic() + timeout
    while len(worker.streams) < n and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(worker.streams) == n, worker.streams
    return list(worker.streams)


def _poll_until_done(world: SimpleNamespace, html: str, client: TestClient | None = None,
                     headers: dict[str, str] | None = None) -> str:
    """Follow the fragment's own long poll, as htmx would, until it stops polling."""
    client = client or world.client
    for _ in range(40):
        m = re.search(r'hx-get="(/ui/live/dial/poll\?[^"]+)"', html)
        if m is None:
            return html
        r = client.get(unescape(m.group(1)), headers=headers)
        assert r.status_code == 200, r.text
        html = r.text
    raise AssertionError("the dial kept polling")


def test_the_card_shows_three_estimated_curves_at_nine_factors(world: SimpleNamespace) -> None:
    r = world.client.get("/ui/live/dial", params=VIEW)
    assert r.status_code == 200, r.text
    html = r.text
    assert re.search(r'<input type="range" name="factor" id="dial-factor" min="0" max="2" step="0.25" value="1"', html)
    assert 'hx-get="/ui/live/dial/points"' in html and 'hx-trigger="change delay:250ms"' in html
    assert "1 = unchanged, 0 = ablated, 2 = doubled" in html and 'id="dial-identity"' in html
    assert 'id="dial-caveat"' in html and "first order" in html and "12.5 pp" in html  # 1/8 pairs
    assert 'data-running="0"' in html and "/ui/live/dial/poll" not in html  # ×1: nothing runs
    curves = _traces(_spec(html), "estimate")
    assert set(curves) == set(PARTS)
    for part, t in curves.items():
        assert t["customdata"] == [f"×{f:g}" for f in FACTORS]
        want = [_fake_shift(world.sets[part], f) / 2 for f in FACTORS]  # the fake's estimate: half the shift
        assert t["x"] == pytest.approx(want) and t["y"] == pytest.approx(want)
    asked = [e for e in _worker(world).estimates if e.id is None]
    assert {(json.dumps(e.neurons.as_json(), sort_keys=True), e.factor) for e in asked} == {
        (json.dumps(world.sets[p], sort_keys=True), f) for p in PARTS for f in FACTORS if f != 1 and world.sets[p]}
    assert all(e.mode == AblationMode.scale and not e.control for e in asked)
    current = next(t for t in _spec(html)["data"] if t["meta"]["kind"] == "current")
    assert current["x"] == [0.0, 0.0, 0.0] and current["y"] == [0.0, 0.0, 0.0]


def test_moving_the_slider_starts_three_scale_runs_and_polling_ends_with_exact_points(world: SimpleNamespace) -> None:
    world.client.get("/ui/live/dial", params=VIEW)
    worker = _worker(world)
    before = len(worker.streams)
    r = world.client.get("/ui/live/dial/points", params={**VIEW, "factor": "0.5"})
    assert r.status_code == 200, r.text
    new = _streams(worker, before + 3)[before:]
    assert all(s.mode == AblationMode.scale and s.factor == 0.5 and not s.control for s in new)
    assert sorted(json.dumps(s.neurons.as_json(), sort_keys=True) for s in new) == sorted(
        json.dumps(world.sets[p], sort_keys=True) for p in PARTS)
    html = _poll_until_done(world, r.text)
    assert 'data-running="0"' in html and "hx-get=" not in html
    assert "exact at ×0.5 for 3 of 3 set(s)" in unescape(html)
    exact = _traces(_spec(html), "exact")
    for part in PARTS:
        t = exact[part]
        assert t["customdata"] == [["×0.5", "exact, all pairs"]]
        want = answer_for(LiveToggleRequest.model_validate({"neurons": world.sets[part], "mode": "scale",
                                                            "factor": 0.5}), PROBE)
        assert t["x"] == pytest.approx([100 * want.objectives["helpful"].delta.accuracy])
        assert t["y"] == pytest.approx([100 * want.objectives["harmless"].delta.accuracy])
        assert t["x"] == pytest.approx([_fake_shift(world.sets[part], 0.5)])
        assert t["error_x"]["array"] == pytest.approx([5.0]) and t["error_y"]["arrayminus"] == pytest.approx([5.0])
    rows = re.findall(r'<tr data-part="(\w+)" data-factor="([\d.]+)" data-final="1"', html)
    assert sorted(rows) == sorted((p, "0.5") for p in PARTS)
    ringed = next(t for t in _spec(html)["data"] if t["meta"]["kind"] == "current")
    assert ringed["name"] == "slider: ×0.5"
    # Back to a position already exact: nothing new is computed.
    again = world.client.get("/ui/live/dial/points", params={**VIEW, "factor": "0.5"})
    assert len(worker.streams) == before + 3 and 'data-running="0"' in again.text


class GatedWorker(FakeLiveWorker):
    """A fake worker whose stream waits at a gate before each round: a run stays running until released."""

    gate: threading.Event

    def stream(self, request: LiveStreamRequest, timeout: float = 0) -> Iterator[Any]:
        for msg in super().stream(request, timeout):
            self.gate.wait(5)
            yield msg


def test_a_second_factor_supersedes_only_per_set(world: SimpleNamespace) -> None:
    world.client.get("/ui/live/dial", params=VIEW)
    key = next(k for k in world.pool.workers if k.startswith(f"{world.checkpoints['mixed']}:{PROBE}:"))
    plain = world.pool.workers[key]
    gated = GatedWorker(plain.config)
    gated.gate = threading.Event()
    world.pool.workers[key] = gated
    try:
        toggle = world.client.get("/api/live/" + world.checkpoints["mixed"] + "/stream",
                                  params={"part": "shared", "p": "25", "probe_limit": PROBE}).json()["id"]
        first = world.client.get("/ui/live/dial/points", params={**VIEW, "factor": "0.25"})
        assert first.status_code == 200 and 'data-running="1"' in first.text
        old = [s.id for s in _streams(gated, 4) if s.mode == AblationMode.scale and s.factor == 0.25]
        assert len(old) == 3 and not gated.cancels  # three sets running side by side: none superseded another
        world.client.get("/ui/live/dial/points", params={**VIEW, "factor": "0.75"})
        new = [s.id for s in _streams(gated, 7) if s.mode == AblationMode.scale and s.factor == 0.75]
        assert len(new) == 3
        deadline = time.monotonic() + 5
        while set(gated.cancels) != set(old) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert set(gated.cancels) == set(old)  # each set's older run, and nothing else (not the panel's toggle)
        assert toggle not in gated.cancels
        gated.gate.set()
        html = _poll_until_done(world, world.client.get("/ui/live/dial/poll",
                                                        params={**VIEW, "factor": "0.75"}).text)
        rows = re.findall(r'<tr data-part="(\w+)" data-factor="([\d.]+)" data-final="1"', html)
        assert {(p, "0.75") for p in PARTS} <= set(rows) and not {r for r in rows if r[1] == "0.25"}
        assert 'id="dial-stopped"' in html and not set(new) & set(gated.cancels)
    finally:
        gated.gate.set()
        world.pool.workers[key] = plain


def test_factor_one_is_the_identity_and_starts_nothing(world: SimpleNamespace) -> None:
    world.client.get("/ui/live/dial", params=VIEW)
    n = len(world.pool.streamed())
    r = world.client.get("/ui/live/dial/points", params={**VIEW, "factor": "1"})
    assert r.status_code == 200 and len(world.pool.streamed()) == n
    assert "×1 is the unchanged RM: Δ = 0 exactly" in unescape(r.text)
    assert 'id="dial-identity-row"' in r.text


@pytest.mark.parametrize("route", ["/ui/live/dial", "/ui/live/dial/points", "/ui/live/dial/poll"])
@pytest.mark.parametrize(("factor", "message"), [("3", "less than or equal to 2"),
                                                 ("-1", "greater than or equal to 0"),
                                                 ("abc", "valid number"), ("0.3", "multiple of 0.25"),
                                                 ("nan", "query.factor")])
def test_a_bad_factor_is_a_422_naming_the_field(world: SimpleNamespace, route: str, factor: str,
                                                message: str) -> None:
    n = len(world.pool.streamed())
    r = world.client.get(route, params={**VIEW, "factor": factor})
    assert r.status_code == 422, r.text
    assert "query.factor" in r.json()["detail"] and message in r.json()["detail"]
    frag = world.client.get(route, params={**VIEW, "factor": factor}, headers={"HX-Request": "true"})
    assert frag.status_code == 422 and 'class="error"' in frag.text
    assert len(world.pool.streamed()) == n


def test_other_bad_views_are_4xx_not_500(world: SimpleNamespace) -> None:
    assert world.client.get("/ui/live/dial", params={**VIEW, "mode": "zero"}).status_code == 422
    assert world.client.get("/ui/live/dial", params={**VIEW, "base_model": "no-such"}).status_code == 404
    other = world.client.get("/ui/live/dial", params={**VIEW, "ck": world.hostile["mixed"]})
    assert other.status_code == 404 and "not a captured RM" in other.json()["detail"]


def test_hostile_names_are_escaped(world: SimpleNamespace) -> None:
    r = world.client.get("/ui/live/dial", params={**VIEW, "base_model": HOSTILE, "set": "<script>x</script>"})
    assert r.status_code == 200, r.text
    assert "<img" not in r.text and "<script>x" not in r.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in r.text
    panel = world.client.get("/ui/ablation/panel", params={**VIEW, "base_model": HOSTILE})
    assert panel.status_code == 200 and "<img" not in panel.text
    url = unescape(re.search(r'id="dial-open" hx-get="([^"]+)"', panel.text).group(1))  # type: ignore[union-attr]
    assert "%3Cimg" in url and world.client.get(url).status_code == 200


def test_the_panel_opens_the_dial_with_its_view(world: SimpleNamespace) -> None:
    panel = world.client.get("/ui/ablation/panel", params=VIEW).text
    m = re.search(r'<button type="button" id="dial-open" hx-get="([^"]+)" hx-target="#dial-slot"', panel)
    assert m and 'id="dial-slot"' in panel and "Open the tension dial" in panel
    url = unescape(m.group(1))
    assert url.startswith("/ui/live/dial?") and f"ck={world.checkpoints['mixed']}" in url and "p=25" in url
    assert f"probe_limit={PROBE}" in url
    card = world.client.get(url)
    assert card.status_code == 200 and 'id="dial-card"' in card.text


def _share(world: SimpleNamespace, target: str) -> str:
    r = world.client.post("/api/shares", json={"target": target})
    assert r.status_code == 201, r.text
    return str(r.json()["token"])


def test_a_model_share_link_may_turn_the_dial_a_result_link_may_not(world: SimpleNamespace) -> None:
    token = _share(world, f"/models/{MODEL}/dashboard?p=25&probe_limit={PROBE}")
    holder = TestClient(world.client.app, base_url="http://localhost")
    h = {"x-tension-share": token}
    card = holder.get("/ui/live/dial", params=VIEW, headers=h)
    assert card.status_code == 200, card.text
    points = holder.get("/ui/live/dial/points", params={**VIEW, "factor": "1.5"}, headers=h)
    assert points.status_code == 200, points.text
    html = _poll_until_done(world, points.text, client=holder, headers=h)
    assert {t["meta"]["part"] for t in _spec(html)["data"] if t["meta"]["kind"] == "exact" and t["x"]} == set(PARTS)
    for route in ("/ui/live/dial", "/ui/live/dial/points", "/ui/live/dial/poll"):
        pinned = holder.get(route, params={**VIEW, "probe_limit": "64", "factor": "0.5"}, headers=h)
        assert pinned.status_code == 403 and "probe_limit=8" in pinned.json()["detail"], route
        theirs = holder.get(route, params={**VIEW, "ck": world.hostile["mixed"]}, headers=h)
        assert theirs.status_code == 403, route
    result = _share(world, "/results/abc")
    for route in ("/ui/live/dial", "/ui/live/dial/points", "/ui/live/dial/poll"):
        refused = holder.get(route, params=VIEW, headers={"x-tension-share": result})
        assert refused.status_code == 403 and "this share link opens" in refused.json()["detail"], route
