"""Neuron API and pages on seeded captures (tests/factories/neurons.py, ingested through the real path).

Every number the API and pages serve is checked against an independent numpy computation from the
seeded rows: scores by token-weighted means per side, selections by `workers.neurons.selection`'s
`top_percent`, overlaps by plain numpy set arithmetic and scipy's hypergeometric test.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from markupsafe import escape
from scipy.stats import hypergeom

from app.main import create_app
from tests.conftest import make_settings
from tests.factories.http import app_client
from tests.factories.neurons import MODEL, SHAPE, Capture, add_capture, add_three_regimes
from workers.contract.vocab import STAT_COLUMN, Stat
from workers.neurons import selection as sel

REGIMES = ("helpful", "harmless", "mixed")
OWN = {"helpful": ["helpful"], "harmless": ["harmless"], "mixed": ["helpful", "harmless"]}
EXAMPLE_NEURON = (1, 5)
N = SHAPE[0] * SHAPE[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("neurons"))
    with app_client(create_app(settings, start_supervisor=False)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        captures = add_three_regimes(services, example_neurons=[EXAMPLE_NEURON])
        yield SimpleNamespace(client=client, captures=captures, services=services,
                              checkpoints={r: c.checkpoint for r, c in captures.items()})


def expected_scores(capture: Capture, stat: str, objectives: list[str]) -> np.ndarray:
    """S from the seeded rows: token-weighted mean per side over the objectives, then the mean of the sides."""
    num = {s: np.zeros(SHAPE) for s in ("chosen", "rejected")}
    den = {s: np.zeros(SHAPE) for s in ("chosen", "rejected")}
    for r in capture.rows:
        if r["objective"] in objectives:
            num[r["side"]][r["layer"], r["neuron"]] += r["n_tokens"] * r[STAT_COLUMN[Stat(stat)]]
            den[r["side"]][r["layer"], r["neuron"]] += r["n_tokens"]
    return sel.combined_score(num["chosen"] / den["chosen"], num["rejected"] / den["rejected"])


def _scores(world: SimpleNamespace, regime: str, stat: str = "A", scope: str = "own") -> np.ndarray:
    r = world.client.get(f"/api/neurons/{MODEL}/scores", params={"regime": regime, "stat": stat, "scope": scope})
    assert r.status_code == 200, r.text
    assert r.json()["checkpoint"] == world.checkpoints[regime]
    return np.array(r.json()["scores"], dtype=np.float64)


def _mask(neurons: dict[str, list[int]], shape: list[int]) -> np.ndarray:
    return sel.dict_to_mask(neurons, shape)


def _nan_eq(a: float | None, b: float) -> bool:
    return (a is None and math.isnan(b)) or (a is not None and a == pytest.approx(b, rel=1e-12, abs=1e-15))


def _top(world: SimpleNamespace, regime: str, stat: str, p: float, scope: str = "own") -> sel.Selection:
    objectives = OWN[regime] if scope == "own" else ["helpful", "harmless"] if scope == "all" else [scope]
    return sel.top_percent(expected_scores(world.captures[regime], stat, objectives), p)


# -- captures and scores --------------------------------------------------------------------------------
def test_captures_list_the_three_rms(world: SimpleNamespace) -> None:
    rows = world.client.get("/api/neurons/captures").json()
    assert {r["regime"]: r["checkpoint"] for r in rows} == world.checkpoints
    for r in rows:
        assert r["base_model"] == MODEL and r["hook"] == "down_proj_input" and r["seed"] == 0
        assert (r["n_layers"], r["n_neurons"]) == SHAPE
        assert r["result_key"] == world.captures[r["regime"]].result_key
        assert world.services.store.is_ingested(r["result_key"])
    assert world.client.get("/api/neurons/captures", params={"base_model": "nope"}).json() == []


@pytest.mark.parametrize("stat", ["A", "C", "P"])
def test_scores_equal_a_numpy_recomputation_from_the_rows(world: SimpleNamespace, stat: str) -> None:
    for regime in REGIMES:
        api = _scores(world, regime, stat)
        assert api.shape == SHAPE and np.isfinite(api).all()
        np.testing.assert_allclose(api, expected_scores(world.captures[regime], stat, OWN[regime]), rtol=1e-10)
    for scope in ("helpful", "harmless"):
        np.testing.assert_allclose(_scores(world, "mixed", stat, scope),
                                   expected_scores(world.captures["mixed"], stat, [scope]), rtol=1e-10)
    np.testing.assert_allclose(_scores(world, "helpful", stat, "all"),
                               expected_scores(world.captures["helpful"], stat, ["helpful", "harmless"]), rtol=1e-10)
    one = world.client.get(f"/api/neurons/{MODEL}/scores", params={"regime": "mixed", "stat": stat, "layer": 1}).json()
    assert one["layer"] == 1 and one["shape"] == list(SHAPE)
    assert one["scores"] == pytest.approx(_scores(world, "mixed", stat)[1].tolist())


def test_scores_of_a_named_checkpoint(world: SimpleNamespace) -> None:
    ck = world.checkpoints["harmless"]
    body = world.client.get(f"/api/neurons/{MODEL}/scores", params={"checkpoint": ck, "stat": "P"}).json()
    assert body["regime"] == "harmless" and body["checkpoint"] == ck
    np.testing.assert_allclose(np.array(body["scores"]), expected_scores(world.captures["harmless"], "P", ["harmless"]))
    other = world.client.get("/api/neurons/other-model/scores", params={"checkpoint": ck})
    assert other.status_code == 422 and f"is a {MODEL} RM, not other-model" in other.json()["detail"]


# -- overlap against numpy --------------------------------------------------------------------------------
@pytest.mark.parametrize(("p", "stat", "shared"), [(10.0, "A", "intersection"), (5.0, "C", "intersection"),
                                                    (25.0, "P", "per_layer"), (37.5, "A", "per_layer")])
def test_overlap_equals_independent_numpy_computation(world: SimpleNamespace, p: float, stat: str,
                                                      shared: str) -> None:
    r = world.client.get(f"/api/neurons/{MODEL}/overlap", params={"p": p, "stat": stat, "shared": shared})
    assert r.status_code == 200, r.text
    ov = r.json()
    assert "masks" not in ov
    assert ov["checkpoints"] == world.checkpoints
    assert (ov["n_layers"], ov["n_neurons"]) == SHAPE
    assert (ov["p"], ov["stat"], ov["shared_mode"], ov["seed"], ov["hook"]) == (p, stat, shared, 0, "down_proj_input")

    picks = {reg: _top(world, reg, stat, p) for reg in REGIMES}
    H, R, M = (picks[reg].mask for reg in REGIMES)
    for reg in REGIMES:
        got, want = ov["selection"][reg], picks[reg]
        assert (got["requested"], got["selected"], got["tied"]) == (want.requested, want.selected, want.tied)
        assert got["threshold"] == pytest.approx(want.threshold, rel=1e-12)

    shared_mask = H & R
    if shared == "per_layer":  # the study's quirk: a layer with only one of H, R gives all of it to "shared"
        for layer in range(H.shape[0]):
            if H[layer].any() and not R[layer].any():
                shared_mask[layer] = H[layer]
            elif R[layer].any() and not H[layer].any():
                shared_mask[layer] = R[layer]
    parts = {"helpful": H, "harmless": R, "mixed": M, "helpful_specific": H & ~R, "harmless_specific": R & ~H,
             "shared": shared_mask}
    assert ov["sizes"] == {k: int(m.sum()) for k, m in parts.items()}
    assert ov["layer_counts"] == {k: m.sum(axis=1).tolist() for k, m in parts.items()}

    def jac(a: np.ndarray, b: np.ndarray) -> float:
        u = (a | b).sum()
        return float("nan") if u == 0 else (a & b).sum() / u

    assert _nan_eq(ov["jaccard"]["helpful_harmless"], jac(H, R))
    assert _nan_eq(ov["jaccard"]["mixed_helpful"], jac(M, H))
    assert _nan_eq(ov["jaccard"]["mixed_harmless"], jac(M, R))
    u3 = (H | R | M).sum()
    assert _nan_eq(ov["three_way"], float("nan") if u3 == 0 else ((H | R) & M).sum() / u3)

    observed = int((H & R).sum())
    assert ov["significance"]["observed"] == observed
    assert ov["significance"]["expected"] == pytest.approx(H.sum() * R.sum() / N)
    assert ov["significance"]["p_value"] == pytest.approx(hypergeom.sf(observed - 1, N, H.sum(), R.sum()))

    for reg, m in (("helpful", H), ("harmless", R), ("mixed", M)):  # 3 layers: one per third of depth
        total = m.sum()
        fr = ov["layer_fractions"][reg]
        for third, layer in (("early", 0), ("middle", 1), ("late", 2)):
            assert _nan_eq(fr[third], m[layer].sum() / total if total else float("nan"))

    v = ov["venn"]
    assert v == {"H_only": int((H & ~R & ~M).sum()), "R_only": int((R & ~H & ~M).sum()),
                 "M_only": int((M & ~H & ~R).sum()), "HR_only": int((H & R & ~M).sum()),
                 "HM_only": int((H & M & ~R).sum()), "RM_only": int((R & M & ~H).sum()),
                 "HRM": int((H & R & M).sum())}
    assert sum(v.values()) == int((H | R | M).sum())


def test_overlap_at_p_zero_and_hundred(world: SimpleNamespace) -> None:
    zero = world.client.get(f"/api/neurons/{MODEL}/overlap", params={"p": 0}).json()
    assert all(s["selected"] == 0 and s["threshold"] is None for s in zero["selection"].values())
    assert zero["jaccard"]["helpful_harmless"] is None and zero["three_way"] is None  # NaN → null, valid JSON
    assert zero["layer_fractions"]["helpful"] == {"early": None, "middle": None, "late": None}
    full = world.client.get(f"/api/neurons/{MODEL}/overlap", params={"p": 100}).json()
    assert full["sizes"]["shared"] == N and full["jaccard"]["helpful_harmless"] == 1.0


def test_other_seeds_and_hooks_are_separate_views(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    seed3 = add_three_regimes(services, seed=3)
    act = add_three_regimes(services, seed=3, hook="act_output")
    ov = client.get(f"/api/neurons/{MODEL}/overlap", params={"seed": 3, "p": 10, "hook": "act_output"}).json()
    assert ov["hook"] == "act_output" and ov["checkpoints"] == {r: c.checkpoint for r, c in act.items()}
    want = sel.top_percent(expected_scores(act["helpful"], "A", ["helpful"]), 10)
    got = ov["selection"]["helpful"]
    assert (got["requested"], got["selected"], got["tied"]) == (want.requested, want.selected, want.tied)
    down = client.get(f"/api/neurons/{MODEL}/overlap", params={"seed": 3}).json()
    assert down["checkpoints"] == {r: c.checkpoint for r, c in seed3.items()}
    missing = client.get(f"/api/neurons/{MODEL}/overlap", params={"seed": 0})
    assert missing.status_code == 404
    assert "no capture for the harmless, helpful, mixed RM(s)" in missing.json()["detail"]


def test_a_capture_without_the_change_statistic(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    cap = add_capture(services, regime="helpful", with_change=False)
    r = client.get(f"/api/neurons/{MODEL}/scores", params={"checkpoint": cap.checkpoint, "stat": "C"})
    assert r.status_code == 422 and "no change statistic" in r.json()["detail"]


# -- named sets ------------------------------------------------------------------------------------------
class SetLedger:
    """What the server should hold: a new set is stored unless the same neurons are already stored."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.masks: dict[str, np.ndarray] = {}

    def expect(self, r: Any, name: str, want: np.ndarray) -> dict[str, Any] | None:
        same = [n for n, m in self.masks.items() if np.array_equal(m, want)]
        if same:
            assert r.status_code == 409, r.text
            assert repr(same[0]) in r.json()["detail"]
            return None
        assert r.status_code == 201, r.text
        body: dict[str, Any] = r.json()
        assert body["name"] == name and body["shape"] == list(SHAPE) and body["size"] == int(want.sum())
        assert np.array_equal(_mask(body["neurons"], body["shape"]), want), name
        assert self.client.get(f"/api/neuron-sets/{name}").json() == body  # round trip
        self.masks[name] = want
        return body


def test_named_sets_round_trip_and_algebra(world: SimpleNamespace) -> None:
    c = world.client
    ledger = SetLedger(c)
    p, stat = 10.0, "A"
    H, R, M = (_top(world, reg, stat, p).mask for reg in REGIMES)

    # From a top-p formula on one checkpoint: the mixed RM's P score on helpful data only.
    r = c.post("/api/neuron-sets", json={"name": "mixed-on-helpful-P20", "p": 20, "stat": "P",
                                         "scope": "helpful", "checkpoint": world.checkpoints["mixed"]})
    body = ledger.expect(r, "mixed-on-helpful-P20", _top(world, "mixed", "P", 20.0, "helpful").mask)
    assert body is not None and body["base_model"] == MODEL
    assert body["formula"]["kind"] == "top_p" and body["formula"]["scope"] == "helpful"
    assert body["formula"]["checkpoint"] == world.checkpoints["mixed"]

    # From the parts of the overlap.
    want = {"helpful": H, "harmless": R, "mixed": M, "helpful_specific": H & ~R, "harmless_specific": R & ~H,
            "shared": H & R}
    for part, mask in want.items():
        r = c.post("/api/neuron-sets", json={"name": f"ov-{part}", "base_model": MODEL, "part": part, "p": p,
                                             "stat": stat, "seed": 0})
        body = ledger.expect(r, f"ov-{part}", mask)
        if body is not None:
            assert body["formula"]["part"] == part and body["formula"]["checkpoints"] == world.checkpoints
    assert {"ov-helpful", "ov-harmless", "ov-mixed"} <= set(ledger.masks)

    # Set algebra on stored sets.
    r = c.post("/api/neuron-sets/combine", json={"name": "H-or-R", "op": "union",
                                                 "args": ["ov-helpful", "ov-harmless"]})
    body = ledger.expect(r, "H-or-R", H | R)
    assert body is not None and body["formula"] == {"op": "union", "args": ["ov-helpful", "ov-harmless"],
                                                    "shape": list(SHAPE)}
    r = c.post("/api/neuron-sets/combine", json={"name": "M-and-HR", "op": "intersection",
                                                 "args": ["ov-mixed", "H-or-R"]})
    ledger.expect(r, "M-and-HR", M & (H | R))
    r = c.post("/api/neuron-sets/combine", json={"name": "M-minus-HR", "op": "difference",
                                                 "args": ["ov-mixed", "H-or-R"]})
    ledger.expect(r, "M-minus-HR", M & ~(H | R))
    # H minus R is the helpful-specific set again: the same neurons are never stored twice.
    r = c.post("/api/neuron-sets/combine", json={"name": "H-minus-R", "op": "difference",
                                                 "args": ["ov-helpful", "ov-harmless"]})
    assert r.status_code == 409 and "already stored" in r.json()["detail"]

    listed = c.get("/api/neuron-sets").json()
    assert set(ledger.masks) <= {s["name"] for s in listed}
    assert all("neurons" not in s for s in listed)
    assert c.get("/api/neuron-sets", params={"base_model": "other"}).json() == []


# -- 4xx ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("url", "status", "needle"), [
    (f"/api/neurons/{MODEL}/overlap?p=101", 422, "p must be a percentage within [0, 100], got 101"),
    (f"/api/neurons/{MODEL}/overlap?p=-1", 422, "p must be a percentage"),
    (f"/api/neurons/{MODEL}/overlap?p=nan", 422, "p must be a percentage"),
    (f"/api/neurons/{MODEL}/overlap?p=ten", 422, "query.p: Value error, p must be a number, got 'ten'"),
    (f"/api/neurons/{MODEL}/overlap?stat=X", 422, "query.stat: Input should be 'A', 'C' or 'P'"),
    (f"/api/neurons/{MODEL}/overlap?shared=union", 422, "query.shared: Input should be 'intersection' or"),
    (f"/api/neurons/{MODEL}/overlap?hook=mlp", 422, "query.hook: Input should be 'down_proj_input' or"),
    (f"/api/neurons/{MODEL}/overlap?seed=7", 404, "no capture"),
    ("/api/neurons/org/unknown-model/overlap", 404, "no capture"),
    (f"/api/neurons/{MODEL}/scores?regime=both", 422, "query.regime: Input should be 'helpful', 'harmless' or"),
    (f"/api/neurons/{MODEL}/scores?layer=3", 404, "layer 3 out of range"),
    (f"/api/neurons/{MODEL}/scores?scope=everything", 422, "query.scope: Input should be 'own'"),
    ("/api/neurons/unknown/scores?checkpoint=nope", 404, "no neuron capture"),
    ("/api/neuron-sets/no-such-set", 404, "no neuron set named"),
])
def test_api_errors_are_clear(world: SimpleNamespace, url: str, status: int, needle: str) -> None:
    r = world.client.get(url)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


@pytest.mark.parametrize(("path", "body", "status", "needle"), [
    ("/api/neuron-sets", {"name": "x", "base_model": MODEL, "part": "everything"}, 422, "body.part: Input should be"),
    ("/api/neuron-sets", {"name": "x", "base_model": "nope", "part": "shared"}, 404, "no capture"),
    ("/api/neuron-sets", {"name": "x", "checkpoint": "nope"}, 404, "no neuron capture"),
    ("/api/neuron-sets", {"name": "x", "p": 10}, 422, "give either"),
    ("/api/neuron-sets", {"name": "x", "part": "shared"}, 422, "an overlap part needs base_model"),
    ("/api/neuron-sets", {"name": "x", "base_model": MODEL, "part": "shared", "checkpoint": "c"}, 422, "not both"),
    ("/api/neuron-sets", {"name": "x", "base_model": MODEL, "part": "shared", "p": 150}, 422, "p must be"),
    ("/api/neuron-sets", {"name": "   ", "base_model": MODEL, "part": "shared"}, 422, "non-blank name"),
    ("/api/neuron-sets", {"base_model": MODEL, "part": "shared"}, 422, "name"),
    ("/api/neuron-sets/combine", {"name": "x", "op": "xor", "args": ["a"]}, 422, "body.op: Input should be 'union'"),
    ("/api/neuron-sets/combine", {"name": "x", "op": "union", "args": ["a"]}, 404, "no neuron set named 'a'"),
    ("/api/neuron-sets/combine", {"name": "x", "op": "union", "args": []}, 422, "args"),
])
def test_set_errors_are_clear(world: SimpleNamespace, path: str, body: dict[str, Any], status: int,
                              needle: str) -> None:
    r = world.client.post(path, json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_set_name_conflicts_and_bad_operations(world: SimpleNamespace) -> None:
    c = world.client
    base = {"checkpoint": world.checkpoints["helpful"], "stat": "A", "scope": "own"}
    assert c.post("/api/neuron-sets", json={"name": "ops-a", "p": 3, **base}).status_code == 201
    assert c.post("/api/neuron-sets", json={"name": "ops-b", "p": 30, **base}).status_code == 201
    dup = c.post("/api/neuron-sets", json={"name": "ops-a", "p": 12, **base})
    assert dup.status_code == 409 and "already exists" in dup.json()["detail"]
    three = c.post("/api/neuron-sets/combine", json={"name": "ops-c", "op": "difference",
                                                     "args": ["ops-a", "ops-b", "ops-a"]})
    assert three.status_code == 422 and "exactly two" in three.json()["detail"]
    diff = c.post("/api/neuron-sets/combine", json={"name": "ops-c", "op": "difference",
                                                    "args": ["ops-b", "ops-a"]})
    assert diff.status_code == 201
    a, b = (_mask(c.get(f"/api/neuron-sets/{n}").json()["neurons"], list(SHAPE)) for n in ("ops-a", "ops-b"))
    assert np.array_equal(a, _top(world, "helpful", "A", 3).mask)
    assert np.array_equal(_mask(diff.json()["neurons"], list(SHAPE)), b & ~a) and (b & ~a).any()


def test_openapi_describes_every_neuron_response(world: SimpleNamespace) -> None:
    paths = world.client.get("/openapi.json").json()["paths"]
    for path, method in [("/api/neurons/captures", "get"), ("/api/neurons/{base_model}/overlap", "get"),
                         ("/api/neurons/{base_model}/scores", "get"), ("/api/neuron-sets", "post"),
                         ("/api/neuron-sets", "get"), ("/api/neuron-sets/combine", "post"),
                         ("/api/neuron-sets/{name}", "get")]:
        responses = paths[path][method]["responses"]
        ok = responses.get("200") or responses["201"]
        assert ok["content"]["application/json"]["schema"], (path, method)
    assert not any(p.startswith(("/models/", "/neurons", "/ui/neuron-sets")) for p in paths)


# -- pages ----------------------------------------------------------------------------------------------
def _spec(html: str, spec_id: str) -> dict[str, Any]:
    m = re.search(rf'<script type="application/json" id="{spec_id}">(.*?)</script>', html, re.S)
    assert m, spec_id
    return json.loads(m.group(1))  # type: ignore[no-any-return]


def test_index_page_links_the_dashboard_and_lists_sets(world: SimpleNamespace) -> None:
    c = world.client
    assert c.post("/api/neuron-sets", json={"name": "index-set", "base_model": MODEL, "part": "mixed",
                                            "p": 33}).status_code == 201
    html = c.get("/neurons").text
    assert f'href="/models/{MODEL}/dashboard?seed=0&amp;hook=down_proj_input"' in html
    assert f'href="/models/{MODEL}/neurons/0/0"' in html
    for ck in world.checkpoints.values():
        assert ck[:12] in html
    assert 'href="/api/neuron-sets/index-set"' in html


def test_index_page_names_missing_regimes(client: TestClient) -> None:
    add_capture(client.app.state.services, regime="helpful", seed=4)  # type: ignore[attr-defined]
    html = client.get("/neurons").text
    assert "seed 4 · down_proj_input: missing harmless, mixed RM capture" in html
    assert "dashboard-link" not in html


def test_dashboard_page_embeds_the_overlap_numbers(world: SimpleNamespace) -> None:
    c = world.client
    q = {"p": "10", "stat": "A", "seed": "0", "shared": "intersection"}
    r = c.get(f"/models/{MODEL}/dashboard", params=q)
    assert r.status_code == 200, r.text
    html = r.text
    ov = c.get(f"/api/neurons/{MODEL}/overlap", params=q).json()
    for pid in ("plot-venn", "plot-layers", "plot-scatter"):
        assert f'id="{pid}"' in html
    venn = _spec(html, "plot-venn-spec")
    regions = ("H_only", "R_only", "M_only", "HR_only", "HM_only", "RM_only", "HRM")
    assert venn["data"][0]["y"] == [ov["venn"][k] for k in regions]
    layers = _spec(html, "plot-layers-spec")
    rows = ("helpful", "harmless", "mixed", "helpful_specific", "harmless_specific", "shared")
    assert layers["data"][0]["z"] == [ov["layer_counts"][k] for k in rows]
    scatter = _spec(html, "plot-scatter-spec")
    points = [tuple(cd) for t in scatter["data"] for cd in t["customdata"]]
    assert sorted(points) == [(layer, i) for layer in range(SHAPE[0]) for i in range(SHAPE[1])]  # every neuron once
    xs = {tuple(cd): x for t in scatter["data"] for cd, x in zip(t["customdata"], t["x"], strict=True)}
    ys = {tuple(cd): y for t in scatter["data"] for cd, y in zip(t["customdata"], t["y"], strict=True)}
    h_scores = expected_scores(world.captures["helpful"], "A", ["helpful"])  # default axes: helpful RM's own score
    r_scores = expected_scores(world.captures["harmless"], "A", ["harmless"])
    assert xs[(1, 5)] == pytest.approx(h_scores[1, 5], rel=1e-5)
    assert ys[(2, 7)] == pytest.approx(r_scores[2, 7], rel=1e-5)
    shared = next(t for t in scatter["data"] if t["name"] == "shared (H ∩ R)")
    assert len(shared["x"]) == ov["sizes"]["shared"]
    lines = scatter["layout"]["shapes"]
    assert lines[0]["x0"] == pytest.approx(ov["selection"]["helpful"]["threshold"])
    assert "helpful RM" in html and "harmless RM" in html  # the page says which scores are plotted
    jac = ov["jaccard"]["helpful_harmless"]
    assert re.search(r'id="jaccard-hr">\s*' + (re.escape(f"{jac:.3f}") if jac is not None else "<span"), html)
    assert f'id="sig-observed">{ov["significance"]["observed"]}<' in html
    sel_h = ov["selection"]["helpful"]
    assert f'<td class="num">{sel_h["requested"]}</td><td class="num">{sel_h["selected"]}</td>' in html
    part = re.search(r'<div data-part="shared"><h4>shared \((\d+)\)</h4>', html)
    assert part and int(part.group(1)) == ov["sizes"]["shared"]
    # The view lives in the URL: the permalink and the form reproduce it.
    assert (f'id="permalink" href="/models/{MODEL}/dashboard?p=10&amp;stat=A&amp;seed=0&amp;shared=intersection'
            '&amp;hook=down_proj_input&amp;scatter=single"') in html
    mixed = c.get(f"/models/{MODEL}/dashboard", params={**q, "scatter": "mixed", "stat": "P"})
    assert mixed.status_code == 200 and "mixed RM: S (P) on helpful data" in mixed.text
    m_x = expected_scores(world.captures["mixed"], "P", ["helpful"])
    mx = {tuple(cd): x for t in _spec(mixed.text, "plot-scatter-spec")["data"]
          for cd, x in zip(t["customdata"], t["x"], strict=True)}
    assert mx[(0, 3)] == pytest.approx(m_x[0, 3], rel=1e-5)


def test_save_set_form_stores_the_part(world: SimpleNamespace) -> None:
    c = world.client
    r = c.post("/ui/neuron-sets", data={"name": "from-form", "base_model": MODEL, "part": "harmless_specific",
                                        "p": "25", "stat": "A", "seed": "0"}, headers={"hx-request": "true"})
    assert r.status_code == 200 and "Saved <b>from-form</b>" in r.text
    H, R = (_top(world, reg, "A", 25.0).mask for reg in ("helpful", "harmless"))
    assert f"{int((R & ~H).sum())} neurons" in r.text
    stored = c.get("/api/neuron-sets/from-form").json()
    assert np.array_equal(_mask(stored["neurons"], stored["shape"]), R & ~H)
    bad = c.post("/ui/neuron-sets", data={"name": "x", "base_model": MODEL, "part": "nope"},
                 headers={"hx-request": "true"})
    assert bad.status_code == 422 and bad.text.startswith('<div class="error"') and "part" in bad.text


def test_dashboard_and_neuron_page_errors_are_pages(world: SimpleNamespace) -> None:
    c = world.client
    for url, status, needle in [(f"/models/{MODEL}/dashboard?p=200", 422, "p must be a percentage"),
                                (f"/models/{MODEL}/dashboard?p=lots", 422, "p must be a number"),
                                (f"/models/{MODEL}/dashboard?stat=Q", 422, "stat: Input should be"),
                                (f"/models/{MODEL}/dashboard?scatter=3d", 422, "scatter: Input should be"),
                                ("/models/org/nothing/dashboard", 404, "no capture"),
                                (f"/models/{MODEL}/neurons/3/0", 404, "layer 3 out of range"),
                                (f"/models/{MODEL}/neurons/1/16", 404, "neuron 16 out of range"),
                                (f"/models/{MODEL}/neurons/0/0?hook=act_output", 404,
                                 "(captured hooks: down_proj_input)"),
                                ("/models/org/nothing/neurons/0/0", 404, "no neuron capture")]:
        r = c.get(url)
        assert r.status_code == status, (url, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        assert needle in r.text, url
    kept = c.get(f"/models/{MODEL}/dashboard?p=200&stat=C")  # the form keeps the view that failed
    assert 'value="200"' in kept.text and '<option value="C" selected>' in kept.text


def test_neuron_page_shows_stats_ranks_and_escaped_examples(world: SimpleNamespace) -> None:
    c = world.client
    layer, index = EXAMPLE_NEURON
    r = c.get(f"/models/{MODEL}/neurons/{layer}/{index}")
    assert r.status_code == 200, r.text
    html = r.text
    spec = _spec(html, "plot-neuron-stats-spec")
    assert [t["name"] for t in spec["data"]] == ["chosen", "rejected"]
    rows = [row for cap in world.captures.values() for row in cap.rows
            if (row["layer"], row["neuron"]) == EXAMPLE_NEURON]
    assert len(rows) == 12  # 3 RMs × 2 objectives × 2 sides
    got = {(x, t["name"]): y for t in spec["data"] for x, y in zip(t["x"], t["y"], strict=True)}
    for row in rows:
        assert got[(f"{row['regime']} RM · {row['objective']} data", row["side"])] == pytest.approx(row["mean"])
    table = re.search(r'<table id="neuron-stats">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert table and table.group(1).count("<tr>") == 12
    assert re.findall(r"<tr><td>(\w+)</td>", table.group(1))[::4] == ["helpful", "harmless", "mixed"]
    ranks = re.search(r'<table id="neuron-ranks">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert ranks
    for regime in REGIMES:
        s = expected_scores(world.captures[regime], "A", OWN[regime])
        pct = (s < s[EXAMPLE_NEURON]).sum() / s.size * 100
        assert f"{pct:.1f}" in ranks.group(1)
    examples = [e for cap in world.captures.values() for e in cap.examples]
    assert examples and "<script>window" not in html.split('id="examples"')[1]
    for e in examples:
        assert f"{escape(e['text_before'])}<mark>{escape(e['token'])}</mark>{escape(e['text_after'])}" in html
    assert html.count('class="example-group"') == 12
    nav = c.get(f"/models/{MODEL}/neurons/1/0", params={"stat": "P"}).text
    assert f'href="/models/{MODEL}/neurons/0/15?stat=P"' in nav and f'href="/models/{MODEL}/neurons/1/1?stat=P"' in nav


def test_read_only_share_of_the_dashboard_hides_changes(world: SimpleNamespace) -> None:
    c = world.client
    target = f"/models/{MODEL}/dashboard?p=10&stat=A"
    token = c.post("/api/shares", json={"target": target}).json()["token"]
    page = c.get(target, params={"share": token})
    assert page.status_code == 200 and 'id="read-only-badge"' in page.text
    assert "save-set" not in page.text and f'name="share" value="{token}"' in page.text
    refused = c.post("/api/neuron-sets", params={"share": token},
                     json={"name": "via-share", "base_model": MODEL, "part": "shared"})
    assert refused.status_code == 403


def test_the_hook_menu_offers_only_captured_hooks(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    add_three_regimes(services)  # down_proj_input only
    html = client.get(f"/models/{MODEL}/dashboard").text
    menu = re.search(r'<select name="hook">(.*?)</select>', html, re.S)
    assert menu and re.findall(r"<option[^>]*>([^<]+)</option>", menu.group(1)) == ["down_proj_input"]
    assert re.search(r'id="uncaptured-hooks"[^>]*>no capture yet at: act_output', html)
    add_three_regimes(services, hook="act_output")
    html = client.get(f"/models/{MODEL}/dashboard").text
    menu = re.search(r'<select name="hook">(.*?)</select>', html, re.S)
    assert menu and len(re.findall(r"<option", menu.group(1))) == 2 and 'id="uncaptured-hooks"' not in html
