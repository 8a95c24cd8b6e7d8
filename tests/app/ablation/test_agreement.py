"""Recorded live toggles and the agreement of their first-order estimate with the exact shift.

Records go in through the service (`tests/factories/records.py`, no model runs); every expected number is
computed here from the factory's specs, with scipy for the rank correlations, and compared with the service,
the JSON API and the page. Set descriptions are hostile text: the page must never carry them unescaped.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from scipy.stats import spearmanr
from sqlalchemy import func, select

from app.ablation import records
from app.ablation.record_schemas import AgreementRow, ToggleState
from app.auth import users
from app.auth.schemas import Role
from app.core.db import LiveToggleRecord
from app.main import create_app
from app.shares import service as shares
from app.shares.scope import is_shareable
from tests.conftest import make_settings
from tests.factories.http import app_client
from tests.factories.records import CK_A, CK_B, COUNTED, EVIL, SETS, SetSpec, record_sets, toggle_record
from workers.contract.live import LiveEstimateAnswer, LiveEstimateObjective, LiveRound, LiveRunning
from workers.contract.vocab import Objective

H, R = Objective.helpful, Objective.harmless


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("agreement"))
    with app_client(create_app(settings, start_supervisor=False)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        ids = record_sets(services.db)
        yield SimpleNamespace(client=client, services=services, db=services.db, ids=ids, settings=settings)


@pytest.fixture
def empty(tmp_path: Path) -> Iterator[TestClient]:
    with app_client(create_app(make_settings(tmp_path), start_supervisor=False)) as client:
        yield client


# -- what the agreement should be, computed from the specs ----------------------------------------------------
def _points(specs: tuple[SetSpec, ...] | list[SetSpec], objective: Objective | None = None
            ) -> list[tuple[float, float, float, float]]:
    """(estimate Δ margin, exact Δ margin, estimate Δ accuracy, exact Δ accuracy) per set and objective."""
    out = []
    for s in specs:
        assert s.exact is not None
        for o in (H, R):
            if (objective is None or o == objective) and o in s.estimate and o in s.exact:
                out.append((s.estimate[o][0], s.exact[o][0], s.estimate[o][1], s.exact[o][1]))
    return out


def _rho(x: list[float], y: list[float]) -> float | None:
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    return float(spearmanr(x, y)[0])


def _check(row: AgreementRow | dict[str, Any], specs: list[SetSpec] | tuple[SetSpec, ...],
           objective: Objective | None = None) -> None:
    got = row if isinstance(row, dict) else row.model_dump()
    pts = _points(specs, objective)
    em, xm, ea, xa = (list(c) for c in zip(*pts, strict=True)) if pts else ([], [], [], [])
    assert got["n_sets"] == len({s.id for s in specs}) and got["n_points"] == len(pts)
    for key, want in (("spearman_margin", _rho(em, xm)), ("spearman_accuracy", _rho(ea, xa))):
        assert (got[key] is None) == (want is None), key
        if want is not None:
            assert got[key] == pytest.approx(want, abs=1e-12), key
    if pts:
        assert got["mae_margin"] == pytest.approx(sum(abs(e - x) for e, x in zip(em, xm, strict=True)) / len(pts))
        assert got["mae_accuracy"] == pytest.approx(sum(abs(e - x) for e, x in zip(ea, xa, strict=True)) / len(pts))
        assert got["mean_abs_exact_margin"] == pytest.approx(sum(abs(x) for x in xm) / len(pts))
        assert got["mean_abs_exact_accuracy"] == pytest.approx(sum(abs(x) for x in xa) / len(pts))
    else:
        assert got["mae_margin"] is None and got["spearman_margin"] is None


# -- the service ------------------------------------------------------------------------------------------------
def test_spearman_by_hand() -> None:
    # ranks of x: 1 2 3 4 5, of y: 2 1 4 3 5 -> sum d^2 = 4 -> rho = 1 - 6*4/(5*24) = 0.8
    assert records.spearman([0.1, 0.2, 0.3, 0.4, 0.5], [-3.0, -4.0, 7.0, 1.0, 9.0]) == pytest.approx(0.8)
    assert records.spearman([1.0, 2.0], [1.0, 2.0]) is None  # under 3 points
    assert records.spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # constant estimate: undefined
    assert records.spearman([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) is None


def test_agreement_over_every_finished_set(world: SimpleNamespace) -> None:
    out = records.agreement(world.db)
    assert out.n_recorded == len(SETS) and not out.truncated
    _check(out.overall, COUNTED)
    # hand-checked anchor: 12 points, margin MAE = (0.02+0.01+0.15+0.05+1.0+0.3+0.7+0.3+0.01+0+0.01+0.1)/12
    assert out.overall.n_points == 12
    assert out.overall.mae_margin == pytest.approx(2.65 / 12)
    by_objective = {r.group: r for r in out.by_objective}
    for o in (H, R):
        _check(by_objective[o], COUNTED, o)
    assert {p.id for p in out.points} == {s.id for s in COUNTED}
    assert len(out.points) == 12


def test_left_out_toggles_are_counted_by_reason(world: SimpleNamespace) -> None:
    out = records.agreement(world.db)
    assert out.excluded == {"cancelled": 1, "empty set": 1, "exact incomplete": 1, "no exact answer": 1,
                            "superseded": 1}
    counted = {p.id for p in out.points}
    for s in SETS[6:]:
        assert s.id not in counted, s.what
    # the cancelled set's wild estimate would dominate the largest misses if it counted
    assert all(w.what != "cancelled mid-rounds" for w in out.worst)


def test_agreement_by_size_bucket_and_layer_span(world: SimpleNamespace) -> None:
    out = records.agreement(world.db)
    sizes = {r.group: r for r in out.by_size}
    assert list(sizes) == ["<10", "10-99", "100-999", "≥1000"]
    buckets = {"<10": [s for s in COUNTED if s.n_neurons < 10],
               "10-99": [s for s in COUNTED if 10 <= s.n_neurons < 100],
               "100-999": [s for s in COUNTED if 100 <= s.n_neurons < 1000],
               "≥1000": [s for s in COUNTED if s.n_neurons >= 1000]}
    assert [len(v) for v in buckets.values()] == [2, 2, 1, 1]
    for name, specs in buckets.items():
        _check(sizes[name], specs)
    spans = {r.group: r for r in out.by_layers}
    assert list(spans) == ["1 layer", "several layers"]
    _check(spans["1 layer"], [s for s in COUNTED if len(s.layers) == 1])
    _check(spans["several layers"], [s for s in COUNTED if len(s.layers) > 1])
    assert spans["several layers"].n_sets == 2
    assert records.size_bucket(9) == "<10" and records.size_bucket(10) == "10-99"
    assert records.size_bucket(999) == "100-999" and records.size_bucket(1000) == "≥1000"


def test_largest_misses_are_per_set_and_ordered(world: SimpleNamespace) -> None:
    out = records.agreement(world.db)
    errors = []
    for s in COUNTED:
        assert s.exact is not None
        o = max((H, R), key=lambda o: abs(s.estimate[o][0] - s.exact[o][0]))  # type: ignore[index]
        errors.append((abs(s.estimate[o][0] - s.exact[o][0]), s.what, o))
    errors.sort(reverse=True)
    assert [(w.what, w.objective) for w in out.worst] == [(what, o) for _, what, o in errors]
    top = out.worst[0]
    assert top.what == "helpful-specific at top 20% by C, seed 1" and top.error_margin == pytest.approx(1.0)
    shared = next(w for w in out.worst if w.what.startswith("shared H"))
    assert shared.control_margin == pytest.approx(-0.01) and shared.layers == {"1": 20, "4": 30}


def test_a_checkpoint_filter(world: SimpleNamespace) -> None:
    out = records.agreement(world.db, checkpoint=CK_B)
    assert out.checkpoint == CK_B and out.n_recorded == 1 and out.overall.n_sets == 1
    _check(out.overall, [s for s in COUNTED if s.checkpoint == CK_B])
    assert out.overall.spearman_margin is None  # 2 points
    assert out.checkpoints == sorted({CK_A, CK_B})
    none = records.agreement(world.db, checkpoint="c" * 64)
    assert none.n_recorded == 0 and none.overall.n_points == 0 and none.worst == [] and none.points == []


def test_recording_is_idempotent_on_the_id(world: SimpleNamespace) -> None:
    spec = SETS[0]
    again = toggle_record(spec, what="a second description", state="cancelled")
    assert records.record_toggle(world.db, again) == spec.id
    with world.db.session() as s:
        assert s.scalar(select(func.count()).select_from(LiveToggleRecord).where(LiveToggleRecord.id == spec.id)) == 1
        row = s.get(LiveToggleRecord, spec.id)
        assert row is not None and row.what == spec.what and row.state == ToggleState.done  # the first record won
        assert row.exact is not None and row.exact["helpful"]["delta_margin_ci"] == pytest.approx([-0.17, -0.07])
        assert row.created_by == "local"


def test_records_list_newest_first_and_round_trip(world: SimpleNamespace) -> None:
    listed = records.list_records(world.db, limit=1000)
    assert len(listed) == len(SETS)
    assert [r.created_at for r in listed] == sorted((r.created_at for r in listed), reverse=True)
    by_id = {r.id: r for r in listed}
    shared = by_id[SETS[1].id]
    assert shared.layers == {"1": 20, "4": 30} and shared.n_neurons == 50 and shared.mode == "zero"
    assert shared.estimate[H].delta_margin == -0.30 and shared.exact is not None
    assert shared.exact[R].n_pairs_done == 64 and shared.control_exact is not None
    assert shared.timings.estimate_ms == 4.0 and shared.timings.startup_ms is None
    assert [r.id for r in records.list_records(world.db, checkpoint=CK_B)] == [SETS[5].id]
    assert len(records.list_records(world.db, limit=3)) == 3


def test_a_record_names_its_creator_when_told(empty: TestClient) -> None:
    db = empty.app.state.services.db  # type: ignore[attr-defined]
    spec = SetSpec("from a background thread", {"7": 3}, {H: (-0.1, 0.0)}, {H: (-0.1, 0.0)})
    records.record_toggle(db, toggle_record(spec, created_by="rita"))
    (got,) = records.list_records(db)
    assert got.created_by == "rita"


@pytest.mark.parametrize("bad", [
    {"id": "not-hex"}, {"id": "A" * 32}, {"state": "running"}, {"mode": "melt"}, {"n_neurons": -1},
    {"layers": {"x": 3}}, {"layers": {"3": -1}}, {"checkpoint": "c" * 65}, {"what": "w" * 1001},
    {"estimate": {"nonsense": {"delta_margin": 0.0, "delta_accuracy": 0.0}}},
    {"estimate": {"helpful": {"delta_margin": float("nan"), "delta_accuracy": 0.0}}},
    {"estimate": {"helpful": {"delta_margin": 0.0, "delta_accuracy": 2.0}}},
    {"exact": {"helpful": {"delta_margin": 0.0, "delta_accuracy": 0.0, "delta_margin_ci": [0.0],
                           "n_pairs_done": 1, "n_pairs": 1}}},
    {"timings": {"estimate_ms": -1.0}}, {"probe_limit": 0}, {"set_key": "xyz"},
])
def test_a_malformed_record_is_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        toggle_record(SETS[0], **bad)


def test_layer_keys_may_be_integers() -> None:
    assert toggle_record(SETS[0], layers={3: 5}).layers == {"3": 5}


# -- JSON API ---------------------------------------------------------------------------------------------------
def test_the_json_api_is_the_service(world: SimpleNamespace) -> None:
    c: TestClient = world.client
    r = c.get("/api/live/agreement")
    assert r.status_code == 200
    body = r.json()
    assert body == json.loads(records.agreement(world.db).model_dump_json())
    _check(body["overall"], COUNTED)
    b = c.get("/api/live/agreement", params={"checkpoint": CK_B}).json()
    assert b["checkpoint"] == CK_B and b["overall"]["n_sets"] == 1
    assert c.get("/api/live/agreement", params={"checkpoint": ""}).json()["checkpoint"] is None  # blank: every one
    listed = c.get("/api/live/records", params={"checkpoint": CK_B}).json()
    assert [x["id"] for x in listed] == [SETS[5].id] and listed[0]["estimate"]["harmless"]["delta_margin"] == -0.25
    assert len(c.get("/api/live/records", params={"limit": 2}).json()) == 2


@pytest.mark.parametrize("path", ["/api/live/agreement", "/api/live/records", "/live/agreement"])
@pytest.mark.parametrize("params", [{"checkpoint": "c" * 65}, {"limit": "0"}, {"limit": "many"}])
def test_a_bad_query_is_a_4xx_not_a_500(world: SimpleNamespace, path: str, params: dict[str, str]) -> None:
    r = world.client.get(path, params=params)
    if "limit" in params and path != "/api/live/records":
        assert r.status_code == 200  # not a parameter there: ignored
        return
    assert r.status_code == 422, r.text
    assert "checkpoint" in r.json()["detail"] or "limit" in r.json()["detail"]


def test_the_routes_are_documented(world: SimpleNamespace) -> None:
    doc = world.client.get("/openapi.json").json()
    assert "/api/live/agreement" in doc["paths"] and "/api/live/records" in doc["paths"]
    assert "/live/agreement" not in doc["paths"]


# -- the page ---------------------------------------------------------------------------------------------------
def _spec(html: str, name: str) -> dict[str, Any]:
    m = re.search(rf'<script type="application/json" id="{name}">(.*?)</script>', html, re.S)
    assert m, name
    return json.loads(m.group(1))  # type: ignore[no-any-return]


def _rows(html: str, table_id: str) -> list[dict[str, Any]]:
    m = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert m, table_id
    out = []
    for attrs, inner in re.findall(r"<tr([^>]*)>(.*?)</tr>", m.group(1).split("<tbody>", 1)[1], re.S):
        row: dict[str, Any] = {k: unescape(v) for k, v in re.findall(r'data-([\w-]+)="([^"]*)"', attrs)}
        row["cells"] = dict(re.findall(r'<td class="num" data-col="([^"]+)" data-value="([^"]*)"', inner))
        row["html"] = inner
        out.append(row)
    return out


def test_the_page_shows_plots_tables_and_caveat(world: SimpleNamespace) -> None:
    r = world.client.get("/live/agreement")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    html = r.text
    assert 'id="agreement-empty"' not in html and 'id="agreement-caveat"' in html
    assert "first order" in html and "additive over neurons" in html and "strongest neurons" in html
    assert "1/n of the probe pairs" in html
    margin, accuracy = _spec(html, "plot-agreement-margin-spec"), _spec(html, "plot-agreement-accuracy-spec")
    assert 'data-plot="plot-agreement-margin-spec"' in html and 'data-plot="plot-agreement-accuracy-spec"' in html
    for fig, scale, i_est, i_ex in ((margin, 1.0, 0, 0), (accuracy, 100.0, 1, 1)):
        line, *traces = fig["data"]
        assert line["mode"] == "lines" and line["x"] == line["y"]
        assert [t["name"] for t in traces] == ["helpful", "harmless"]
        for t, o in zip(traces, (H, R), strict=True):
            want = sorted((scale * s.exact[o][i_ex], scale * s.estimate[o][i_est])  # type: ignore[index]
                          for s in COUNTED)
            got = sorted(zip(t["x"], t["y"], strict=True))
            assert [g[0] for g in got] == pytest.approx([w[0] for w in want])
            assert [g[1] for g in got] == pytest.approx([w[1] for w in want])
            assert "error_x" in t and len(t["customdata"]) == len(COUNTED)
    rows = {row["group"]: row for row in _rows(html, "agreement-table")}
    assert set(rows) == {"all", "helpful", "harmless", "<10", "10-99", "100-999", "≥1000", "1 layer",
                         "several layers"}
    api = world.client.get("/api/live/agreement").json()
    assert float(rows["all"]["cells"]["spearman_margin"]) == pytest.approx(api["overall"]["spearman_margin"])
    assert float(rows["all"]["cells"]["mae_accuracy"]) == pytest.approx(api["overall"]["mae_accuracy"])
    assert float(rows["≥1000"]["cells"]["mae_margin"]) == pytest.approx(api["by_size"][3]["mae_margin"])
    worst = _rows(html, "worst-table")
    assert [w["id"] for w in worst] == [w["id"] for w in api["worst"]]
    assert "/glossary#first-order-estimate" in html and "/glossary#estimate-agreement" in html


def test_hostile_set_names_never_reach_the_page_unescaped(world: SimpleNamespace) -> None:
    html = world.client.get("/live/agreement").text
    assert "<script>alert(1)" not in html and "alert(1)</script>" not in html
    assert '"quoted"' not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # the table cell, escaped
    whats = [cd[0] for t in _spec(html, "plot-agreement-margin-spec")["data"][1:] for cd in t["customdata"]]
    assert "&lt;script&gt;alert(1)&lt;/script&gt; shared H ∩ R &amp; &quot;quoted&quot;" in whats  # for Plotly
    assert not any("<" in w for w in whats)
    # the JSON API returns the text as it was recorded: escaping is the page's job
    assert EVIL in [w["what"] for w in world.client.get("/api/live/agreement").json()["worst"]]


def test_the_page_filters_by_checkpoint(world: SimpleNamespace) -> None:
    html = world.client.get("/live/agreement", params={"checkpoint": CK_B}).text
    assert f'<option value="{CK_B}" selected>' in html
    assert len(_spec(html, "plot-agreement-margin-spec")["data"][1]["x"]) == 1
    other = world.client.get("/live/agreement", params={"checkpoint": "<b>nope</b>"}).text
    assert 'id="agreement-empty"' in other and "<b>nope</b>" not in other


def test_the_empty_state(empty: TestClient) -> None:
    r = empty.get("/live/agreement")
    assert r.status_code == 200
    assert 'id="agreement-empty"' in r.text and "No toggles recorded yet: toggle a set on the dashboard" in r.text
    assert "data-plot=" not in r.text and 'id="agreement-filter"' not in r.text
    body = empty.get("/api/live/agreement").json()
    assert body["n_recorded"] == 0 and body["overall"]["n_points"] == 0 and body["overall"]["spearman_margin"] is None
    assert body["worst"] == [] and body["points"] == [] and all(r["n_sets"] == 0 for r in body["by_size"])
    assert empty.get("/api/live/records").json() == []


# -- who may read it ------------------------------------------------------------------------------------------------
def test_share_links_do_not_reach_it(world: SimpleNamespace) -> None:
    assert not is_shareable("/live/agreement")
    link = shares.create_share(db=world.db, settings=world.settings, target="/studies/" + "e" * 24)
    holder = TestClient(world.client.app, base_url="http://localhost")
    for path in ("/live/agreement", "/api/live/agreement", "/api/live/records"):
        r = holder.get(path, headers={"x-tension-share": link.token})
        assert r.status_code == 403, path


def test_signed_in_users_only_once_users_exist(empty: TestClient) -> None:
    services = empty.app.state.services  # type: ignore[attr-defined]
    _, token = users.add_user(services.db, "vera", Role.viewer, "correct horse")
    stack = empty.app.middleware_stack  # type: ignore[attr-defined]
    while stack is not None:  # the access middleware re-reads "users exist" within a second
        if hasattr(stack, "_users_seen"):
            stack._users_seen = (0.0, False)
        stack = getattr(stack, "app", None)
    assert empty.get("/api/live/agreement").status_code == 401
    page = empty.get("/live/agreement", headers={"accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/login?next=")
    assert empty.get("/api/live/agreement", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    assert empty.get("/live/agreement", headers={"Authorization": f"Bearer {token}"}).status_code == 200


# -- a live run, as the live path records it --------------------------------------------------------------------
def _running(n_done: int, margin: float | None, acc: float | None) -> LiveRunning:
    return LiveRunning(n_done=n_done, n_total=64, delta_margin=margin, delta_accuracy=acc,
                       delta_margin_ci=None if margin is None else [margin - 0.1, margin + 0.1],
                       delta_accuracy_ci=None if acc is None else [acc - 0.01, acc + 0.01],
                       flips_to_wrong=1, flips_to_right=0)


def _run(state: str, *, n_done: int = 64, control: bool = True, estimate: bool = True) -> SimpleNamespace:
    est = LiveEstimateObjective(n_pairs=64, baseline_accuracy=0.8, baseline_mean_margin=1.0, delta_margin=-0.2,
                                delta_accuracy=-0.03125)
    rounds = {"set": LiveRound(id="r", phase="set", round=8, n_rounds=8, seconds=1.0, queued_s=0.0, final=n_done == 64,
                               path="cached_prefix", objectives={"helpful": _running(n_done, -0.3, -0.046875),
                                                                 "harmless": _running(1, None, None)})}
    if control:
        rounds["control"] = LiveRound(id="r", phase="control", round=8, n_rounds=8, seconds=2.0, queued_s=0.0,
                                      final=True, path="cached_prefix",
                                      objectives={"helpful": _running(64, -0.01, 0.0)})
    timings = {"startup_ms": None, "estimate_ms": 5.0, "first_round_ms": 200.0, "exact_ms": 1000.0,
               "control_ms": 1900.0, "total_ms": 2000.0}
    return SimpleNamespace(
        id="f" * 32, state=state, rounds=rounds, timings=lambda: timings,
        estimate=LiveEstimateAnswer(objectives={"helpful": est}, seconds=0.005, build_s=1.0,
                                    built_now=False) if estimate else None,
        meta={"checkpoint": CK_A, "base_model": "tiny-bert", "regime": "mixed", "seed": 0, "n_neurons": 3,
              "neurons": {"4": [9, 2], "1": [5]}, "mode": "zero", "factor": 0.0, "probe_limit": 64,
              "what": EVIL, "scope": "", "per_layer": [(1, 1), (4, 2)], "actor": "rita"})


def test_a_finished_live_run_becomes_a_record() -> None:
    rec = records.run_record(_run("done"))  # type: ignore[arg-type]
    assert rec is not None and rec.state == ToggleState.done and rec.id == "f" * 32
    assert rec.layers == {"4": 2, "1": 1} and rec.n_neurons == 3 and rec.what == EVIL and rec.created_by == "rita"
    assert rec.estimate[H].delta_margin == -0.2 and set(rec.estimate) == {H}
    assert rec.exact is not None and set(rec.exact) == {H}  # an objective with no Δ yet is left out
    assert rec.exact[H].delta_margin_ci == pytest.approx((-0.4, -0.2)) and rec.exact[H].n_pairs_done == 64
    assert rec.control_exact is not None and rec.control_exact[H].delta_margin == -0.01
    assert rec.timings.total_ms == 2000.0 and rec.timings.startup_ms is None  # control_ms is not a record field
    # the key names the set, mode and factor, however the set was written
    assert rec.set_key == records.set_key({"1": [5], "4": [2, 9]}, "zero", 0.0)
    assert rec.set_key != records.set_key({"1": [5], "4": [2, 9]}, "mean", 0.0)
    assert rec.set_key != records.set_key({"1": [5], "4": [2, 9]}, "scale", 0.5)
    assert len(rec.set_key) == 64


def test_which_runs_are_recorded(empty: TestClient) -> None:
    db = empty.app.state.services.db  # type: ignore[attr-defined]
    assert records.run_record(_run("running")) is None  # type: ignore[arg-type]
    assert records.run_record(_run("failed")) is None  # type: ignore[arg-type]
    assert records.run_record(_run("done", estimate=False)) is None  # type: ignore[arg-type]
    abandoned = records.run_record(_run("abandoned", n_done=24, control=False))  # type: ignore[arg-type]
    assert abandoned is not None and abandoned.state == ToggleState.cancelled and abandoned.control_exact is None
    assert records.record_run(db, _run("superseded", n_done=24)) == "f" * 32  # type: ignore[arg-type]
    out = records.agreement(db)
    assert out.n_recorded == 1 and out.excluded == {"superseded": 1} and out.overall.n_points == 0
