"""The study object: its plan, its key, and a real smoke study run through the API with real jobs."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.studies.pipeline import STAGES, expand_spec, plan_stage, recompute_command, results_of, study_key
from app.studies.presets import STUDY_PRESETS
from app.studies.schemas import StudyCreate, StudyResults
from workers.contract.vocab import JobKind


def test_spec_expands_the_preset_and_the_key_follows_every_field() -> None:
    spec = expand_spec(StudyCreate(preset="smoke"))
    assert spec["model"] == STUDY_PRESETS["smoke"].model and spec["seeds"] == [0]
    assert study_key(spec) == study_key(expand_spec(StudyCreate(preset="smoke")))
    assert study_key(spec) != study_key(expand_spec(StudyCreate(preset="smoke", seeds=[0, 1])))
    assert study_key(spec) != study_key(expand_spec(StudyCreate(preset="smoke", model="tiny-gpt2")))
    assert expand_spec(StudyCreate(preset="smoke", seeds=[2, 1, 2]))["seeds"] == [1, 2]


def test_each_stage_plans_its_jobs_from_the_results_before_it() -> None:
    spec = expand_spec(StudyCreate(preset="smoke", seeds=[0, 1]))
    train = plan_stage("train", spec, StudyResults(model=spec["model"], seeds=spec["seeds"]))
    assert len(train) == 6 and {j.kind for j in train} == {JobKind.train}
    assert {j.params["regime"] for j in train} == {"helpful", "harmless", "mixed"}
    assert all(j.params["dataset"]["limit"] == spec["train_limit"] for j in train)
    keys = {j.label: f"ck-{j.label}" for j in train}
    res = results_of(spec, keys)
    assert res.checkpoints["mixed"]["1"] == "ck-train/mixed/1"
    (ev,) = plan_stage("evaluate", spec, res)
    assert ev.params["checkpoints"] == [f"ck-train/{r}/{s}" for s in (0, 1) for r in ("helpful", "harmless", "mixed")]
    assert len(plan_stage("capture", spec, res)) == 6
    exps = plan_stage("experiments", spec, res)
    assert len(exps) == 2 * (3 + 3 + 1)  # A and B for every RM, C for each mixed RM
    assert all(j.params["percents"] == spec["dose_percents"] for j in exps if j.label.startswith("A/"))
    assert plan_stage("report", spec, res) == []
    assert results_of(spec, {"evaluate": "E", "capture/mixed/0": "C", "B/helpful/1": "X"}).ablations == {
        "B/helpful/1": "X"}


def test_the_recompute_command_quotes_a_hostile_model_name() -> None:
    spec = expand_spec(StudyCreate(preset="smoke", model="org/m; rm -rf ~"))
    assert recompute_command(spec) == "tension study --preset smoke --model 'org/m; rm -rf ~' --seed 0"


def _wait(client: TestClient, key: str, timeout: float = 420) -> dict[str, Any]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = client.get(f"/api/studies/{key}").json()
        if out["status"] != "running":
            return out  # type: ignore[no-any-return]
        time.sleep(0.5)
    raise AssertionError(f"study {key} still running after {timeout} s: {out['stage']}")


def test_bad_study_requests_are_refused_by_name(client: TestClient) -> None:
    r = client.post("/api/studies", json={"preset": "huge"})
    assert r.status_code == 422 and "preset" in r.text
    assert client.post("/api/studies", json={"preset": "smoke", "seeds": []}).status_code == 422
    assert client.get("/api/studies/abc123").status_code == 404
    assert client.post("/api/studies/abc123/cancel").status_code == 404
    home = client.get("/")
    assert home.status_code == 200 and "Run the demo study" in home.text and "minutes" in home.text


@pytest.mark.timeout(900)
def test_a_smoke_study_runs_every_stage_cancels_and_resumes(client: TestClient) -> None:
    first = client.post("/api/studies", json={"preset": "smoke"})
    assert first.status_code == 201, first.text
    key = first.json()["key"]
    assert first.json()["stage"] == "train" and len(first.json()["stages"][0]["jobs"]) == 3
    # Cancelling stops the study and its queued or running jobs.
    cancelled = client.post(f"/api/studies/{key}/cancel").json()
    assert cancelled["status"] == "cancelled"
    jobs = [client.get(f"/api/jobs/{j['job_id']}").json() for j in cancelled["stages"][0]["jobs"]]
    assert {j["status"] for j in jobs} <= {"cancelled", "succeeded"} and "cancelled" in {j["status"] for j in jobs}
    assert client.post(f"/api/studies/{key}/cancel").status_code == 409
    # Starting the same study again resumes it (200, same key): the cancelled jobs run again.
    again = client.post("/api/studies", json={"preset": "smoke"})
    assert again.status_code == 200 and again.json()["key"] == key and again.json()["status"] == "running"
    out = _wait(client, key)
    assert out["status"] == "succeeded", out["error"]
    assert [s["status"] for s in out["stages"]] == ["succeeded"] * len(STAGES)
    res = out["results"]
    assert {r: sorted(v) for r, v in res["checkpoints"].items()} == {r: ["0"] for r in ("helpful", "harmless", "mixed")}
    assert res["evaluation"] and len(res["captures"]) == 3 and len(res["ablations"]) == 7
    assert out["wall_s"] > 0 and all(s["wall_s"] is not None for s in out["stages"])
    # Every job of the study is an ordinary cached job: a second identical request reuses all of them.
    assert client.post("/api/studies", json={"preset": "smoke"}).json()["results"] == res
    # The home page is now the study's report, and the study list shows it.
    home = client.get("/")
    assert home.status_code == 200 and key in home.text and "Run the demo study" not in home.text
    assert key[:12] in client.get("/studies").text
    listed = client.get("/api/studies").json()
    assert [s["key"] for s in listed] == [key]


@pytest.mark.timeout(900)
def test_a_study_goes_on_after_an_api_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The study's state is its SQL row: an API that stops mid-study and starts again finishes it."""
    from app.main import create_app
    from tests.conftest import make_settings
    from tests.factories.http import app_client

    settings = make_settings(tmp_path)
    with app_client(create_app(settings, start_supervisor=False)) as before:
        out = before.post("/api/studies", json={"preset": "smoke", "seeds": [1]}).json()
        assert out["status"] == "running" and {j["status"] for j in out["stages"][0]["jobs"]} == {"queued"}
    with app_client(create_app(settings)) as after:
        done = _wait(after, out["key"])
        assert done["status"] == "succeeded", done["error"]
        assert done["results"]["checkpoints"]["mixed"] == {"1": done["results"]["checkpoints"]["mixed"]["1"]}
