"""Numbers that could mislead carry their caveat: the normalised Δ near chance, one transferability definition."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.ablation.service import normalised_is_meaningful
from app.web.glossary import TERMS


@pytest.mark.parametrize(("acc0", "n", "shown"), [
    (0.90, 100, True),    # far above chance
    (0.55, 100, False),   # 5 points above 50, CI half-width ~9.8: within noise
    (0.55, 10_000, True),  # the same accuracy on many items: above chance for sure
    (0.45, 1000, False),  # below chance: the ratio flips sign
    (0.50, 1000, False),  # at chance: division by ~0
    (None, 100, False), (0.9, 0, False), (float("nan"), 100, False),
])
def test_normalised_delta_is_shown_only_clearly_above_chance(acc0: float | None, n: int, shown: bool) -> None:
    assert normalised_is_meaningful({"acc0": acc0, "n_items": n}) is shown


def test_the_glossary_defines_each_term_once_and_pages_link_it(client: TestClient) -> None:
    anchors = [a for a, _, _ in TERMS]
    assert len(anchors) == len(set(anchors))
    assert {"A", "C", "P", "S", "theta", "jaccard", "transferability", "hypergeometric"} <= set(anchors)
    html = client.get("/glossary").text
    for a in anchors:
        assert re.search(rf'<dt id="{a}">', html)
    assert "|HH ∧ (HE ∨ HA)| / |HE ∨ HA|" in html
