"""Reward-model lab: JSON API, launch forms and pages.

Two sources of rows: factory rows ingested through the real ingest path (`tests/factories/evaluation.py`:
exact numbers, several seeds, transfer, flips, NaN handling, hostile subset names), and, in one slow test,
real worker jobs (tiny-bert trained in the three regimes and evaluated), whose stored rows the API must
return unchanged and whose launch forms must queue jobs.
"""

from __future__ import annotations

import json
import math
import re
import statistics
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import wait_job
from tests.factories import evaluation as lab
from tests.factories.http import app_client
from workers.contract.vocab import REGIMES, Regime

BASE, EVIL = lab.BASE, lab.EVIL
_ck = lab.ck_id


@pytest.fixture
def seeded(client: TestClient) -> dict[str, Any]:
    rows = lab.seed_lab(client.app.state.services)  # type: ignore[attr-defined]
    return {"items": rows.items, "subsets": rows.subsets, "transfer": rows.transfer}


def _row(data: dict[str, Any], checkpoint: str, subset: str) -> dict[str, Any]:
    return next(s for s in data["subsets"] if s["checkpoint"] == checkpoint and s["subset"] == subset)


def _accs(data: dict[str, Any], regime: str, subset: str) -> list[float]:
    return [s["accuracy"] for s in data["subsets"] if s["regime"] == regime and s["subset"] == subset]


def _spec(html: str, name: str) -> dict[str, Any]:
    """The embedded Plotly spec of plot `name`, parsed as strict JSON (no NaN may slip through)."""
    assert f'id="plot-{name}"' in html and f'data-plot="plot-{name}-spec"' in html
    m = re.search(rf'<script type="application/json" id="plot-{name}-spec">(.*?)</script>', html, re.S)
    assert m, f"no spec for plot-{name}"
    return json.loads(m.group(1),  # type: ignore[no-any-return]
                      parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in plot-{name}"))


# ------------------------------------------------------------------------------------------ 404s


@pytest.mark.parametrize("url", [
    "/api/lab/checkpoints/nope", "/api/lab/checkpoints/nope/history", "/api/lab/evaluations/nope",
    "/api/lab/evaluations?checkpoint=nope", "/api/lab/evaluations/nope/flips?a=x&b=y",
    "/api/lab/compare/no/such-model", "/lab/rm/nope", "/lab/compare/no/such-model",
])
def test_unknown_ids_are_404_with_a_message(client: TestClient, url: str) -> None:
    r = client.get(url)
    assert r.status_code == 404, r.text
    detail = r.json()["detail"]
    assert "nope" in detail or "no/such-model" in detail


def test_404_inside_a_known_evaluation(client: TestClient, seeded: dict[str, Any]) -> None:
    r = client.get("/api/lab/evaluations/eval-one/flips",
                   params={"a": _ck("mixed", 0), "b": _ck("helpful", 0)})
    assert r.status_code == 404 and "not part of evaluation" in r.json()["detail"]
    r = client.get(f"/lab/rm/{_ck('helpful', 0)}", params={"eval": "eval-one"})
    assert r.status_code == 404 and "did not evaluate" in r.json()["detail"]
    r = client.get(f"/api/lab/compare/{BASE}", params={"seed": 7})
    assert r.status_code == 404 and "seed 7" in r.json()["detail"] and BASE in r.json()["detail"]
    r = client.get(f"/api/lab/evaluations/{_ck('mixed', 0)}")  # a stored (training) result, not an evaluation
    assert r.status_code == 404
    r = client.get(f"/lab/rm/{_ck('helpful', 0)}", headers={"HX-Request": "true"}, params={"eval": "zzz"})
    assert r.status_code == 404 and 'class="error"' in r.text and "zzz" in r.text


# ------------------------------------------------------------------------------------------ JSON API, exact


def test_checkpoint_list_and_detail(client: TestClient, seeded: dict[str, Any]) -> None:
    cks = client.get("/api/lab/checkpoints").json()["checkpoints"]
    assert len(cks) == 6
    first = cks[0]
    assert set(first) >= {"id", "base_model", "regime", "seed", "preset", "created_at", "metrics", "test"}
    assert first["metrics"] == {"final_eval_acc": 0.75, "final_eval_loss": 0.5, "steps": 4, "best_step": 4}
    by_id = {c["id"]: c for c in cks}
    # 'test' is the newest evaluation covering the checkpoint: eval-one for mixed seed 0, eval-full otherwise.
    assert by_id[_ck("mixed", 0)]["test"]["result_key"] == "eval-one"
    assert by_id[_ck("helpful", 1)]["test"]["result_key"] == "eval-full"
    all_row = _row(seeded, _ck("helpful", 1), "all")
    assert by_id[_ck("helpful", 1)]["test"]["accuracy"] == pytest.approx(all_row["accuracy"])
    assert len(client.get("/api/lab/checkpoints", params={"base_model": "other"}).json()["checkpoints"]) == 0
    one = client.get(f"/api/lab/checkpoints/{_ck('mixed', 0)}").json()
    assert one["regime"] == "mixed" and one["meta"]["model"] == BASE
    assert [e["result_key"] for e in one["evaluations"]] == ["eval-one", "eval-full"]


def test_training_history(client: TestClient, seeded: dict[str, Any]) -> None:
    rows = client.get(f"/api/lab/checkpoints/{_ck('harmless', 1)}/history").json()["rows"]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[0]["train_loss"] is None and rows[0]["eval_loss"] == pytest.approx(0.69)
    assert rows[1]["eval_acc"] is None and rows[4]["train_acc"] == pytest.approx(0.7)


def test_evaluation_results_shape_and_nan_as_null(client: TestClient, seeded: dict[str, Any]) -> None:
    r = client.get("/api/lab/evaluations/eval-full")
    assert r.status_code == 200
    data = r.json()
    assert data["split"] == "test" and data["limit"] == 4 and len(data["checkpoints"]) == 6
    assert data["summary"]["mean_transferability"] is None  # NaN in the summary becomes null
    assert len(data["subsets"]) == 6 * 5
    row = _row(data, _ck("helpful", 0), "rm-bench/chat")
    assert row["accuracy"] == 0.75 and row["ci_lo"] == 0.5 and row["ci_hi"] == 1.0
    assert row["length_longer"] == 0.5 and row["length_shorter"] == 0.25 and row["subset_type"] == "helpful"
    summ = next(s for s in data["seed_summary"] if s["regime"] == "mixed" and s["subset"] == "rm-bench/chat")
    accs = _accs(seeded, "mixed", "rm-bench/chat")
    assert summ["n_seeds"] == 2 and summ["mean_accuracy"] == pytest.approx(statistics.mean(accs))
    assert summ["std_accuracy"] == pytest.approx(statistics.stdev(accs))
    assert set(data["reliability"]) == {_ck(r, s) for r in REGIMES for s in (0, 1)}
    bins = data["reliability"][_ck("mixed", 1)]
    assert len(bins) == 8 and {b["scope"] for b in bins} == {"all", "helpful"}
    assert any(b["count"] == 0 and b["mean_confidence"] is None for b in bins)
    assert len(data["transfer"]) == 2 * 5
    evil = [t for t in data["transfer"] if t["subset"] == EVIL]
    assert all(t["jaccard_helpful"] is None for t in evil)
    listed = client.get("/api/lab/evaluations").json()["evaluations"]
    assert [e["result_key"] for e in listed] == ["eval-one", "eval-full"]
    only = client.get("/api/lab/evaluations", params={"checkpoint": _ck("harmless", 0)}).json()["evaluations"]
    assert [e["result_key"] for e in only] == ["eval-full"]


def test_flips_between_two_checkpoints(client: TestClient, seeded: dict[str, Any]) -> None:
    a, b = _ck("mixed", 0), _ck("harmless", 0)
    verdict = {(x["checkpoint"], x["item_id"]): x["correct"] for x in seeded["items"]}
    ids = sorted({x["item_id"] for x in seeded["items"]})
    flipped = [i for i in ids if verdict[(a, i)] != verdict[(b, i)]]
    assert flipped  # the fixture is built so that these differ
    data = client.get("/api/lab/evaluations/eval-full/flips", params={"a": a, "b": b}).json()
    assert data["n_flipped"] == len(flipped) == len(data["items"])
    assert data["a_only"] == sum(verdict[(a, i)] for i in flipped)
    assert data["b_only"] == sum(verdict[(b, i)] for i in flipped)
    assert sorted(x["item_id"] for x in data["items"]) == flipped
    assert all(x["correct_a"] != x["correct_b"] for x in data["items"])
    limited = client.get("/api/lab/evaluations/eval-full/flips", params={"a": a, "b": b, "limit": 1}).json()
    assert len(limited["items"]) == 1 and limited["n_flipped"] == len(flipped)


def test_comparison_numbers_over_seeds(client: TestClient, seeded: dict[str, Any]) -> None:
    data = client.get(f"/api/lab/compare/{BASE}").json()
    assert data["base_model"] == BASE and data["result_key"] == "eval-full" and data["seeds"] == [0, 1]
    assert {r: len(v) for r, v in data["checkpoints"].items()} == {"helpful": 2, "harmless": 2, "mixed": 2}
    # Subsets ordered: helpful-type, then harmless-type, then the overall row.
    assert [e["subset_type"] for e in data["subsets"]] == ["helpful", "helpful", "harmless", "harmless",
                                                            "all"]
    for e in data["subsets"]:
        for r in REGIMES:
            accs = _accs(seeded, r, e["subset"])
            v = e["regimes"][r]
            assert v["n_seeds"] == 2 and v["mean"] == pytest.approx(statistics.mean(accs))
            assert v["std"] == pytest.approx(statistics.stdev(accs)) and v["ci_lo"] is None
    types = {t["subset_type"]: t for t in data["types"]}
    assert set(types) == {"helpful", "harmless"}
    for stype, t in types.items():
        for r in REGIMES:
            per_seed = [statistics.mean(s["accuracy"] for s in seeded["subsets"] if s["regime"] == r
                                        and s["seed"] == sd and s["subset_type"] == stype) for sd in (0, 1)]
            assert t["regimes"][r]["mean"] == pytest.approx(statistics.mean(per_seed))
            assert t["regimes"][r]["std"] == pytest.approx(statistics.stdev(per_seed))
            assert t["regimes"][r]["n_subsets"] == 2
    assert types["harmless"]["regimes"]["harmless"]["mean"] > types["harmless"]["regimes"]["helpful"]["mean"]
    tr = {t["subset"]: t for t in data["transfer"]}
    assert tr["all"]["transferability"] == pytest.approx(0.55) and tr["all"]["n_seeds"] == 2
    assert tr["all"]["jaccard_harmless"] == pytest.approx(0.4) and tr[EVIL]["jaccard_helpful"] is None
    assert [(c["regime"], c["seed"]) for c in data["calibration"]] == [
        ("helpful", 0), ("helpful", 1), ("harmless", 0), ("harmless", 1), ("mixed", 0), ("mixed", 1)]
    assert data["calibration"][1]["ece"] == pytest.approx(0.06)
    assert all(len(r["bins"]) == 4 for r in data["reliability"])
    assert [(f["single"], f["seed"]) for f in data["flips"]] == [("helpful", 0), ("harmless", 0)]
    direct = client.get("/api/lab/evaluations/eval-full/flips",
                        params={"a": _ck("mixed", 0), "b": _ck("helpful", 0)}).json()
    f = data["flips"][0]
    assert (f["n_flipped"], f["mixed_right"], f["single_right"]) == (direct["n_flipped"], direct["a_only"],
                                                                     direct["b_only"])
    # One seed: no std, the CI instead; transfer is that seed's row.
    one = client.get(f"/api/lab/compare/{BASE}", params={"seed": 1}).json()
    chat = one["subsets"][0]["regimes"]["helpful"]
    row = _row(seeded, _ck("helpful", 1), "rm-bench/chat")
    assert chat["n_seeds"] == 1 and chat["std"] == 0.0 and chat["mean"] == row["accuracy"]
    assert (chat["ci_lo"], chat["ci_hi"]) == (row["ci_lo"], row["ci_hi"])
    assert {t["subset"]: t["transferability"] for t in one["transfer"]}["all"] == pytest.approx(0.6)
    # An explicit evaluation that covers only the mixed RM.
    part = client.get(f"/api/lab/compare/{BASE}", params={"eval": "eval-one"}).json()
    assert part["result_key"] == "eval-one" and [c["id"] for c in part["evaluated"]] == [_ck("mixed", 0)]
    assert part["transfer"] == [] and part["flips"] == []


# ------------------------------------------------------------------------------------------ pages


def test_compare_page_embeds_three_regimes_as_json(client: TestClient, seeded: dict[str, Any]) -> None:
    r = client.get(f"/lab/compare/{BASE}")
    assert r.status_code == 200
    html = r.text
    acc = _spec(html, "accuracy")
    assert [t["name"] for t in acc["data"]] == list(REGIMES)
    assert acc["data"][0]["x"][0][:2] == ["Helpful-type", "Helpful-type"]  # subset type marked on the axis
    assert acc["data"][0]["error_y"]["array"][0] == pytest.approx(acc["data"][0]["error_y"]["arrayminus"][0])
    assert [t["name"] for t in _spec(html, "types")["data"]] == list(REGIMES)
    transfer = _spec(html, "transfer")
    assert transfer["data"][0]["type"] == "heatmap" and len(transfer["data"][0]["z"]) == 3
    assert None in transfer["data"][0]["z"][1]  # the NaN Jaccard, as null
    names = [t["name"] for t in _spec(html, "reliability")["data"]]
    assert names[0] == "perfect calibration" and len(names) == 7 and names[1] == "helpful · seed 0"
    # Hostile subset names are escaped in the HTML and inside the JSON script tags.
    assert "<script>alert(1)" not in html and "&lt;/script&gt;&lt;script&gt;alert(1)" in html
    assert html.count("<script") == html.count("</script>")
    assert 'class="flip-block" data-single="helpful"' in html
    one = client.get(f"/lab/compare/{BASE}", params={"seed": "0"}).text
    assert [t["name"] for t in _spec(one, "reliability")["data"]] == ["perfect calibration", *REGIMES]
    bad = client.get(f"/lab/compare/{BASE}", params={"seed": "x"})
    assert bad.status_code == 422


def test_rm_page_runs_page_and_lab_page(client: TestClient, seeded: dict[str, Any]) -> None:
    html = client.get(f"/lab/rm/{_ck('helpful', 1)}").text
    training = _spec(html, "training")
    assert [t["name"] for t in training["data"]] == ["train loss", "eval loss", "train acc", "eval acc"]
    assert training["data"][1]["x"] == [0, 2, 4]  # eval points only where evaluated
    acc = _spec(html, "accuracy")
    assert [t["name"] for t in acc["data"]] == ["helpful RM", "length baseline: longer wins",
                                                 "length baseline: shorter wins"]
    assert acc["data"][0]["x"][1][-1] == "all" and acc["data"][1]["y"][0] == 0.5
    rel = _spec(html, "reliability")
    assert [t["name"] for t in rel["data"]] == ["perfect calibration", "all pairs", "helpful pairs"]
    assert len(rel["data"][1]["x"]) == 3  # the empty bin is not drawn
    assert 'id="calibration-numbers"' in html and "0.060" in html  # ECE of seed 1
    # An evaluation chosen explicitly; and a checkpoint's page with the newest evaluation by default.
    assert client.get(f"/lab/rm/{_ck('mixed', 0)}", params={"eval": "eval-full"}).status_code == 200
    assert "eval-one"[:8] in client.get(f"/lab/rm/{_ck('mixed', 0)}").text
    runs = client.get("/lab/runs").text
    assert runs.count('class="rm-link"') == 6 and f'href="/lab/compare/{BASE}"' in runs
    lab = client.get("/lab").text
    assert 'id="train-form"' in lab and 'id="evaluate-form"' in lab and 'value="tiny-bert"' in lab
    assert lab.count('name="checkpoints"') == 6


def test_rm_page_without_evaluation_offers_one(client: TestClient) -> None:
    lab.train_checkpoint(client.app.state.services, Regime.helpful, 0, base_model="tiny-bert",  # type: ignore[attr-defined]
                         checkpoint="lonely", history=False)
    html = client.get("/lab/rm/lonely").text
    assert 'id="not-evaluated"' in html and 'id="plot-training"' not in html
    assert client.get("/api/lab/checkpoints/lonely/history").json()["rows"] == []
    cmp = client.get("/api/lab/compare/tiny-bert").json()
    assert cmp["result_key"] is None and cmp["subsets"] == []
    assert 'id="no-evaluation"' in client.get("/lab/compare/tiny-bert").text


# ------------------------------------------------------------------------------------------ launch forms


def test_launch_forms_return_error_fragments(client: TestClient, seeded: dict[str, Any]) -> None:
    hx = {"HX-Request": "true"}
    r = client.post("/lab/ui/train", data={"model": "no-such-model", "regime": "mixed", "preset": "demo",
                                           "seed": "0"}, headers=hx)
    assert r.status_code == 422 and 'class="error"' in r.text and "no-such-model" in r.text
    r = client.post("/lab/ui/train", data={"model": "tiny-bert", "regime": "mixed", "preset": "demo",
                                           "seed": "0", "limit": "abc"}, headers=hx)
    assert r.status_code == 422 and "whole number" in r.text
    r = client.post("/lab/ui/train", data={"model": "tiny-bert", "regime": "sideways", "preset": "demo",
                                           "seed": "0"}, headers=hx)
    assert r.status_code == 422 and "regime" in r.text
    r = client.post("/lab/ui/train", data={"model": "tiny-bert", "seed": "x"}, headers=hx)
    assert r.status_code == 422 and 'class="error"' in r.text and "seed" in r.text
    r = client.post("/lab/ui/evaluate", data={"split": "test"}, headers=hx)
    assert r.status_code == 422 and "at least one checkpoint" in r.text
    r = client.post("/lab/ui/evaluate", data={"checkpoints": ["ghost"], "split": "test"}, headers=hx)
    assert r.status_code == 404 and "ghost" in r.text


# ------------------------------------------------------------------------------------------ real jobs

TRAIN = {"model": "tiny-bert", "preset": "custom", "epochs": 1, "max_length": 64,
         "dataset": {"source": "bundled", "split": "train", "limit": 16}}
EVAL_DATA = {"source": "bundled", "split": "test", "limit": 16}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, real_rms: Any) -> Any:
    """tiny-bert trained in the three regimes (real worker processes: the session's `real_rms`, so the train
    jobs asked for here are cache hits), then evaluated together."""
    from app.main import create_app
    from tests.app.neurons.pipeline import settings_from

    settings = settings_from(real_rms.trained, tmp_path_factory.mktemp("lab"), concurrency=3)
    with app_client(create_app(settings)) as c:
        get = lambda job_id: c.get(f"/api/jobs/{job_id}").json()  # noqa: E731
        jobs = {}
        for regime in REGIMES:
            r = c.post("/api/jobs", json={"kind": "train", "params": {**TRAIN, "regime": regime}})
            assert r.status_code == 202, r.text
            jobs[regime] = r.json()["id"]
        done = {regime: wait_job(get, job_id, timeout=600) for regime, job_id in jobs.items()}
        for regime, job in done.items():
            assert job["status"] == "succeeded", f"{regime}: {job['error']}\n{job['log_tail']}"
        cks = {regime: job["result_key"] for regime, job in done.items()}
        r = c.post("/api/jobs", json={"kind": "evaluate", "params": {"checkpoints": list(cks.values()),
                                                                     "dataset": EVAL_DATA}})
        assert r.status_code == 202, r.text
        ev = wait_job(get, r.json()["id"], timeout=600)
        assert ev["status"] == "succeeded", f"{ev['error']}\n{ev['log_tail']}"
        yield c, cks, ev["result_key"]


@pytest.mark.slow
def test_real_jobs_api_pages_and_launch_forms(trained: Any) -> None:
    c, cks, key = trained
    store = c.app.state.services.store
    listed = {x["id"]: x for x in c.get("/api/lab/checkpoints").json()["checkpoints"]}
    assert set(listed) == set(cks.values())
    for regime, ck in cks.items():
        assert listed[ck]["regime"] == regime and listed[ck]["base_model"] == "tiny-bert"
        assert listed[ck]["test"]["result_key"] == key
        hist = c.get(f"/api/lab/checkpoints/{ck}/history").json()["rows"]
        stored = store.query("SELECT step FROM training_history WHERE checkpoint = ? ORDER BY step", [ck])
        assert [h["step"] for h in hist] == [s["step"] for s in stored] and hist
        assert any(h["eval_loss"] is not None for h in hist)
        metrics = listed[ck]["metrics"]
        assert metrics["steps"] >= 1 and 0.0 <= (metrics.get("final_eval_acc") or 0.0) <= 1.0
    data = c.get(f"/api/lab/evaluations/{key}").json()
    stored = store.query("SELECT checkpoint, subset, accuracy FROM eval_subsets WHERE result_key = ?", [key])
    got = {(s["checkpoint"], s["subset"]): s for s in data["subsets"]}
    assert len(got) == len(stored) > 3
    for s in stored:
        g = got[(s["checkpoint"], s["subset"])]
        assert g["accuracy"] == pytest.approx(s["accuracy"])
        assert g["ci_lo"] <= g["accuracy"] <= g["ci_hi"]
    assert {t["subset"] for t in data["transfer"]} >= {"all"}
    for ck in cks.values():
        assert len(data["reliability"][ck]) > 0
    flips = c.get(f"/api/lab/evaluations/{key}/flips", params={"a": cks["mixed"], "b": cks["helpful"]}).json()
    n = store.scalar("SELECT count(*) FROM eval_items x JOIN eval_items y USING (result_key, item_id) WHERE "
                     "x.result_key = ? AND x.checkpoint = ? AND y.checkpoint = ? AND x.correct <> y.correct",
                     [key, cks["mixed"], cks["helpful"]])
    assert flips["n_flipped"] == n == len(flips["items"])
    cmp = c.get("/api/lab/compare/tiny-bert").json()
    assert cmp["result_key"] == key and len(cmp["evaluated"]) == 3
    all_row = next(e for e in cmp["subsets"] if e["subset"] == "all")
    assert set(all_row["regimes"]) == set(REGIMES)
    assert all_row["regimes"]["mixed"]["mean"] == pytest.approx(got[(cks["mixed"], "all")]["accuracy"])
    for url in (f"/lab/rm/{cks['mixed']}", "/lab/compare/tiny-bert", "/lab/runs", "/lab"):
        r = c.get(url)
        assert r.status_code == 200, url
        for name in re.findall(r'data-plot="plot-([a-z]+)-spec"', r.text):
            spec = _spec(r.text, name)
            for t in spec["data"]:
                for v in t.get("y") or []:
                    assert v is None or isinstance(v, str | list) or math.isfinite(v)
    html = c.get("/lab/compare/tiny-bert").text
    assert [t["name"] for t in _spec(html, "accuracy")["data"]] == list(REGIMES)
    # The launch forms queue real jobs: the same evaluation again is a cache hit, 'all' is three jobs.
    hx = {"HX-Request": "true"}
    r = c.post("/lab/ui/evaluate", data={"checkpoints": list(cks.values()), "split": "test", "limit": "16"},
               headers=hx)
    assert r.status_code == 200 and 'class="job-status"' in r.text
    assert "(cached result)" in r.text  # the same evaluation as the fixture's: a cache hit
    r = c.post("/lab/ui/train", data={"model": "minilm-l6", "model_text": "tiny-bert", "regime": "all",
                                      "preset": "demo", "seed": "5", "limit": "4"}, headers=hx)
    assert r.status_code == 200 and r.text.count('class="job-status"') == 3
    jobs = [j for j in c.get("/api/jobs", params={"kind": "train"}).json() if j["params"]["seed"] == 5]
    assert sorted(j["params"]["regime"] for j in jobs) == sorted(REGIMES)
    assert {j["params"]["model"] for j in jobs} == {"tiny-bert"}
    assert all(j["params"]["dataset"]["limit"] == 4 and j["params"]["preset"] == "demo" for j in jobs)
    for j in jobs:
        c.post(f"/api/jobs/{j['id']}/cancel")


def test_runs_headline_is_the_per_type_mean_not_the_item_weighted_accuracy(client: TestClient,
                                                                            seeded: dict[str, Any]) -> None:
    """One number per RM weighs helpful and harmless alike; the item-weighted overall stays, muted."""
    listed = {c["id"]: c for c in client.get("/api/lab/checkpoints").json()["checkpoints"]}
    checked = 0
    for ck, c in listed.items():
        if not c["test"] or c["test"]["result_key"] != lab.FULL:
            continue
        mine = [s for s in seeded["subsets"] if s["checkpoint"] == ck and s["subset"] != lab.OVERALL]
        by_type: dict[str, list[tuple[float, int]]] = {}
        for s in mine:
            by_type.setdefault(s["subset_type"], []).append((s["accuracy"], s["n_items"]))
        want = {t: sum(a * n for a, n in v) / sum(n for _, n in v) for t, v in by_type.items()}
        assert c["test"]["by_type"] == pytest.approx(want)
        assert c["test"]["macro_accuracy"] == pytest.approx(sum(want.values()) / len(want))
        assert c["test"]["accuracy"] == pytest.approx(_row(seeded, ck, lab.OVERALL)["accuracy"])
        checked += 1
    assert checked >= 5
    page = client.get("/lab/runs").text
    assert "per-type mean" in page and 'class="num macro-acc"' in page
