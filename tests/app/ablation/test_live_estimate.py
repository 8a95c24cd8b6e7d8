"""The first-order estimate of a live toggle, from the same real warm worker as the exact answer."""

from __future__ import annotations

import math

import pytest

from app.main import create_app
from tests.app.neurons.pipeline import RealRMs, settings_from
from tests.factories.http import app_client

pytestmark = pytest.mark.slow

PROBE = 8


def test_the_estimate_reads_the_exact_answer_s_pairs_and_is_labelled(real_rms: RealRMs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    mixed = real_rms.checkpoints["mixed"]
    query = {"part": "shared", "p": "25", "probe_limit": str(PROBE)}
    with app_client(create_app(settings_from(real_rms.captured, tmp_path))) as client:
        first = client.get(f"/api/live/{mixed}/estimate", params=query)
        assert first.status_code == 200, first.text
        est = first.json()
        assert est["estimate"] is True and est["built_now"] is True and est["build_s"] > 0
        assert "first-order estimate" in est["caveat"] and est["n_neurons"] > 0
        again = client.get(f"/api/live/{mixed}/estimate", params=query).json()
        assert again["built_now"] is False and again["objectives"] == est["objectives"]
        exact = client.get(f"/api/live/{mixed}/toggle", params=query).json()
        assert set(est["objectives"]) == set(exact["objectives"]) == {"helpful", "harmless"}
        for o, e in est["objectives"].items():
            x = exact["objectives"][o]
            # Same probe pairs, same baseline: the estimate is of this toggle, not of some other data.
            assert e["n_pairs"] == x["n_pairs"] == PROBE
            assert e["baseline_accuracy"] == pytest.approx(x["baseline"]["accuracy"])
            assert e["baseline_mean_margin"] == pytest.approx(x["baseline"]["mean_margin"], rel=1e-4, abs=1e-5)
            assert math.isfinite(e["delta_margin"]) and -1.0 <= e["delta_accuracy"] <= 1.0
        # Bad input is refused by name, as for the exact toggle.
        bad = client.get(f"/api/live/{mixed}/estimate", params={"neurons": "{\"99\": [1]}"})
        assert bad.status_code in (404, 422) and "99" in bad.text


def _wait_run(client, rid: str, timeout: float = 120.0) -> dict:  # type: ignore[no-untyped-def, type-arg]
    import time

    deadline = time.monotonic() + timeout
    body = {"version": -1}
    while time.monotonic() < deadline:
        body = client.get(f"/api/live/runs/{rid}", params={"wait": 2, "since": body["version"]}).json()
        if body["state"] != "running" and body["ended"]:
            return body
    raise AssertionError(body)


def test_a_streamed_run_on_a_real_worker(real_rms: RealRMs, tmp_path) -> None:  # type: ignore[no-untyped-def]
    helpful = real_rms.checkpoints["helpful"]
    query = {"part": "shared", "p": "25", "probe_limit": "24"}  # 3 rounds of 8 pairs per objective
    with app_client(create_app(settings_from(real_rms.captured, tmp_path))) as client:
        started = client.get(f"/api/live/{helpful}/stream", params=query)
        assert started.status_code == 200, started.text
        run = _wait_run(client, started.json()["id"])
        assert run["state"] == "done" and run["rounds_computed"] == 6, run  # 3 rounds of the set, 3 of its control
        assert run["exact"]["final"] and run["exact"]["n_rounds"] == 3
        assert run["control"]["final"] and run["control"]["control_neurons"]
        answer = run["exact"]["answer"]
        exact = client.get(f"/api/live/{helpful}/toggle", params=query).json()
        for o, v in run["exact"]["objectives"].items():
            assert v["n_done"] == v["n_total"] == answer["objectives"][o]["n_pairs"]
            # The streamed answer is the exact answer: the same as the one-shot toggle of the same set.
            assert v["delta_margin"] == pytest.approx(exact["objectives"][o]["delta"]["margin"], abs=1e-9)
            assert v["delta_accuracy"] == pytest.approx(exact["objectives"][o]["delta"]["accuracy"])
            lo, hi = v["delta_margin_ci"]
            assert lo <= v["delta_margin"] <= hi
        t = run["timings"]
        assert t["estimate_ms"] >= 0 and t["first_round_ms"] <= t["exact_ms"] <= t["total_ms"]

        # A stopped run stops on the worker: fewer rounds than it had.
        big = client.get(f"/api/live/{helpful}/stream", params={**query, "p": "50", "probe_limit": "512"}).json()
        client.delete(f"/api/live/runs/{big['id']}")
        stopped = _wait_run(client, big["id"])
        assert stopped["state"] == "cancelled"
        n_rounds = stopped["exact"]["n_rounds"] if stopped["exact"] else None
        done = stopped["rounds_computed"]
        assert done is not None and (n_rounds is None or done < 2 * n_rounds)


def test_the_capture_job_left_the_estimator_table_a_new_worker_loads(real_rms: RealRMs,  # type: ignore[no-untyped-def]
                                                                      tmp_path) -> None:
    mixed = real_rms.checkpoints["mixed"]
    query = {"part": "helpful", "p": "25"}  # the default probe set the capture job prepared
    settings = settings_from(real_rms.captured, tmp_path)
    with app_client(create_app(settings)) as client:
        est = client.get(f"/api/live/{mixed}/estimate", params=query).json()
        assert est["cached"] is True and est["built_now"] is False, est
    store = settings.artifact_store_client()
    assert len([k for k in store.fs.ls(store.root + "/estimates")]) >= 3  # one per captured RM
