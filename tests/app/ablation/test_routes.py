"""Ablation pages, live-toggle partials and the JSON API on seeded data (no model is trained).

Captures and experiment results are ingested through the real ingest path (`tests/factories/ablation.py`);
live toggles go to a fake live pool whose worker answers from a closed formula, so what is checked is
the route's work: which neurons it resolved, what it checked, what the pages show. Every number a page
shows is checked against the stored rows or the JSON API. One slow test at the end runs it all for real.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator
from html import unescape
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.main import create_app
from tests.conftest import make_settings, wait_job
from tests.factories.ablation import (
    MODEL,
    N_LAYERS,
    N_NEURONS,
    FakeLivePool,
    ablation_result,
    answer_for,
    capture_stats,
    captured_rms,
)
from tests.factories.http import app_client
from workers.contract.vocab import Experiment, Regime

PROBE = 8  # live-toggle probe pairs per objective
EXPERIMENTS = {"A": (Regime.helpful, [0.0, 10.0, 50.0]), "B": (Regime.harmless, [10.0]),
               "C": (Regime.mixed, [10.0, 20.0])}
SINGLE_SET = {"0": [1, 3], "1": [5]}
QUEUED_SET = {"0": [3, 9], "1": [5]}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("ablation"))
    with app_client(create_app(settings, start_supervisor=False)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        pool = client.app.state.live_pool = FakeLivePool()  # type: ignore[attr-defined]
        checkpoints = {str(r): ck for r, ck in captured_rms(services).items()}
        results = {}
        for exp, (regime, percents) in EXPERIMENTS.items():
            results[exp] = ablation_result(services, checkpoint=checkpoints[regime], regime=regime,
                                           experiment=Experiment(exp), percents=percents)
        results["single"] = ablation_result(services, checkpoint=checkpoints["mixed"], regime=Regime.mixed,
                                            experiment=Experiment.single, neuron_set=SINGLE_SET)
        jobs = {exp: {"result_key": key, "params": params} for exp, (key, params) in results.items()}
        yield SimpleNamespace(client=client, checkpoints=checkpoints, jobs=jobs, pool=pool, store=services.store,
                              services=services)


# -- HTML helpers ---------------------------------------------------------------------------------------
CELL = re.compile(r'<td class="num" data-col="([^"]+)" data-value="([^"]*)"[^>]*>(.*?)</td>', re.S)


def _table(html: str, table_id: str) -> list[dict[str, Any]]:
    """Rows of one table: the row's data-* attributes plus {col: (data-value, text)} of its number cells."""
    m = re.search(rf'<table id="{table_id}">(.*?)</table>', html, re.S)
    assert m, f"no table #{table_id}"
    body = m.group(1).split("<tbody>", 1)[1]
    out = []
    for attrs, inner in re.findall(r"<tr([^>]*)>(.*?)</tr>", body, re.S):
        row: dict[str, Any] = {k: unescape(v) for k, v in re.findall(r'data-([\w-]+)="([^"]*)"', attrs)}
        row["cells"] = {c: (v, re.sub(r"<[^>]+>", "", t).strip()) for c, v, t in CELL.findall(inner)}
        row["ci"] = [re.sub(r"<[^>]+>", "", t).strip() for t in
                     re.findall(r'<td class="num" data-col="ci"[^>]*>(.*?)</td>', inner, re.S)]
        out.append(row)
    return out


def _spec(html: str, spec_id: str) -> dict[str, Any]:
    m = re.search(rf'<script type="application/json" id="{spec_id}">(.*?)</script>', html, re.S)
    assert m, f"no figure spec #{spec_id}"
    return json.loads(m.group(1))  # type: ignore[no-any-return]


def _value(cell: tuple[str, str]) -> float | None:
    return None if cell[0] == "" else float(cell[0])


def _pp(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f}"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}"


def _ci(r: dict[str, Any]) -> str:
    return f"[{100 * r['ci_lo']:+.1f}, {100 * r['ci_hi']:+.1f}]"


def _rows(world: SimpleNamespace, key: str) -> list[dict[str, Any]]:
    return world.store.query("SELECT * FROM ablation_results WHERE result_key = ?", [key])  # type: ignore[no-any-return]


def _page(world: SimpleNamespace, exp: str) -> tuple[str, list[dict[str, Any]]]:
    key = world.jobs[exp]["result_key"]
    r = world.client.get(f"/ablations/{key}")
    assert r.status_code == 200, r.text
    return r.text, _rows(world, key)


def _scores(regime: Regime, ck: str) -> np.ndarray:
    """S of METHOD.md §3 from the seeded rows: per side the token-weighted mean over the RM's own objectives
    (equal token counts: a plain mean), then the mean of the two sides."""
    own = {Regime.helpful: ["helpful"], Regime.harmless: ["harmless"], Regime.mixed: ["helpful", "harmless"]}[regime]
    per_side: dict[str, list[np.ndarray]] = {}
    for r in capture_stats(ck, regime):
        if r["objective"] in own:
            per_side.setdefault(r["side"], [np.zeros((N_LAYERS, N_NEURONS)) for _ in own])
            per_side[r["side"]][own.index(r["objective"])][r["layer"], r["neuron"]] = r["mean"]
    return np.mean([np.mean(v, axis=0) for v in per_side.values()], axis=0)  # type: ignore[no-any-return]


def _top(world: SimpleNamespace, regime: Regime, p: float) -> set[tuple[int, int]]:
    s = _scores(regime, world.checkpoints[regime])
    theta = np.percentile(s.ravel(), 100 - p)
    return {(int(a), int(b)) for a, b in zip(*np.nonzero(s >= theta), strict=True)}


def _as_pairs(neurons: dict[str, list[int]]) -> set[tuple[int, int]]:
    return {(int(k), i) for k, v in neurons.items() for i in v}


# -- result pages ---------------------------------------------------------------------------------------
def test_index_lists_every_result_under_its_rm(world: SimpleNamespace) -> None:
    html = world.client.get("/ablations").text
    for exp, job in world.jobs.items():
        ck = job["params"]["checkpoint"]
        group = re.search(rf'<div class="card ablation-group" data-checkpoint="{ck}">(.*?)</table>', html, re.S)
        assert group, f"no group for {ck}"
        assert f'data-result-key="{job["result_key"]}" data-experiment="{exp}"' in group.group(1)
        assert f'href="/ablations/{job["result_key"]}"' in group.group(1)
    mixed = world.checkpoints["mixed"]
    only = world.client.get("/ablations", params={"checkpoint": mixed}).text
    assert world.jobs["C"]["result_key"] in only and world.jobs["A"]["result_key"] not in only
    api = world.client.get("/api/ablations").json()
    assert {r["result_key"] for r in api} == {j["result_key"] for j in world.jobs.values()}
    for r in api:
        assert r["n_rows"] == len(_rows(world, r["result_key"]))
    assert {r["result_key"] for r in world.client.get("/api/ablations", params={"checkpoint": mixed}).json()} == \
        {world.jobs["C"]["result_key"], world.jobs["single"]["result_key"]}


def test_result_api_returns_the_stored_rows(world: SimpleNamespace) -> None:
    key = world.jobs["B"]["result_key"]
    body = world.client.get(f"/api/ablations/{key}").json()
    stored = sorted(_rows(world, key), key=lambda r: r["grp"])
    assert sorted(body["rows"], key=lambda r: r["grp"]) == stored
    assert len(body["flips"]) == len(world.store.query("SELECT * FROM ablation_flips WHERE result_key = ?", [key]))
    r = world.client.get("/api/ablations/0000deadbeef")
    assert r.status_code == 404 and "no ablation result with key '0000deadbeef'" in r.json()["detail"]


def test_dose_response_page_equals_stored_rows(world: SimpleNamespace) -> None:
    html, rows = _page(world, "A")
    alls = [r for r in rows if r["grp"] == "all"]
    scored = {(r["condition"], r["p"]): r for r in alls if r["condition"] != "random"}
    assert {c for c, _ in scored} == {"magnitude", "change"}
    table = _table(html, "dose-table")
    assert len(table) == len(scored) == 2 * 3
    for tr in table:
        r = scored[(tr["condition"], float(tr["p"]))]
        c = tr["cells"]
        assert int(c["n_neurons"][0]) == r["n_neurons"]
        for col in ("acc0", "acc", "delta", "random_delta_mean", "excess"):
            assert _value(c[col]) == r[col], col
        assert c["acc"][1] == _pct(r["acc"]) and c["delta"][1] == _pp(r["delta"])
        assert tr["ci"] == [_ci(r)]
        assert c["random_delta_mean"][1] == f"{_pp(r['random_delta_mean'])} ± {_pct(r['random_delta_std'])}"

    # Random selection: one row per (p, seed) stored; the band is their mean ± std (ddof=1) over seeds.
    rnd = [r for r in alls if r["condition"] == "random"]
    assert len(_table(html, "random-table")) == len(rnd) == 3 * 2
    band = {float(tr["p"]): tr for tr in _table(html, "random-band")}
    assert sorted(band) == [0.0, 10.0, 50.0]
    spec = _spec(html, "plot-dose-spec")
    traces = {t["name"]: t for t in spec["data"]}
    mean_trace = traces["random (mean of 2 seeds)"]
    upper = traces["random + std"]
    lower = traces["random ± std over seeds"]
    assert lower["fill"] == "tonexty"
    for i, p in enumerate(sorted(band)):
        accs = [r["acc"] for r in rnd if r["p"] == p]
        mean, std = float(np.mean(accs)), float(np.std(accs, ddof=1))
        assert std > 0
        assert _value(band[p]["cells"]["mean"]) == pytest.approx(mean, abs=1e-15)
        assert mean_trace["x"][i] == p and mean_trace["y"][i] == pytest.approx(100 * mean, abs=1e-12)
        assert upper["y"][i] == pytest.approx(100 * (mean + std), abs=1e-12)
        assert lower["y"][i] == pytest.approx(100 * (mean - std), abs=1e-12)
    for method in {c for c, _ in scored}:
        line = traces[f"{method}-based"]
        mine = sorted((r for r in alls if r["condition"] == method), key=lambda r: r["p"])
        assert line["x"] == [r["p"] for r in mine]
        assert line["y"] == pytest.approx([100 * r["acc"] for r in mine], abs=1e-12)
        assert line["error_y"]["array"] == pytest.approx([100 * (r["ci_hi"] - r["delta"]) for r in mine])
        dashed = traces[f"layer-matched random of {method}"]
        assert dashed["line"]["dash"] == "dash"
        assert dashed["y"] == pytest.approx([100 * (r["acc0"] + r["random_delta_mean"]) for r in mine])
    assert "Experiment A records accuracies only" in html


def test_subset_page_splits_helpful_and_harmless_type_tables(world: SimpleNamespace) -> None:
    html, rows = _page(world, "B")
    by_grp = {r["grp"]: r for r in rows}
    for kind in ("helpful", "harmless"):
        table = _table(html, f"b-{kind}")
        want = {r["grp"] for r in rows if r["grp"].startswith("subset:") and r["group_type"] == kind}
        assert want and {tr["grp"] for tr in table} == want
        for tr in table:
            r = by_grp[tr["grp"]]
            for col in ("acc0", "acc", "delta", "random_delta_mean", "excess"):
                assert _value(tr["cells"][col]) == r[col], col
            assert int(tr["cells"]["n_items"][0]) == r["n_items"]
            assert int(tr["cells"]["n_flipped"][0]) == r["n_flipped"]
            assert tr["ci"][0] == _ci(r)
    overall = {tr["grp"] for tr in _table(html, "b-overall")}
    assert overall == {"all", "objective:helpful", "objective:harmless"}
    spec = _spec(html, "plot-subsets-spec")
    subs = [r for r in sorted(rows, key=lambda r: r["grp"]) if r["grp"].startswith("subset:")]
    assert spec["data"][0]["x"] == [r["grp"].split(":", 1)[1] for r in subs]
    assert spec["data"][0]["y"] == pytest.approx([100 * r["delta"] for r in subs])
    assert spec["data"][1]["y"] == pytest.approx([100 * r["random_delta_mean"] for r in subs])
    _check_flips(world, html, "B")


def test_specific_and_shared_page_shows_delta_transfer_and_per_neuron(world: SimpleNamespace) -> None:
    html, rows = _page(world, "C")
    table = _table(html, "c-table")
    alls = {(r["condition"], r["p"]): r for r in rows if r["grp"] == "all"}
    assert {c for c, _ in alls} == {"helpful_specific", "harmless_specific", "shared"}
    assert len(table) == len(alls) == 3 * 2
    obj = {(r["condition"], r["p"], r["grp"]): r for r in rows}
    for tr in table:
        key = (tr["condition"], float(tr["p"]))
        r = alls[key]
        for col in ("delta", "random_delta_mean", "delta_per_neuron", "random_delta_per_neuron", "transfer0",
                    "transfer", "transfer_delta", "random_transfer_mean"):
            assert _value(tr["cells"][col]) == r[col], col
        assert int(tr["cells"]["n_neurons"][0]) == r["n_neurons"]
        assert _value(tr["cells"]["delta_helpful"]) == obj[(*key, "objective:helpful")]["delta"]
        assert _value(tr["cells"]["delta_harmless"]) == obj[(*key, "objective:harmless")]["delta"]
    spec = _spec(html, "plot-sets-spec")
    bars = {t["name"]: t for t in spec["data"] if t["type"] == "bar"}
    for name, label in (("helpful_specific", "helpful-specific"), ("shared", "shared")):
        mine = sorted((r for (c, _), r in alls.items() if c == name), key=lambda r: r["p"])
        assert bars[label]["x"] == [f"p={r['p']:g}%" for r in mine]
        assert bars[label]["y"] == pytest.approx([100 * r["delta"] for r in mine])
    _check_flips(world, html, "C")


def test_single_set_page(world: SimpleNamespace) -> None:
    html, rows = _page(world, "single")
    table = {tr["grp"]: tr for tr in _table(html, "single-table")}
    assert set(table) == {r["grp"] for r in rows}
    for r in rows:
        for col in ("acc0", "acc", "delta", "random_delta_mean", "excess", "delta_per_neuron", "mean_margin_delta"):
            assert _value(table[r["grp"]]["cells"][col]) == r[col], col
    assert next(r for r in rows if r["grp"] == "all")["n_neurons"] == 3
    for layer, idx in SINGLE_SET.items():
        for i in idx:
            assert f'href="/models/{MODEL}/neurons/{layer}/{i}"' in html
    _check_flips(world, html, "single")


def _check_flips(world: SimpleNamespace, html: str, exp: str) -> None:
    key = world.jobs[exp]["result_key"]
    flips = world.store.query("SELECT * FROM ablation_flips WHERE result_key = ?", [key])
    assert flips
    assert re.search(rf'<span id="n-flips">{len(flips)}</span>', html)
    table = _table(html, "flips-table")
    assert sorted((tr["item"], tr["condition"]) for tr in table) == \
        sorted((f["item_id"], f["condition"]) for f in flips)


@pytest.mark.parametrize("exp", ["A", "B", "C", "single"])
def test_each_page_shows_the_command_that_recomputes_it(world: SimpleNamespace, exp: str) -> None:
    html, _ = _page(world, exp)
    m = re.search(r'<code class="cmd" id="recompute-cmd">(.*?)</code>', html, re.S)
    assert m, "no recompute command"
    argv = shlex.split(unescape(m.group(1)))
    assert argv[:3] == ["tension", "submit", "ablate"] and len(argv) == 4
    assert json.loads(argv[3]) == world.jobs[exp]["params"]


def test_unknown_result_is_404(world: SimpleNamespace) -> None:
    r = world.client.get("/ablations/0000deadbeef")
    assert r.status_code == 404 and 'id="ablation-error"' in r.text
    assert "no ablation result with key &#39;0000deadbeef&#39;" in r.text


# -- live toggles -----------------------------------------------------------------------------------------
def _live(world: SimpleNamespace, query: dict[str, Any], headers: dict[str, str] | None = None) -> Any:
    ck = world.checkpoints["mixed"]
    return world.client.get(f"/ui/live/{ck}", params={"probe_limit": PROBE, **query}, headers=headers or {})


def _last_request(world: SimpleNamespace) -> Any:
    return world.pool.requests()[-1]


def test_live_partial_equals_the_api_answer(world: SimpleNamespace) -> None:
    ck = world.checkpoints["mixed"]
    q = {"part": "helpful", "p": 10}
    r = _live(world, q)
    assert r.status_code == 200, r.text
    # The worker was asked to switch off exactly the helpful RM's top 10% (computed here from the seeded rows).
    want = _top(world, Regime.helpful, 10)
    assert _as_pairs(_last_request(world).neurons.as_json()) == want
    api = world.client.get(f"/api/live/{ck}/toggle", params={**q, "probe_limit": PROBE}).json()
    assert _as_pairs(api["neurons"]) == want and api["n_neurons"] == len(want)
    assert api["roundtrip_ms"] > 0  # measured around the streamed run
    html = r.text
    assert 'id="plot-shift"' in html
    assert re.search(rf'<span id="shift-n-neurons">{len(want)}</span>', html)
    table = {tr["objective"]: tr["cells"] for tr in _table(html, "shift-table")}
    assert set(table) == set(api["objectives"]) == {"helpful", "harmless"}
    for o, v in api["objectives"].items():
        c = table[o]
        assert int(c["n_pairs"][0]) == v["n_pairs"] == PROBE
        assert v["delta"]["chosen"] == pytest.approx(-0.01 * (1 + (o == "harmless")) * len(want))
        for col, value in (("delta_chosen", v["delta"]["chosen"]), ("delta_rejected", v["delta"]["rejected"]),
                           ("delta_margin", v["delta"]["margin"]), ("delta_accuracy", v["delta"]["accuracy"]),
                           ("accuracy_before", v["baseline"]["accuracy"]),
                           ("accuracy_after", v["ablated"]["accuracy"])):
            assert _value(c[col]) == pytest.approx(value, rel=1e-12, abs=1e-15), col
        assert int(c["to_wrong"][0]) == v["flips"]["to_wrong"] and int(c["to_right"][0]) == v["flips"]["to_right"]
    spec = _spec(html, "plot-shift-spec")
    bars = {(t["legendgroup"], t["xaxis"]): t["y"] for t in spec["data"]}
    for o, v in api["objectives"].items():
        d = v["delta"]
        assert bars[(o, "x")] == pytest.approx([d["chosen"], d["rejected"], d["margin"]])
        assert bars[(o, "x2")] == pytest.approx([100 * d["accuracy"]])
    assert re.search(r'path <code id="shift-path">cached_prefix</code>', html)
    # The queue form carries exactly the toggled neurons.
    m = re.search(r'name="neurons" value="([^"]+)"', html)
    assert m and json.loads(unescape(m.group(1))) == api["neurons"]
    # The worker keeps this RM warm on the probe pairs asked for, with its per-neuron means for mode 'mean'.
    config = next(w.config for w in world.pool.workers.values() if w.config.checkpoint == ck)
    assert config.probe.limit == PROBE and config.probe.split == "test" and config.means is not None


def test_shared_part_is_the_intersection_of_h_and_r(world: SimpleNamespace) -> None:
    r = _live(world, {"part": "shared", "p": 25})
    assert r.status_code == 200, r.text
    want = _top(world, Regime.helpful, 25) & _top(world, Regime.harmless, 25)
    assert _as_pairs(_last_request(world).neurons.as_json()) == want
    assert re.search(rf'<span id="shift-n-neurons">{len(want)}</span>', r.text)
    assert "shared H ∩ R at top 25% by A, seed 0" in r.text


def test_live_toggle_state_is_pushed_into_the_page_url(world: SimpleNamespace) -> None:
    ck = world.checkpoints["mixed"]
    page = f"http://testserver/models/{MODEL}/dashboard?p=10&stat=A&ck=old&part=shared&scatter=mixed"
    r = _live(world, {"part": "harmless", "layer": "1", "push": "1"}, {"HX-Request": "true", "HX-Current-URL": page})
    assert r.status_code == 200, r.text
    pushed = r.headers["HX-Push-Url"]
    assert pushed.startswith(f"/models/{MODEL}/dashboard?")
    q = dict(re.findall(r"([^?&=]+)=([^&]*)", pushed.split("?", 1)[1]))
    assert q == {"p": "10", "stat": "A", "scatter": "mixed", "ck": ck, "part": "harmless", "layer": "1",
                 "probe_limit": str(PROBE)}
    r = _live(world, {"part": "harmless", "mode": "scale", "factor": "0.5", "push": "1"},
              {"HX-Request": "true", "HX-Current-URL": page})
    q = dict(re.findall(r"([^?&=]+)=([^&]*)", r.headers["HX-Push-Url"].split("?", 1)[1]))
    assert q["mode"] == "scale" and q["factor"] == "0.5" and "layer" not in q
    assert _last_request(world).mode == "scale" and _last_request(world).factor == 0.5
    # Without push=1 (the page's own autorun) nothing is pushed.
    assert "HX-Push-Url" not in _live(world, {"part": "harmless"}, {"HX-Current-URL": page}).headers


def test_layer_slice_named_set_and_single_neuron(world: SimpleNamespace) -> None:
    ck = world.checkpoints["mixed"]
    whole = world.client.get(f"/api/live/{ck}/toggle", params={"part": "mixed", "probe_limit": PROBE}).json()
    sliced = _live(world, {"part": "mixed", "layer": "1"})
    n1 = len(whole["neurons"].get("1", []))
    assert n1 and re.search(rf'<span id="shift-n-neurons">{n1}</span>', sliced.text)
    assert "layer 1 only" in sliced.text
    assert _last_request(world).neurons.as_json() == {"1": whole["neurons"]["1"]}

    made = world.client.post("/api/neuron-sets", json={"name": "abl-test-set", "base_model": MODEL, "part": "harmless"})
    assert made.status_code == 201, made.text
    named = _live(world, {"set": "abl-test-set"})
    assert named.status_code == 200 and "named set" in named.text
    assert re.search(rf'<span id="shift-n-neurons">{made.json()["size"]}</span>', named.text)
    assert _as_pairs(_last_request(world).neurons.as_json()) == _top(world, Regime.harmless, 10)

    one = _live(world, {"neurons": '{"1": [5]}', "set": "", "part": "", "layer": ""})
    assert one.status_code == 200 and '<span id="shift-n-neurons">1</span>' in one.text
    assert _last_request(world).neurons.as_json() == {"1": [5]}


@pytest.mark.parametrize(("query", "status", "messages"), [
    ({"part": "everything"}, 422, ["query.part", "'shared'"]),
    ({"part": "shared", "layer": "7"}, 404, ["layer 7 out of range", f"layers 0-{N_LAYERS - 1}"]),
    ({"part": "shared", "layer": "-1"}, 404, ["layer -1 out of range"]),
    ({"part": "shared", "layer": "one"}, 422, ["query.layer", "valid integer"]),
    ({"neurons": '{"1": [5'}, 422, ["neurons must be JSON"]),
    ({"neurons": '["not", "a", "dict"]'}, 422, ["neurons must be JSON", "dictionary"]),
    ({"neurons": '{"9": [1]}'}, 404, ["layer 9 out of range"]),
    ({"neurons": f'{{"1": [{N_NEURONS}]}}'}, 404, [f"neuron {N_NEURONS} of layer 1 out of range"]),
    ({"part": "shared", "p": "500"}, 422, ["query.p", "less than or equal to 100"]),
    ({"part": "shared", "p": "nan"}, 422, ["query.p: Input should be"]),
    ({"part": "shared", "stat": "Z"}, 422, ["query.stat", "'A', 'C' or 'P'"]),
    ({"part": "shared", "shared": "union"}, 422, ["query.shared", "'intersection' or 'per_layer'"]),
    ({"part": "shared", "mode": "halve"}, 422, ["query.mode", "'zero', 'mean' or 'scale'"]),
    ({"part": "shared", "probe_limit": "0"}, 422, ["query.probe_limit", "greater than or equal to 1"]),
    ({"part": "shared", "probe_limit": "513"}, 422, ["query.probe_limit", "less than or equal to 512"]),
    ({"set": "no-such-set"}, 404, ["no neuron set named 'no-such-set'"]),
    ({}, 422, ["say which neurons"]),
])
def test_bad_toggles_are_4xx(world: SimpleNamespace, query: dict[str, str], status: int, messages: list[str]) -> None:
    n_before = len(world.pool.requests())
    r = _live(world, query)
    assert r.status_code == status, r.text
    for message in messages:
        assert message in r.json()["detail"]
    frag = _live(world, query, {"HX-Request": "true"})  # htmx gets the message as an error fragment
    assert frag.status_code == status and 'class="error"' in frag.text
    assert len(world.pool.requests()) == n_before  # refused before any worker is asked


def test_bad_toggles_through_the_json_api(world: SimpleNamespace) -> None:
    ck = world.checkpoints["mixed"]
    api = f"/api/live/{ck}/toggle"
    assert world.client.get(api, params={"part": "everything"}).status_code == 422
    assert world.client.get(api, params={"neurons": "{bad"}).status_code == 422
    assert world.client.get(api, params={"part": "shared", "path": "sideways"}).status_code == 422
    r = world.client.get(api, params={"neurons": '{"0": [999]}', "probe_limit": PROBE})
    assert r.status_code == 404 and "neuron 999" in r.json()["detail"]  # checked before any worker starts
    r = world.client.get(api, params={"part": "shared", "layer": 99})
    assert r.status_code == 404 and "layer 99" in r.json()["detail"]
    r = world.client.get(api, params={"part": "shared", "path": "full", "probe_limit": PROBE})
    assert r.status_code == 200 and _last_request(world).path == "full"
    assert world.client.get("/ui/live/no-such-checkpoint", params={"part": "shared"}).status_code == 404
    assert world.client.get("/api/live/no-such-checkpoint/toggle", params={"part": "shared"}).status_code == 404
    assert world.client.get("/ui/live", params={"ck": "no-such-checkpoint", "part": "shared"}).status_code == 404


def test_mean_mode_without_a_capture_is_refused(world: SimpleNamespace) -> None:
    from tests.factories import add_checkpoint

    ck = add_checkpoint(world.services, base_model=MODEL, regime="mixed", seed=7)
    r = world.client.get(f"/api/live/{ck}/toggle", params={"neurons": '{"0": [1]}', "mode": "mean"})
    assert r.status_code == 422 and "mean ablation needs this RM's capture" in r.json()["detail"]
    r = world.client.get(f"/api/live/{ck}/toggle", params={"neurons": '{"0": [1]}', "probe_limit": PROBE})
    assert r.status_code == 200 and r.json()["n_neurons"] == 1  # zero mode needs no capture


# -- panels on the dashboard and the neuron page ------------------------------------------------------------
def test_dashboard_panel_defaults_to_the_mixed_rm_and_reads_toggle_state(world: SimpleNamespace) -> None:
    c = world.client
    base = {"base_model": MODEL, "p": "10", "stat": "A", "seed": "0"}
    html = c.get("/ui/ablation/panel", params=base).text
    for regime, ck in world.checkpoints.items():
        assert f'value="{ck}"' in html, regime
    assert f'<option value="{world.checkpoints["mixed"]}" selected>' in html
    assert '<option value="shared" selected>' in html
    assert 'hx-indicator="#live-indicator"' in html and 'class="htmx-indicator' in html
    # Opening the dashboard computes the default toggle (the shared set on the mixed RM) at once and warms
    # the view's RMs in the background: no click needed for the first estimate.
    m = re.search(r'<div id="live-result" hx-get="([^"]+)" hx-trigger="load"', html)
    assert m and unescape(m.group(1)).startswith(f"/ui/live/{world.checkpoints['mixed']}?")
    assert "part=shared" in unescape(m.group(1))
    warm = re.search(r'<div id="live-warm" hx-get="([^"]+)" hx-trigger="load"', html)
    assert warm and f"ck={world.checkpoints['mixed']}" in unescape(warm.group(1))
    assert '<input type="hidden" name="p" value="10">' in html
    assert "".join(f'<option value="{i}"' for i in range(N_LAYERS)) in re.sub(r">layer \d+ only</option>", "", html)
    state = c.get("/ui/ablation/panel", params={**base, "ck": world.checkpoints["helpful"], "part": "harmless",
                                                "layer": "0", "probe_limit": PROBE}).text
    assert f'<option value="{world.checkpoints["helpful"]}" selected>' in state
    assert '<option value="harmless" selected>' in state and '<option value="0" selected>' in state
    m = re.search(r'<div id="live-result" hx-get="([^"]+)" hx-trigger="load"', state)
    assert m, "toggle state in the URL must compute at once"
    auto = unescape(m.group(1))
    assert auto.startswith(f"/ui/live/{world.checkpoints['helpful']}?") and "part=harmless" in auto
    assert "layer=0" in auto and f"probe_limit={PROBE}" in auto and "p=10&" in auto
    r = c.get(auto)
    assert r.status_code == 200 and "layer 0 only" in r.text
    missing = c.get("/ui/ablation/panel", params={"base_model": "no-such-model"})
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no capture of base model 'no-such-model' at hook 'down_proj_input'"
    # The dashboard page hands its toggle keys (and only those) to the panel.
    dash = c.get(f"/models/{MODEL}/dashboard", params={"p": "10", "ck": world.checkpoints["helpful"],
                                                      "part": "harmless", "layer": "0", "junk": "x"}).text
    m = re.search(r'<div id="live-panel" hx-get="([^"]+)"', dash)
    assert m
    panel_url = unescape(m.group(1))
    assert "part=harmless" in panel_url and "layer=0" in panel_url and "junk" not in panel_url
    assert c.get(panel_url).status_code == 200


def test_neuron_page_panel_toggles_that_neuron(world: SimpleNamespace) -> None:
    c = world.client
    page = c.get(f"/models/{MODEL}/neurons/1/5").text
    m = re.search(r'<div id="live-panel" hx-get="([^"]+)"', page)
    assert m
    panel = c.get(unescape(m.group(1))).text
    m = re.search(r'name="neurons" value="([^"]+)"', panel)
    assert m and json.loads(unescape(m.group(1))) == {"1": [5]}
    for ck in world.checkpoints.values():
        assert f'value="{ck}"' in panel
    state = c.get("/ui/ablation/neuron-panel", params={"model": MODEL, "layer": 1, "index": 5,
                                                       "ck": world.checkpoints["harmless"], "probe_limit": PROBE}).text
    m = re.search(r'<div id="live-result" hx-get="([^"]+)"', state)
    assert m and unescape(m.group(1)).startswith(f"/ui/live/{world.checkpoints['harmless']}?")
    r = c.get(unescape(m.group(1)))
    assert r.status_code == 200 and '<span id="shift-n-neurons">1</span>' in r.text
    assert _last_request(world).neurons.as_json() == {"1": [5]}


# -- queueing and shares ------------------------------------------------------------------------------------
def test_queue_submits_the_exact_full_test_evaluation(world: SimpleNamespace) -> None:
    c = world.client
    ck = world.checkpoints["mixed"]
    r = c.post("/ui/ablation/queue", headers={"HX-Request": "true"},
               data={"checkpoint": ck, "neurons": json.dumps(QUEUED_SET), "mode": "scale", "factor": "0.5"})
    assert r.status_code == 200, r.text
    m = re.search(r'id="job-([0-9a-f]+)"', r.text)
    assert m and 'hx-get="/ui/jobs/' in r.text
    job = c.get(f"/api/jobs/{m.group(1)}").json()
    assert job["kind"] == "ablate" and job["status"] == "queued"
    params = job["params"]
    assert params["experiment"] == "single" and params["checkpoint"] == ck
    assert params["neuron_set"] == QUEUED_SET and params["mode"] == "scale" and params["scale"] == 0.5
    assert params["dataset"]["source"] == "bundled" and params["dataset"]["split"] == "test"
    assert params["dataset"]["limit"] is None and params["limit_per_objective"] is None  # the whole test split


def test_queue_refuses_an_empty_or_bad_set(world: SimpleNamespace) -> None:
    c = world.client
    ck = world.checkpoints["mixed"]
    r = c.post("/ui/ablation/queue", data={"checkpoint": ck, "neurons": "{}"})
    assert r.status_code == 422 and "nothing to ablate" in r.json()["detail"]
    r = c.post("/ui/ablation/queue", data={"checkpoint": ck, "neurons": "{x"})
    assert r.status_code == 422 and "neurons must be JSON" in r.json()["detail"]
    r = c.post("/ui/ablation/queue", data={"checkpoint": ck, "neurons": '{"0": [1]}', "mode": "halve"})
    assert r.status_code == 422 and "mode" in r.json()["detail"]
    r = c.post("/ui/ablation/queue", data={"checkpoint": ck, "neurons": '{"0": [999]}'})
    assert r.status_code == 404 and "neuron 999 of layer 0 out of range" in r.json()["detail"]
    r = c.post("/ui/ablation/queue", data={"checkpoint": "nope", "neurons": '{"0": [1]}'})
    assert r.status_code == 404 and "unknown checkpoint 'nope'" in r.json()["detail"]


def test_share_control_and_read_only_refusal(world: SimpleNamespace) -> None:
    c = world.client
    target = f"/models/{MODEL}/dashboard?p=10&ck={world.checkpoints['mixed']}&part=helpful&probe_limit={PROBE}"
    assert 'id="share-button"' in c.get(target).text  # a shareable view offers the button ...
    assert 'id="share-button"' not in c.get("/ablations").text  # ... a listing of everything does not
    share = c.post("/api/shares", json={"target": target})
    assert share.status_code == 201
    token = share.json()["token"]
    opened = c.get(f"/s/{token}", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == f"{target}&share={token}"
    shared = c.get(opened.headers["location"]).text
    assert 'id="read-only-badge"' in shared and 'id="share-button"' not in shared
    # Toggles are looks (GET): allowed through the link, with the queue button disabled.
    frag = _live(world, {"part": "helpful"}, {"HX-Request": "true", "X-Tension-Share": token})
    assert frag.status_code == 200
    assert re.search(r'<button type="submit" id="queue-full" disabled title="read-only', frag.text)
    # Launching a job through the link is refused, by the UI route and the API alike.
    neurons = json.dumps(QUEUED_SET)
    for headers in ({"X-Tension-Share": token, "HX-Request": "true"}, {"X-Tension-Share": token}):
        r = c.post("/ui/ablation/queue", headers=headers,
                   data={"checkpoint": world.checkpoints["mixed"], "neurons": neurons})
        assert r.status_code == 403 and "read-only" in r.text
    params = {"experiment": "single", "checkpoint": world.checkpoints["mixed"], "neuron_set": QUEUED_SET}
    r = c.post("/api/jobs", json={"kind": "ablate", "params": params}, headers={"X-Tension-Share": token})
    assert r.status_code == 403
    r = c.post("/api/jobs", params={"share": token}, json={"kind": "ablate", "params": params})
    assert r.status_code == 403


def test_openapi_describes_every_ablation_response(world: SimpleNamespace) -> None:
    doc = world.client.get("/openapi.json").json()
    refs = {path: doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            for path in ("/api/live/{checkpoint}/toggle", "/api/ablations", "/api/ablations/{result_key}")}
    assert refs["/api/live/{checkpoint}/toggle"]["$ref"].endswith("/LiveToggleAnswer")
    assert refs["/api/ablations"]["items"]["$ref"].endswith("/AblationRunSummary")
    assert refs["/api/ablations/{result_key}"]["$ref"].endswith("/AblationResult")
    params = {p["name"]: p for p in doc["paths"]["/api/live/{checkpoint}/toggle"]["get"]["parameters"]}
    assert {"neurons", "set", "part", "p", "stat", "seed", "shared", "layer", "mode", "factor", "probe_limit",
            "path"} <= set(params)
    assert not any(p.startswith("/ui/") or p.startswith("/ablations") for p in doc["paths"])


def test_fake_worker_answers_like_the_protocol(world: SimpleNamespace) -> None:
    """The fake stays honest: its answers are the contract's models (what the real worker sends)."""
    from workers.contract.live import LiveAnswer, LiveToggleRequest

    answer = answer_for(LiveToggleRequest.model_validate({"neurons": {"0": [1, 2]}}), PROBE)
    assert LiveAnswer.model_validate_json(answer.model_dump_json()) == answer


# -- end to end, for real -----------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_rms_queue_ablate_toggle_and_recompute(tmp_path_factory: pytest.TempPathFactory, real_rms: Any) -> None:
    """Real tiny-bert RMs trained and captured (the session's real jobs; asked for again here, they are cache
    hits), an `ablate` job queued from the toggle button and run, its page equal to its rows, a live toggle
    answered by a real warm worker, and the page's recompute command a cache hit."""
    from tests.app.neurons.pipeline import settings_from, train_and_capture

    settings = settings_from(real_rms.captured, tmp_path_factory.mktemp("ablation-e2e"))
    with app_client(create_app(settings)) as client:
        checkpoints = train_and_capture(client)
        mixed = checkpoints["mixed"]
        queued = client.post("/ui/ablation/queue", headers={"HX-Request": "true"},
                             data={"checkpoint": mixed, "neurons": json.dumps(QUEUED_SET), "mode": "zero"})
        assert queued.status_code == 200, queued.text
        m = re.search(r'id="job-([0-9a-f]+)"', queued.text)
        assert m
        job = wait_job(lambda j: client.get(f"/api/jobs/{j}").json(), m.group(1), timeout=600)
        assert job["status"] == "succeeded", f"{job.get('error')}\n{job.get('log_tail')}"
        key = job["result_key"]
        html = client.get(f"/ablations/{key}").text
        rows = client.app.state.services.store.query(  # type: ignore[attr-defined]
            "SELECT * FROM ablation_results WHERE result_key = ?", [key])
        table = {tr["grp"]: tr for tr in _table(html, "single-table")}
        assert set(table) == {r["grp"] for r in rows} and "all" in table
        for r in rows:
            for col in ("acc0", "acc", "delta", "random_delta_mean"):
                assert _value(table[r["grp"]]["cells"][col]) == r[col], col
        assert next(r for r in rows if r["grp"] == "all")["n_neurons"] == 3
        status = client.get(f"/ui/jobs/{job['id']}/status").text
        assert f'href="/ablations/{key}"' in status

        live = client.get(f"/api/live/{mixed}/toggle", params={"neurons": json.dumps(QUEUED_SET), "probe_limit": 4})
        assert live.status_code == 200, live.text
        answer = live.json()
        assert answer["n_neurons"] == 3 and set(answer["objectives"]) == {"helpful", "harmless"}
        for v in answer["objectives"].values():
            assert v["n_pairs"] == 4
            assert v["delta"]["accuracy"] == pytest.approx(v["ablated"]["accuracy"] - v["baseline"]["accuracy"])
        page = client.get(f"/ui/live/{mixed}", params={"neurons": json.dumps(QUEUED_SET), "probe_limit": 4}).text
        assert '<span id="shift-n-neurons">3</span>' in page

        m = re.search(r'<code class="cmd" id="recompute-cmd">(.*?)</code>', html, re.S)
        assert m
        params = json.loads(shlex.split(unescape(m.group(1)))[3])
        assert params == job["params"]
        again = client.post("/api/jobs", json={"kind": "ablate", "params": params}).json()
        assert again["result_key"] == key and again["cached"] is True


def test_the_estimate_fragment_and_api_show_the_worker_s_estimate_labelled(world: SimpleNamespace) -> None:
    ck = world.checkpoints["mixed"]
    query = {"part": "shared", "p": "10", "probe_limit": "16"}
    api = world.client.get(f"/api/live/{ck}/estimate", params=query).json()
    exact = world.client.get(f"/api/live/{ck}/toggle", params=query).json()
    assert api["estimate"] is True and api["n_neurons"] == exact["n_neurons"] > 0
    for o, e in api["objectives"].items():  # the fake estimator is off by half: shown as it is, not corrected
        assert e["delta_margin"] == pytest.approx(exact["objectives"][o]["delta"]["margin"] / 2)
    html = world.client.get("/ui/live/estimate", params={"ck": ck, **query}).text
    assert 'id="estimate-block"' in html and "first-order" in html and "/glossary#first-order-estimate" in html
    rows = re.findall(r'<tr data-objective="(\w+)">', html)
    assert sorted(rows) == ["harmless", "helpful"]
    helpful = api["objectives"]["helpful"]
    assert f"{100 * helpful['delta_accuracy']:+.1f} pp" in html
    bad = world.client.get("/ui/live/estimate", params={"ck": "no-such-checkpoint", "part": "shared"})
    assert bad.status_code == 404
