"""Neuron API and pages on REAL data: tiny-bert RMs trained in three regimes, each captured by a real job.

The overlap numbers the API serves (selected in DuckDB SQL) are checked against an independent numpy
computation (workers.neurons.selection.top_percent on the scores read back, plain numpy set arithmetic,
scipy's hypergeometric test); the scores themselves against a numpy recomputation from the raw rows.
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
from scipy.stats import hypergeom

from app.main import create_app
from tests.app.neurons.pipeline import REGIMES, train_and_capture
from tests.conftest import make_settings
from workers.neurons import selection as sel

pytestmark = pytest.mark.slow  # real training and capture jobs (a few minutes)

MODEL = "tiny-bert"
STAT_COLUMN = {"A": "mean", "C": "mean_sq_change", "P": "frac_pos"}
OWN = {"helpful": ["helpful"], "harmless": ["harmless"], "mixed": ["helpful", "harmless"]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("neurons"))
    with TestClient(create_app(settings)) as client:
        checkpoints = train_and_capture(client)
        yield SimpleNamespace(client=client, checkpoints=checkpoints, store=client.app.state.services.store)  # type: ignore[attr-defined]


def _scores(world: SimpleNamespace, regime: str, stat: str = "A", scope: str = "own") -> np.ndarray:
    q = {"regime": regime, "stat": stat, "scope": scope}
    r = world.client.get(f"/api/neurons/{MODEL}/scores", params=q)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["checkpoint"] == world.checkpoints[regime]
    return np.array(body["scores"], dtype=np.float64)


def _numpy_scores(world: SimpleNamespace, regime: str, stat: str, objectives: list[str]) -> np.ndarray:
    """S from the raw neuron_stats rows: token-weighted mean per side over the objectives, then the mean."""
    rows = world.store.query(
        f"SELECT layer, neuron, side, objective, n_tokens, {STAT_COLUMN[stat]} AS x FROM neuron_stats"
        " WHERE checkpoint = ? AND hook = 'down_proj_input'", [world.checkpoints[regime]])
    n_layers = max(r["layer"] for r in rows) + 1
    n_neurons = max(r["neuron"] for r in rows) + 1
    num = {s: np.zeros((n_layers, n_neurons)) for s in ("chosen", "rejected")}
    den = {s: np.zeros((n_layers, n_neurons)) for s in ("chosen", "rejected")}
    for r in rows:
        if r["objective"] in objectives:
            num[r["side"]][r["layer"], r["neuron"]] += r["n_tokens"] * r["x"]
            den[r["side"]][r["layer"], r["neuron"]] += r["n_tokens"]
    return sel.combined_score(num["chosen"] / den["chosen"], num["rejected"] / den["rejected"])


def _mask(neurons: dict[str, list[int]], shape: list[int]) -> np.ndarray:
    return sel.dict_to_mask(neurons, shape)


def _nan_eq(a: float | None, b: float) -> bool:
    return (a is None and math.isnan(b)) or (a is not None and a == pytest.approx(b, rel=1e-12, abs=1e-15))


# -- captures and scores --------------------------------------------------------------------------------
def test_captures_list_the_three_trained_rms(world: SimpleNamespace) -> None:
    rows = world.client.get("/api/neurons/captures").json()
    assert {r["regime"]: r["checkpoint"] for r in rows} == world.checkpoints
    for r in rows:
        assert r["base_model"] == MODEL and r["hook"] == "down_proj_input" and r["seed"] == 0
        assert (r["n_layers"], r["n_neurons"]) == (2, 128)  # tiny-bert: 2 layers × 128 MLP neurons
        assert world.store.is_ingested(r["result_key"])
    assert world.client.get("/api/neurons/captures", params={"base_model": "nope"}).json() == []


@pytest.mark.parametrize("stat", ["A", "C", "P"])
def test_scores_equal_a_numpy_recomputation_from_raw_rows(world: SimpleNamespace, stat: str) -> None:
    for regime in REGIMES:
        api = _scores(world, regime, stat)
        assert api.shape == (2, 128) and np.isfinite(api).all()
        want = _numpy_scores(world, regime, stat, OWN[regime])
        np.testing.assert_allclose(api, want, rtol=1e-10, atol=1e-12)
    for scope in ("helpful", "harmless"):
        np.testing.assert_allclose(_scores(world, "mixed", stat, scope),
                                   _numpy_scores(world, "mixed", stat, [scope]), rtol=1e-10, atol=1e-12)
    q = {"regime": "mixed", "stat": stat, "layer": 1}
    one = world.client.get(f"/api/neurons/{MODEL}/scores", params=q)
    assert one.json()["scores"] == pytest.approx(_scores(world, "mixed", stat)[1].tolist())


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
    assert (ov["n_layers"], ov["n_neurons"]) == (2, 128)

    picks = {reg: sel.top_percent(_scores(world, reg, stat), p) for reg in REGIMES}
    H, R, M = (picks[reg].mask for reg in REGIMES)
    for reg in REGIMES:
        got, want = ov["selection"][reg], picks[reg]
        assert (got["requested"], got["selected"], got["tied"]) == (want.requested, want.selected, want.tied)
        assert got["threshold"] == pytest.approx(want.threshold, rel=1e-12)

    h_spec, r_spec = H & ~R, R & ~H
    shared_mask = H & R
    if shared == "per_layer":  # the study's quirk: a layer with only one of H, R gives all of it to "shared"
        for layer in range(H.shape[0]):
            if H[layer].any() and not R[layer].any():
                shared_mask[layer] = H[layer]
            elif R[layer].any() and not H[layer].any():
                shared_mask[layer] = R[layer]
    parts = {"helpful": H, "harmless": R, "mixed": M, "helpful_specific": h_spec, "harmless_specific": r_spec,
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

    n, observed = H.size, int((H & R).sum())
    assert ov["significance"]["observed"] == observed
    assert ov["significance"]["expected"] == pytest.approx(H.sum() * R.sum() / n)
    assert ov["significance"]["p_value"] == pytest.approx(hypergeom.sf(observed - 1, n, H.sum(), R.sum()))

    for reg, m in (("helpful", H), ("harmless", R), ("mixed", M)):  # 2 layers: layer 0 early, layer 1 middle
        total = m.sum()
        fr = ov["layer_fractions"][reg]
        assert _nan_eq(fr["early"], m[0].sum() / total if total else float("nan"))
        assert _nan_eq(fr["middle"], m[1].sum() / total if total else float("nan"))
        assert _nan_eq(fr["late"], 0.0 if total else float("nan"))

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
    full = world.client.get(f"/api/neurons/{MODEL}/overlap", params={"p": 100}).json()
    assert full["sizes"]["shared"] == 256 and full["jaccard"]["helpful_harmless"] == 1.0


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
        assert body["name"] == name and body["shape"] == [2, 128] and body["size"] == int(want.sum())
        assert np.array_equal(_mask(body["neurons"], body["shape"]), want), name
        assert self.client.get(f"/api/neuron-sets/{name}").json() == body  # round trip
        self.masks[name] = want
        return body


def test_named_sets_round_trip_and_algebra(world: SimpleNamespace) -> None:
    c = world.client
    ledger = SetLedger(c)
    p, stat = 10.0, "A"
    H, R, M = (sel.top_percent(_scores(world, reg, stat), p).mask for reg in REGIMES)

    # From a top-p formula on one checkpoint: the mixed RM's P score on helpful data only.
    Mh = sel.top_percent(_scores(world, "mixed", "P", "helpful"), 20.0).mask
    r = c.post("/api/neuron-sets", json={"name": "mixed-on-helpful-P20", "p": 20, "stat": "P",
                                         "scope": "helpful", "checkpoint": world.checkpoints["mixed"]})
    body = ledger.expect(r, "mixed-on-helpful-P20", Mh)
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
                                                    "shape": [2, 128]}
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
    (f"/api/neurons/{MODEL}/overlap?p=101", 422, "p must be"),
    (f"/api/neurons/{MODEL}/overlap?p=-1", 422, "p must be"),
    (f"/api/neurons/{MODEL}/overlap?p=nan", 422, "p must be"),
    (f"/api/neurons/{MODEL}/overlap?p=ten", 422, "query.p"),
    (f"/api/neurons/{MODEL}/overlap?stat=X", 422, "unknown statistic"),
    (f"/api/neurons/{MODEL}/overlap?shared=union", 422, "unknown shared mode"),
    (f"/api/neurons/{MODEL}/overlap?hook=mlp", 422, "unknown hook"),
    (f"/api/neurons/{MODEL}/overlap?seed=7", 404, "no capture"),
    ("/api/neurons/org/unknown-model/overlap", 404, "no capture"),
    (f"/api/neurons/{MODEL}/scores?regime=both", 422, "unknown regime"),
    (f"/api/neurons/{MODEL}/scores?layer=2", 404, "layer 2 out of range"),
    (f"/api/neurons/{MODEL}/scores?scope=everything", 422, "unknown scope"),
    ("/api/neurons/unknown/scores?checkpoint=nope", 404, "no neuron capture"),
    ("/api/neuron-sets/no-such-set", 404, "no neuron set named"),
])
def test_api_errors_are_clear(world: SimpleNamespace, url: str, status: int, needle: str) -> None:
    r = world.client.get(url)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


@pytest.mark.parametrize(("path", "body", "status", "needle"), [
    ("/api/neuron-sets", {"name": "x", "base_model": MODEL, "part": "everything"}, 422, "unknown part"),
    ("/api/neuron-sets", {"name": "x", "base_model": "nope", "part": "shared"}, 404, "no capture"),
    ("/api/neuron-sets", {"name": "x", "checkpoint": "nope"}, 404, "no neuron capture"),
    ("/api/neuron-sets", {"name": "x", "p": 10}, 422, "give either"),
    ("/api/neuron-sets", {"name": "x", "base_model": MODEL, "part": "shared", "p": 150}, 422, "p must be"),
    ("/api/neuron-sets", {"name": "   ", "base_model": MODEL, "part": "shared"}, 422, "non-blank name"),
    ("/api/neuron-sets", {"base_model": MODEL, "part": "shared"}, 422, "name"),
    ("/api/neuron-sets/combine", {"name": "x", "op": "xor", "args": ["a"]}, 404, "no neuron set named"),
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
    assert c.post("/api/neuron-sets", json={"name": "ops-b", "p": 6, **base}).status_code == 201
    dup = c.post("/api/neuron-sets", json={"name": "ops-a", "p": 12, **base})
    assert dup.status_code == 409 and "already exists" in dup.json()["detail"]
    bad = c.post("/api/neuron-sets/combine", json={"name": "ops-c", "op": "xor", "args": ["ops-a", "ops-b"]})
    assert bad.status_code == 422 and "unknown set operation" in bad.json()["detail"]
    three = c.post("/api/neuron-sets/combine", json={"name": "ops-c", "op": "difference",
                                                     "args": ["ops-a", "ops-b", "ops-a"]})
    assert three.status_code == 422 and "exactly two" in three.json()["detail"]
    diff = c.post("/api/neuron-sets/combine", json={"name": "ops-c", "op": "difference",
                                                    "args": ["ops-b", "ops-a"]})
    assert diff.status_code == 201
    a, b = (_mask(c.get(f"/api/neuron-sets/{n}").json()["neurons"], [2, 128]) for n in ("ops-a", "ops-b"))
    assert np.array_equal(_mask(diff.json()["neurons"], [2, 128]), b & ~a)


# -- pages ----------------------------------------------------------------------------------------------
def _spec(html: str, spec_id: str) -> dict[str, Any]:
    m = re.search(rf'<script type="application/json" id="{spec_id}">(.*?)</script>', html, re.S)
    assert m, spec_id
    return json.loads(m.group(1))  # type: ignore[no-any-return]


def test_index_page_links_the_dashboard(world: SimpleNamespace) -> None:
    html = world.client.get("/neurons").text
    assert f'href="/models/{MODEL}/dashboard?seed=0&amp;hook=down_proj_input"' in html
    for ck in world.checkpoints.values():
        assert ck[:12] in html


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
    assert sorted(points) == [(layer, i) for layer in range(2) for i in range(128)]  # every neuron once
    xs = {tuple(cd): x for t in scatter["data"] for cd, x in zip(t["customdata"], t["x"], strict=True)}
    h_scores = _scores(world, "helpful", "A")  # default axes: the helpful RM's own score on x
    assert xs[(1, 5)] == pytest.approx(h_scores[1, 5], rel=1e-5)
    assert "helpful RM" in html and "harmless RM" in html  # the page says which scores are plotted
    jac = ov["jaccard"]["helpful_harmless"]
    assert re.search(r'id="jaccard-hr">\s*' + (re.escape(f"{jac:.3f}") if jac is not None else "<span"), html)
    assert f'id="sig-observed">{ov["significance"]["observed"]}<' in html
    sel_h = ov["selection"]["helpful"]
    assert f'<td class="num">{sel_h["requested"]}</td><td class="num">{sel_h["selected"]}</td>' in html
    # The view lives in the URL: the permalink and the form reproduce it.
    assert 'id="permalink" href="/models/tiny-bert/dashboard?p=10&amp;stat=A&amp;seed=0' in html
    mixed = c.get(f"/models/{MODEL}/dashboard", params={**q, "scatter": "mixed", "stat": "P"})
    assert mixed.status_code == 200 and "mixed RM: S (P) on helpful data" in mixed.text


def test_dashboard_and_neuron_page_errors_are_pages(world: SimpleNamespace) -> None:
    c = world.client
    for url, status, needle in [(f"/models/{MODEL}/dashboard?p=200", 422, "p must be"),
                                (f"/models/{MODEL}/dashboard?p=lots", 422, "p must be a number"),
                                ("/models/org/nothing/dashboard", 404, "no capture"),
                                (f"/models/{MODEL}/neurons/2/0", 404, "layer 2 out of range"),
                                (f"/models/{MODEL}/neurons/1/128", 404, "neuron 128 out of range"),
                                ("/models/org/nothing/neurons/0/0", 404, "no neuron capture")]:
        r = c.get(url)
        assert r.status_code == status, (url, r.text[:300])
        assert r.headers["content-type"].startswith("text/html")
        assert needle in r.text, url


def test_neuron_page_shows_stats_per_rm_and_escaped_examples(world: SimpleNamespace) -> None:
    c = world.client
    r = c.get(f"/models/{MODEL}/neurons/1/5")
    assert r.status_code == 200, r.text
    html = r.text
    spec = _spec(html, "plot-neuron-stats-spec")
    assert [t["name"] for t in spec["data"]] == ["chosen", "rejected"]
    rows = world.store.query("SELECT regime, objective, side, mean FROM neuron_stats WHERE layer = 1"
                             " AND neuron = 5 AND base_model = ?", [MODEL])
    assert len(rows) == 12  # 3 RMs × 2 objectives × 2 sides
    got = {(x, t["name"]): y for t in spec["data"] for x, y in zip(t["x"], t["y"], strict=True)}
    for row in rows:
        label = f"{row['regime']} RM · {row['objective']} data"
        assert got[(label, row["side"])] == pytest.approx(row["mean"])
    table = re.search(r'<table id="neuron-stats">.*?<tbody>(.*?)</tbody>', html, re.S)
    assert table and table.group(1).count("<tr>") == 12
    examples = world.store.query("SELECT text_before, token, text_after FROM neuron_examples WHERE layer = 1"
                                 " AND neuron = 5")
    assert examples, "the capture stored no examples"
    from markupsafe import escape

    for e in examples:
        assert f"{escape(e['text_before'])}<mark>{escape(e['token'])}</mark>{escape(e['text_after'])}" in html


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
