"""Layers frozen in training are marked everywhere and left out of neuron selection unless asked.

Two base models are seeded with the *same* scores (`add_three_regimes` depends on seed and shape only):
`frozen-model`, whose three checkpoints record `settings.freeze_layers = 2` in their meta as a train job
does, and `plain-model`, trained without freezing. So the plain model's overlap is the old selection, and
every number of the frozen model's default overlap is checked against `top_percent` on the trainable
layers' scores alone (layers 2-5), computed here from the seeded rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html import unescape
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.main import create_app
from app.neurons import service
from tests.conftest import make_settings
from tests.factories import add_checkpoint
from tests.factories.http import app_client
from tests.factories.neurons import Capture, add_three_regimes, training_meta
from workers.contract.vocab import STAT_COLUMN, OverlapPart, SharedMode, Stat
from workers.neurons import selection as sel

FROZEN, PLAIN = "frozen-model", "plain-model"
SHAPE = (6, 16)
N_FROZEN = 2
TRAINABLE = (SHAPE[0] - N_FROZEN) * SHAPE[1]  # 64 neurons in layers 2-5
REGIMES = ("helpful", "harmless", "mixed")
OWN = {"helpful": ["helpful"], "harmless": ["harmless"], "mixed": ["helpful", "harmless"]}
PARTS = ("helpful", "harmless", "mixed", "helpful_specific", "harmless_specific", "shared")
VIEW_KEYS = {"base_model", "checkpoints", "frozen_layers", "include_frozen", "n_selectable"}


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    settings = make_settings(tmp_path_factory.mktemp("frozen"))
    with app_client(create_app(settings, start_supervisor=False)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        frozen = add_three_regimes(services, base_model=FROZEN, shape=SHAPE, example_neurons=[(0, 3)],
                                   meta=training_meta(freeze_layers=N_FROZEN))
        plain = add_three_regimes(services, base_model=PLAIN, shape=SHAPE, meta=training_meta(freeze_layers=0))
        yield SimpleNamespace(client=client, services=services, frozen=frozen, plain=plain)


def scores(capture: Capture, stat: str = "A") -> np.ndarray:
    """S from the seeded rows: token-weighted mean per side over the RM's own objectives, then the mean."""
    num = {s: np.zeros(SHAPE) for s in ("chosen", "rejected")}
    den = {s: np.zeros(SHAPE) for s in ("chosen", "rejected")}
    for r in capture.rows:
        if r["objective"] in OWN[capture.regime]:
            num[r["side"]][r["layer"], r["neuron"]] += r["n_tokens"] * r[STAT_COLUMN[Stat(stat)]]
            den[r["side"]][r["layer"], r["neuron"]] += r["n_tokens"]
    return sel.combined_score(num["chosen"] / den["chosen"], num["rejected"] / den["rejected"])


def trainable_top(capture: Capture, p: float, stat: str = "A") -> tuple[sel.Selection, np.ndarray]:
    """The expected default selection: top-p% of layers 2-5 alone, as a full-shape mask."""
    s = sel.top_percent(scores(capture, stat)[N_FROZEN:], p)
    mask = np.zeros(SHAPE, dtype=bool)
    mask[N_FROZEN:] = s.mask
    return s, mask


def overlap(world: SimpleNamespace, model: str, **params: Any) -> dict[str, Any]:
    r = world.client.get(f"/api/neurons/{model}/overlap", params=params)
    assert r.status_code == 200, r.text
    return r.json()  # type: ignore[no-any-return]


def numbers(body: dict[str, Any]) -> dict[str, Any]:
    """An overlap answer without what names its base model and view of freezing: the numbers."""
    return {k: v for k, v in body.items() if k not in VIEW_KEYS}


def text(html: str) -> str:
    return re.sub(r"\s+", " ", unescape(re.sub(r"<[^>]+>", " ", html)))


# -- the helper -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("meta", "n_layers", "want"), [
    (None, None, ()), ({}, None, ()), ({"settings": {}}, None, ()), ({"settings": {"freeze_layers": None}}, None, ()),
    ({"settings": {"freeze_layers": 0}}, None, ()), ({"settings": {"freeze_layers": 2}}, None, (0, 1)),
    ({"settings": {"freeze_layers": 5}}, 3, (0, 1, 2)), ({"freeze_layers": 1}, None, (0,)),
    ({"settings": {"freeze_layers": True}}, None, ()), ({"settings": {"freeze_layers": "2"}}, None, ()),
])
def test_frozen_layers_of_a_checkpoint_meta(meta: Any, n_layers: int | None, want: tuple[int, ...]) -> None:
    assert service.frozen_layers_of(meta, n_layers) == want


def test_frozen_layers_of_checkpoints_and_views_are_unions(world: SimpleNamespace) -> None:
    db, store = world.services.db, world.services.store
    assert service.checkpoint_frozen_layers(db=db, checkpoints=[c.checkpoint for c in world.frozen.values()]) \
        == (0, 1)
    assert service.checkpoint_frozen_layers(db=db, checkpoints=[world.plain["mixed"].checkpoint]) == ()
    one = add_checkpoint(world.services, base_model="x", meta=training_meta(freeze_layers=1))
    three = add_checkpoint(world.services, base_model="x", meta=training_meta(freeze_layers=3))
    none = add_checkpoint(world.services, base_model="x")
    assert service.checkpoint_frozen_layers(db=db, checkpoints=[one, three, none, "unknown"]) == (0, 1, 2)
    assert service.checkpoint_frozen_layers(db=db, checkpoints=[three], n_layers=2) == (0, 1)
    assert service.view_frozen_layers(store=store, db=db, base_model=FROZEN, seed=0) == (0, 1)
    assert service.view_frozen_layers(store=store, db=db, base_model=PLAIN, seed=0) == ()


# -- selection ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("p", "stat", "shared"), [(10.0, "A", "intersection"), (25.0, "P", "per_layer")])
def test_default_overlap_selects_only_from_trainable_layers(world: SimpleNamespace, p: float, stat: str,
                                                            shared: str) -> None:
    body = overlap(world, FROZEN, p=p, stat=stat, shared=shared)
    assert body["frozen_layers"] == [0, 1] and body["include_frozen"] is False
    assert body["n_selectable"] == TRAINABLE
    for part in PARTS:
        assert body["layer_counts"][part][:N_FROZEN] == [0, 0], part
    want = {r: trainable_top(world.frozen[r], p, stat) for r in REGIMES}
    for r, (s, mask) in want.items():
        got = body["selection"][r]
        assert got["requested"] == sel.requested_count(TRAINABLE, p)  # p% of the 64 trainable neurons
        assert (got["selected"], got["tied"]) == (s.selected, s.tied)
        assert got["threshold"] == pytest.approx(s.threshold, rel=1e-12)
        assert body["layer_counts"][r] == mask.sum(axis=1).tolist()
        assert body["sizes"][r] == s.selected
    H, R = want["helpful"][1], want["harmless"][1]
    parts = sel.specific_and_shared(H, R, mode=SharedMode(shared))
    for part, mask in parts.items():
        assert body["sizes"][part] == int(mask.sum()) and body["layer_counts"][part] == mask.sum(axis=1).tolist()
    # the chance model draws from the trainable neurons only
    assert body["significance"]["expected"] == pytest.approx(int(H.sum()) * int(R.sum()) / TRAINABLE)
    assert body["significance"]["observed"] == int((H & R).sum())


def test_compute_overlap_called_as_before_leaves_frozen_layers_out(world: SimpleNamespace) -> None:
    """Callers that pass only the old arguments get the default: frozen layers excluded."""
    ov = service.compute_overlap(store=world.services.store, db=world.services.db, base_model=FROZEN, p=10.0)
    for part, mask in ov.masks.items():
        assert not mask[:N_FROZEN].any(), part
    np.testing.assert_array_equal(ov.masks[OverlapPart.helpful], trainable_top(world.frozen["helpful"], 10.0)[1])
    assert ov.summary.frozen_layers == [0, 1]


@pytest.mark.parametrize("p", [10.0, 25.0])
def test_include_frozen_restores_the_old_selection(world: SimpleNamespace, p: float) -> None:
    included = overlap(world, FROZEN, p=p, include_frozen="true")
    assert included["frozen_layers"] == [0, 1] and included["include_frozen"] is True
    assert included["n_selectable"] == SHAPE[0] * SHAPE[1]
    assert numbers(included) == numbers(overlap(world, PLAIN, p=p))  # same scores, nothing left out
    for r in REGIMES:
        old = sel.top_percent(scores(world.frozen[r]), p)
        assert included["selection"][r]["selected"] == old.selected
        assert included["layer_counts"][r] == old.mask.sum(axis=1).tolist()
    # what freezing did: the old shared set held neurons of the frozen layers
    assert sum(included["layer_counts"]["shared"][:N_FROZEN]) > 0


@pytest.mark.parametrize("p", [10.0, 25.0])
def test_without_freezing_nothing_changes(world: SimpleNamespace, p: float) -> None:
    default, included = overlap(world, PLAIN, p=p), overlap(world, PLAIN, p=p, include_frozen="true")
    assert default["frozen_layers"] == [] and default["n_selectable"] == SHAPE[0] * SHAPE[1]
    assert numbers(default) == numbers(included)
    H, R, M = (sel.top_percent(scores(world.plain[r]), p) for r in REGIMES)
    for r, s in zip(REGIMES, (H, R, M), strict=True):
        assert default["selection"][r]["requested"] == s.requested
        assert default["layer_counts"][r] == s.mask.sum(axis=1).tolist()
    assert default["significance"]["expected"] == pytest.approx(H.selected * R.selected / (SHAPE[0] * SHAPE[1]))
    ov = service.compute_overlap(store=world.services.store, db=world.services.db, base_model=PLAIN, p=p)
    np.testing.assert_array_equal(ov.masks[OverlapPart.shared], H.mask & R.mask)


def test_named_sets_from_a_formula_leave_frozen_layers_out(world: SimpleNamespace) -> None:
    c = world.client
    body = c.post("/api/neuron-sets", json={"name": "fz-shared", "base_model": FROZEN, "part": "shared",
                                            "p": 25}).json()
    H, R = (trainable_top(world.frozen[r], 25.0)[1] for r in ("helpful", "harmless"))
    np.testing.assert_array_equal(sel.dict_to_mask(body["neurons"], SHAPE), H & R)
    assert body["formula"]["frozen_layers"] == [0, 1] and body["formula"]["include_frozen"] is False
    old = c.post("/api/neuron-sets", json={"name": "fz-shared-all", "base_model": FROZEN, "part": "shared", "p": 25,
                                           "include_frozen": True}).json()
    oldH, oldR = (sel.top_percent(scores(world.frozen[r]), 25.0).mask for r in ("helpful", "harmless"))
    np.testing.assert_array_equal(sel.dict_to_mask(old["neurons"], SHAPE), oldH & oldR)
    ck = world.frozen["mixed"].checkpoint
    top = c.post("/api/neuron-sets", json={"name": "fz-top", "checkpoint": ck, "p": 10}).json()
    s, mask = trainable_top(world.frozen["mixed"], 10.0)
    np.testing.assert_array_equal(sel.dict_to_mask(top["neurons"], SHAPE), mask)
    assert (top["formula"]["requested"], top["formula"]["selected"]) == (sel.requested_count(TRAINABLE, 10), s.selected)
    saved = c.post("/ui/neuron-sets", data={"name": "fz-ui-mixed", "base_model": FROZEN, "part": "mixed", "p": "10",
                                            "include_frozen": "true"})
    assert saved.status_code == 200, saved.text
    ui = c.get("/api/neuron-sets/fz-ui-mixed").json()
    np.testing.assert_array_equal(sel.dict_to_mask(ui["neurons"], SHAPE),
                                  sel.top_percent(scores(world.frozen["mixed"]), 10.0).mask)


# -- marking --------------------------------------------------------------------------------------------
def test_dashboard_says_which_layers_were_frozen_and_offers_the_switch(world: SimpleNamespace) -> None:
    page = world.client.get(f"/models/{FROZEN}/dashboard", params={"p": "10"})
    assert page.status_code == 200, page.text
    html, words = page.text, text(page.text)
    assert 'id="frozen-note"' in html and 'data-frozen-layers="0,1"' in html and 'data-included="false"' in html
    assert ("Layers 0–1 were frozen in training (embeddings too): their neurons are identical across the RMs and "
            "are left out of selection") in words
    switch = re.search(r'<a id="frozen-switch" href="([^"]+)">include them</a>', html)
    assert switch and "include_frozen=true" in unescape(switch.group(1))
    box = re.search(r"<input type=\"checkbox\" id=\"include-frozen\" name=\"include_frozen\" value=\"true\"([^>]*)>",
                    html)
    assert box and "checked" not in box.group(1)
    assert "the 64 neurons of the 4 trainable layers" in words
    requested = re.findall(r'<tr data-regime="\w+"><td>[^<]*</td><td class="num">(\d+)</td>', html)
    assert requested == [str(sel.requested_count(TRAINABLE, 10))] * 3
    spec = re.search(r'<script type="application/json" id="plot-layers-spec">(.*?)</script>', html, re.S)
    assert spec and '"shapes"' in spec.group(1) and "frozen in training (left out)" in spec.group(1)

    on = world.client.get(unescape(switch.group(1)))
    assert on.status_code == 200 and 'data-included="true"' in on.text
    assert "are included in this selection" in text(on.text)
    box = re.search(r'id="include-frozen" name="include_frozen" value="true"([^>]*)>', on.text)
    assert box and "checked" in box.group(1)
    back = re.search(r'<a id="frozen-switch" href="([^"]+)">leave them out</a>', on.text)
    assert back and "include_frozen" not in unescape(back.group(1))
    assert 'name="include_frozen" value="true"' in on.text.split('id="part-lists"', 1)[1]  # save-set forms


def test_dashboard_without_freezing_has_no_note_and_no_switch(world: SimpleNamespace) -> None:
    page = world.client.get(f"/models/{PLAIN}/dashboard")
    assert page.status_code == 200
    assert 'id="frozen-note"' not in page.text and 'id="include-frozen"' not in page.text
    assert "frozen in training" not in page.text


def test_neuron_page_of_a_frozen_layer_shows_the_badge(world: SimpleNamespace) -> None:
    page = world.client.get(f"/models/{FROZEN}/neurons/0/3")
    assert page.status_code == 200
    badge = re.search(r'<span class="status" id="frozen-badge"[^>]*>([^<]*)</span>', page.text)
    assert badge and badge.group(1) == "frozen in training"
    assert "Layer 0 was frozen in training (embeddings too) in every captured RM" in text(page.text)
    ranks = page.text.split('id="neuron-ranks"', 1)[1].split("</table>", 1)[0]
    assert ranks.count(">frozen</span>") == 3
    for url in (f"/models/{FROZEN}/neurons/2/3", f"/models/{PLAIN}/neurons/0/3"):
        other = world.client.get(url)
        assert other.status_code == 200 and 'id="frozen-badge"' not in other.text


def test_json_apis_carry_frozen_layers(world: SimpleNamespace) -> None:
    c = world.client
    for model, want in ((FROZEN, [0, 1]), (PLAIN, [])):
        rows = c.get("/api/neurons/captures", params={"base_model": model}).json()
        assert len(rows) == 3 and all(r["frozen_layers"] == want for r in rows)
        body = c.get(f"/api/neurons/{model}/scores", params={"regime": "harmless"}).json()
        assert body["frozen_layers"] == want
        assert overlap(world, model)["frozen_layers"] == want
