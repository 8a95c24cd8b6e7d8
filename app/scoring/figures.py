"""Plotly figure specs of scoring results: pure dict builders, no DB access."""

from __future__ import annotations

from typing import Any

from workers.contract.vocab import Side


def reward_histogram(values: dict[Side, list[float]]) -> dict[str, Any]:
    """Overlaid histograms of chosen and rejected rewards."""
    return {
        "data": [{"type": "histogram", "x": values[side], "name": str(side), "opacity": 0.6, "nbinsx": 40}
                 for side in (Side.chosen, Side.rejected)],
        "layout": {"barmode": "overlay", "xaxis": {"title": {"text": "reward"}},
                   "yaxis": {"title": {"text": "texts"}}, "margin": {"t": 20}},
    }
