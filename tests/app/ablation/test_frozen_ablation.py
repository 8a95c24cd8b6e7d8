"""Ablations leave layers frozen in training out of what they select: live toggles by dashboard part, and the
`frozen_layers` the API records on an ablate job (which the worker leaves out of A-C's sets unless
`include_frozen`). Captures are seeded (`tests/factories/neurons.py`) with `settings.freeze_layers = 2` in
the checkpoints' meta; live toggles go to the fake live pool; jobs are only queued (no supervisor)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.main import create_app
from tests.conftest import make_settings
from tests.factories.ablation import FakeLivePool
from tests.factories.http import app_client
from tests.factories.neurons import add_three_regimes, training_meta
from workers.neurons import selection as sel

FROZEN, PLAIN = "frozen-model", "plain-model"
SHAPE = (6, 16)
PROBE = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("ablation-frozen"))
    with app_client(create_app(settings, start_supervisor=False)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        pool = client.app.state.live_pool = FakeLivePool()  # type: ignore[attr-defined]
        frozen = add_three_regimes(services, base_model=FROZEN, shape=SHAPE, meta=training_meta(freeze_layers=2))
        plain = add_three_regimes(services, base_model=PLAIN, shape=SHAPE)
        yield SimpleNamespace(client=client, services=services, pool=pool,
                              frozen={r: c.checkpoint for r, c in frozen.items()},
                              plain={r: c.checkpoint for r, c in plain.items()})


def _toggled(world: SimpleNamespace, ck: str, **query: Any) -> np.ndarray:
    r = world.client.get(f"/api/live/{ck}/toggle", params={"probe_limit": PROBE, **query})
    assert r.status_code == 200, r.text
    return sel.dict_to_mask(r.json()["neurons"], SHAPE)


def _scores(world: SimpleNamespace, model: str, regime: str) -> np.ndarray:
    body = world.client.get(f"/api/neurons/{model}/scores", params={"regime": regime}).json()
    return np.array(body["scores"], dtype=np.float64)


def test_toggles_by_part_leave_frozen_layers_out(world: SimpleNamespace) -> None:
    ck = world.frozen["mixed"]
    ex = sel.layer_exclusion(SHAPE, [0, 1])
    H, R = (sel.top_percent(_scores(world, FROZEN, r), 25.0, exclude=ex).mask for r in ("helpful", "harmless"))
    shared = _toggled(world, ck, part="shared", p=25)
    assert not shared[:2].any()
    np.testing.assert_array_equal(shared, H & R)
    oldH, oldR = (sel.top_percent(_scores(world, FROZEN, r), 25.0).mask for r in ("helpful", "harmless"))
    old = _toggled(world, ck, part="shared", p=25, include_frozen="true")
    np.testing.assert_array_equal(old, oldH & oldR)
    assert old[:2].any()  # the old shared set held frozen neurons
    # a named layer of a frozen part is empty; neurons named directly are switched off as asked
    assert not _toggled(world, ck, part="helpful", p=25, layer=0).any()
    assert _toggled(world, ck, neurons='{"0": [3]}')[0, 3]


def test_dashboard_panel_carries_the_switch_and_the_partial_says_so(world: SimpleNamespace) -> None:
    c = world.client
    panel = c.get("/ui/ablation/panel", params={"base_model": FROZEN, "include_frozen": "true"})
    assert panel.status_code == 200
    assert re.search(r'<input type="hidden" name="include_frozen" value="true">', panel.text)
    off = c.get("/ui/ablation/panel", params={"base_model": FROZEN})
    assert re.search(r'<input type="hidden" name="include_frozen" value="">', off.text)
    ck = world.frozen["mixed"]
    on = c.get(f"/ui/live/{ck}", params={"part": "shared", "p": 25, "include_frozen": "true", "probe_limit": PROBE})
    assert on.status_code == 200 and "layers frozen in training included" in on.text
    default = c.get(f"/ui/live/{ck}", params={"part": "shared", "p": 25, "probe_limit": PROBE})
    assert "layers frozen in training included" not in default.text  # (the model is named frozen-model)


def _queued(world: SimpleNamespace, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    job, cached = world.services.jobs.submit("ablate", params)
    assert not cached
    return dict(job.params), job.result_key


@pytest.mark.parametrize(("experiment", "regime"), [("A", "helpful"), ("B", "harmless"), ("C", "mixed")])
def test_ablate_jobs_record_the_frozen_layers_they_leave_out(world: SimpleNamespace, experiment: str,
                                                             regime: str) -> None:
    base = {"experiment": experiment, "checkpoint": world.frozen[regime], "percents": [10.0],
            "limit_per_objective": 2, "random_seeds": [0]}
    params, key = _queued(world, {**base, "frozen_layers": [5]})  # a client's value is dropped
    assert params["frozen_layers"] == [0, 1] and params["include_frozen"] is False
    included, key2 = _queued(world, {**base, "include_frozen": True})
    assert included["frozen_layers"] == [0, 1] and included["include_frozen"] is True and key2 != key
    plain, _ = _queued(world, {**base, "checkpoint": world.plain[regime]})
    assert plain["frozen_layers"] is None


def test_a_single_set_ablation_selects_nothing_and_records_no_frozen_layers(world: SimpleNamespace) -> None:
    params, _ = _queued(world, {"experiment": "single", "checkpoint": world.frozen["mixed"],
                                "neuron_set": {"0": [1, 2]}, "limit_per_objective": 2, "frozen_layers": [0]})
    assert params["frozen_layers"] is None and params["neuron_set"] == {"0": [1, 2]}
