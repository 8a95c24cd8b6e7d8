"""A capture larger than the dashboard's scatter may draw: the page stays bounded, its numbers stay whole.

Three RMs of 4 × 4,096 neurons (16,384, over three times `SCATTER_MAX_POINTS`) are ingested for real from
columnar tables (tests/factories/neurons.py). The scatter draws at most the cap, says so on the page, and
every count, overlap and threshold the page and the API show equals an independent numpy computation on
all rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.main import create_app
from app.neurons.figures import SCATTER_MAX_POINTS, scatter_sample
from tests.conftest import make_settings
from tests.factories.http import app_client
from tests.factories.neurons import add_large_three_regimes
from workers.contract.vocab import STAT_COLUMN, Stat
from workers.neurons import selection as sel

MODEL = "large-model"
SHAPE = (4, 4096)
OWN = {"helpful": ["helpful"], "harmless": ["harmless"], "mixed": ["helpful", "harmless"]}


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("large"))
    with app_client(create_app(settings, start_supervisor=False)) as client:
        captured = add_large_three_regimes(client.app.state.services, shape=SHAPE,  # type: ignore[attr-defined]
                                           base_model=MODEL)
        yield SimpleNamespace(client=client, tables={r: t for r, (_, t) in captured.items()})


def _scores(table: Any, stat: str, objectives: list[str]) -> np.ndarray:
    """S from all rows: token-weighted mean per side over the objectives, then the mean of the sides."""
    cols = {k: table.column(k).to_numpy(zero_copy_only=False)
            for k in ("objective", "side", "layer", "neuron", "n_tokens", STAT_COLUMN[Stat(stat)])}
    flat = cols["layer"] * SHAPE[1] + cols["neuron"]
    per_side = []
    for side in ("chosen", "rejected"):
        rows = np.isin(cols["objective"], objectives) & (cols["side"] == side)
        n = cols["n_tokens"][rows].astype(float)
        num = np.bincount(flat[rows], weights=n * cols[STAT_COLUMN[Stat(stat)]][rows], minlength=flat.max() + 1)
        per_side.append(num / np.bincount(flat[rows], weights=n, minlength=flat.max() + 1))
    return sel.combined_score(*per_side).reshape(SHAPE)


def _spec(html: str, spec_id: str) -> dict[str, Any]:
    m = re.search(rf'<script type="application/json" id="{spec_id}">(.*?)</script>', html, re.S)
    assert m, spec_id
    return json.loads(m.group(1))  # type: ignore[no-any-return]


@pytest.mark.parametrize("p", [10.0, 45.0])
def test_the_scatter_is_bounded_and_every_number_is_computed_on_all_rows(large: SimpleNamespace, p: float) -> None:
    H, R, M = (sel.top_percent(_scores(large.tables[r], "A", OWN[r]), p) for r in ("helpful", "harmless", "mixed"))
    want = {"helpful": H.mask, "harmless": R.mask, "mixed": M.mask, "helpful_specific": H.mask & ~R.mask,
            "harmless_specific": R.mask & ~H.mask, "shared": H.mask & R.mask}

    ov = large.client.get(f"/api/neurons/{MODEL}/overlap", params={"p": p}).json()
    assert ov["sizes"] == {k: int(m.sum()) for k, m in want.items()}
    assert ov["layer_counts"] == {k: m.sum(axis=1).tolist() for k, m in want.items()}
    assert ov["venn"]["HRM"] == int((H.mask & R.mask & M.mask).sum())
    assert ov["jaccard"]["helpful_harmless"] == pytest.approx(sel.set_jaccard(H.mask, R.mask))
    assert ov["selection"]["helpful"]["threshold"] == pytest.approx(H.threshold, rel=1e-12)

    r = large.client.get(f"/models/{MODEL}/dashboard", params={"p": p})
    assert r.status_code == 200, r.text
    html = r.text
    assert len(r.content) < 1_000_000
    scatter = _spec(html, "plot-scatter-spec")
    drawn = [tuple(cd) for t in scatter["data"] for cd in t["customdata"]]
    assert len(drawn) == scatter["sample"]["drawn"] <= SCATTER_MAX_POINTS
    assert len(set(drawn)) == len(drawn)
    assert scatter["sample"]["total"] == SHAPE[0] * SHAPE[1] and scatter["sample"]["sampled"]
    groups = scatter["sample"]["groups"]
    for part in ("helpful_specific", "harmless_specific", "shared"):
        assert groups[part]["total"] == ov["sizes"][part]  # group sizes: all neurons, not the drawn ones
        assert re.search(rf'<div data-part="{part}"><h4>[^<]*\({ov["sizes"][part]}\)</h4>', html)
    assert groups["neither"]["total"] == int((~H.mask & ~R.mask).sum())
    assert sum(g["shown"] for g in groups.values()) == len(drawn)
    assert f"a sample of <b>{len(drawn):,}</b> of the {SHAPE[0] * SHAPE[1]:,} neurons" in html
    assert "only the drawing is sampled" in html
    # Each drawn point sits at its neuron's scores and in its own group's trace.
    h_x, r_y = _scores(large.tables["helpful"], "A", ["helpful"]), _scores(large.tables["harmless"], "A", ["harmless"])
    for t in scatter["data"]:
        for (layer, i), x, y in zip(t["customdata"], t["x"], t["y"], strict=True):
            assert x == pytest.approx(h_x[layer, i], rel=1e-5) and y == pytest.approx(r_y[layer, i], rel=1e-5)
    shared = next(t for t in scatter["data"] if t["name"].startswith("shared"))
    assert all(want["shared"][a, b] for a, b in shared["customdata"])
    # The same view draws the same neurons.
    again = _spec(large.client.get(f"/models/{MODEL}/dashboard", params={"p": p}).text, "plot-scatter-spec")
    assert again == scatter


def test_neuron_page_of_a_large_capture(large: SimpleNamespace) -> None:
    r = large.client.get(f"/models/{MODEL}/neurons/3/4095")
    assert r.status_code == 200, r.text
    assert "Neuron 4095 of layer 3" in r.text and "4 layers × 4096 neurons" in r.text
    assert large.client.get(f"/models/{MODEL}/neurons/3/4096").status_code == 404


def test_scatter_sample_keeps_small_groups_whole_and_thins_large_ones() -> None:
    group = np.concatenate([np.full(100_000, 0), np.full(50, 1), np.full(3000, 2), np.full(2000, 3)])
    group = np.random.default_rng(0).permutation(group).reshape(5, -1)
    keep = scatter_sample(group, 4, cap=5000)
    shown = np.bincount(group[keep], minlength=4)
    assert keep.sum() == 5000
    assert shown.tolist() == [1650, 50, 1650, 1650]  # the 50 whole; the rest share what is left equally
    assert (scatter_sample(group, 4, cap=5000) == keep).all()  # deterministic
    smaller = scatter_sample(group, 4, cap=1000)
    assert smaller.sum() == 1000 and not (smaller & ~keep).any()  # a smaller cap draws a subset: stable views
    assert scatter_sample(group[:, :10], 4, cap=5000).all()  # at most the cap: everything
