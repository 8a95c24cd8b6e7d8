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
