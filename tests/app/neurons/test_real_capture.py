"""End to end: tiny-bert RMs trained in three regimes and captured by real jobs, then served by the API.

The one neuron test on real jobs (the session's `real_rms`, asked for again here as cache hits); every
other route and page test runs on seeded rows
(test_routes.py). It checks that what a real capture writes is what the API reads: the scores equal a
numpy recomputation from the raw DuckDB rows, the overlap equals `top_percent` on those scores, and the
dashboard and a neuron page render.
"""

from __future__ import annotations

import numpy as np
import pytest

from app.main import create_app
from tests.app.neurons.pipeline import REGIMES, RealRMs, settings_from, train_and_capture
from tests.factories.http import app_client
from workers.contract.vocab import STAT_COLUMN, Stat
from workers.neurons import selection as sel

MODEL = "tiny-bert"
OWN = {"helpful": ["helpful"], "harmless": ["harmless"], "mixed": ["helpful", "harmless"]}


@pytest.mark.slow
def test_real_captures_are_served(tmp_path_factory: pytest.TempPathFactory, real_rms: RealRMs) -> None:
    settings = settings_from(real_rms.captured, tmp_path_factory.mktemp("neurons-real"))
    with app_client(create_app(settings)) as client:
        checkpoints = train_and_capture(client)
        store = client.app.state.services.store  # type: ignore[attr-defined]
        captures = client.get("/api/neurons/captures").json()
        assert {r["regime"]: r["checkpoint"] for r in captures} == checkpoints
        assert all((r["n_layers"], r["n_neurons"]) == (2, 128) for r in captures)  # tiny-bert: 2 × 128 MLP

        picks = {}
        for regime in REGIMES:
            rows = store.query(f"SELECT layer, neuron, side, objective, n_tokens, {STAT_COLUMN[Stat.A]} AS x"
                               " FROM neuron_stats WHERE checkpoint = ? AND hook = 'down_proj_input'",
                               [checkpoints[regime]])
            num = {s: np.zeros((2, 128)) for s in ("chosen", "rejected")}
            den = {s: np.zeros((2, 128)) for s in ("chosen", "rejected")}
            for r in rows:
                if r["objective"] in OWN[regime]:
                    num[r["side"]][r["layer"], r["neuron"]] += r["n_tokens"] * r["x"]
                    den[r["side"]][r["layer"], r["neuron"]] += r["n_tokens"]
            want = sel.combined_score(num["chosen"] / den["chosen"], num["rejected"] / den["rejected"])
            got = client.get(f"/api/neurons/{MODEL}/scores", params={"regime": regime}).json()["scores"]
            np.testing.assert_allclose(np.array(got), want, rtol=1e-10, atol=1e-12)
            picks[regime] = sel.top_percent(want, 10.0)

        ov = client.get(f"/api/neurons/{MODEL}/overlap", params={"p": 10}).json()
        assert ov["checkpoints"] == checkpoints
        H, R, M = (picks[r].mask for r in REGIMES)
        assert ov["sizes"]["shared"] == int((H & R).sum()) and ov["sizes"]["mixed"] == int(M.sum())
        assert all(ov["selection"][r]["selected"] == picks[r].selected for r in REGIMES)

        assert client.get(f"/models/{MODEL}/dashboard").status_code == 200
        page = client.get(f"/models/{MODEL}/neurons/1/5")
        assert page.status_code == 200 and page.text.count('class="example-group"') > 0
