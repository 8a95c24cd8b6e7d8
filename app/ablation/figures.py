"""Plotly figure specs (plain dicts, embedded as JSON) for the ablation pages: pure, no database access.

Rows are `ablation_results` rows as dicts (`app.ablation.queries.results`); the live answer is a
`LiveToggleAnswer` dumped to JSON form.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from workers.contract.vocab import Objective, OverlapPart, SelectionMethod

RANDOM = "random"
"""The `condition` of experiment A's random selections (its control, beside the selection methods)."""
ALL_ITEMS = "all"
"""The `grp` of a row over every probe item (the others are `objective:<o>` and `subset:<name>`)."""
SUBSET_PREFIX = "subset:"

OBJECTIVE_COLOURS: dict[str, str] = {Objective.helpful: "#1c7ed6", Objective.harmless: "#e8590c"}
METHOD_COLOURS: dict[str, str] = {SelectionMethod.magnitude: "#c92a2a", SelectionMethod.change: "#2b8a3e",
                                  RANDOM: "#868e96"}
SET_PARTS: tuple[OverlapPart, ...] = (OverlapPart.helpful_specific, OverlapPart.harmless_specific, OverlapPart.shared)
"""The sets of experiment C, in display order."""
SET_COLOURS: dict[str, str] = {OverlapPart.helpful_specific: "#1c7ed6", OverlapPart.harmless_specific: "#e8590c",
                               OverlapPart.shared: "#7048e8"}
SET_LABELS: dict[str, str] = {OverlapPart.helpful_specific: "helpful-specific",
                              OverlapPart.harmless_specific: "harmless-specific", OverlapPart.shared: "shared"}
OTHER_COLOUR = "#495057"


def pct(x: float | None) -> float | None:
    """A fraction as a percentage; None (n/a) for a missing or non-finite value."""
    return None if x is None or not math.isfinite(x) else 100.0 * x


def random_by_p(rows: list[dict[str, Any]]) -> dict[float, list[dict[str, Any]]]:
    """Experiment A's random selections over all items, grouped by p (ascending)."""
    by_p: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["condition"] == RANDOM and r["grp"] == ALL_ITEMS:
            by_p[float(r["p"])].append(r)
    return {p: by_p[p] for p in sorted(by_p)}


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value) of the random seeds' accuracies."""
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def shift_spec(answer: dict[str, Any]) -> dict[str, Any]:
    """Grouped bars per objective: Δ mean chosen / rejected reward and Δ margin (reward units, left) and
    Δ pairwise accuracy (percentage points, right panel)."""
    data: list[dict[str, Any]] = []
    for o, v in answer["objectives"].items():
        d = v["delta"]
        colour = OBJECTIVE_COLOURS.get(o, OTHER_COLOUR)
        data.append({"type": "bar", "name": f"{o} objective", "legendgroup": o, "marker": {"color": colour},
                     "x": ["Δ chosen", "Δ rejected", "Δ margin"], "y": [d["chosen"], d["rejected"], d["margin"]],
                     "xaxis": "x", "yaxis": "y",
                     "hovertemplate": f"{o}: " + "%{x} %{y:.4g}<extra></extra>"})
        data.append({"type": "bar", "name": f"{o} objective", "legendgroup": o, "showlegend": False,
                     "marker": {"color": colour}, "x": ["Δ accuracy"], "y": [100 * d["accuracy"]],
                     "xaxis": "x2", "yaxis": "y2",
                     "hovertemplate": f"{o}: " + "Δ accuracy %{y:.2f} pp<extra></extra>"})
    layout = {"barmode": "group", "margin": {"t": 30, "r": 10}, "legend": {"orientation": "h", "y": 1.15},
              "xaxis": {"domain": [0, 0.68]}, "xaxis2": {"domain": [0.78, 1], "anchor": "y2"},
              "yaxis": {"title": {"text": "Δ mean reward"}, "zeroline": True},
              "yaxis2": {"title": {"text": "Δ accuracy (pp)"}, "anchor": "x2", "zeroline": True}}
    return {"data": data, "layout": layout}


def dose_spec(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Experiment A: accuracy (%) against p per selection; random as mean ± std over seeds (a band);
    each score-based set's layer-matched random control as a dashed line."""
    rows = [r for r in rows if r["grp"] == ALL_ITEMS]
    data: list[dict[str, Any]] = []
    rnd = {p: [float(r["acc"]) for r in rs if r["acc"] is not None] for p, rs in random_by_p(rows).items()}
    rnd = {p: accs for p, accs in rnd.items() if accs}
    if rnd:
        ps = list(rnd)
        stats = [mean_std(rnd[p]) for p in ps]
        lo = [100 * (m - s) for m, s in stats]
        hi = [100 * (m + s) for m, s in stats]
        data.append({"type": "scatter", "mode": "lines", "x": ps, "y": hi, "line": {"width": 0},
                     "name": "random + std", "legendgroup": RANDOM, "showlegend": False, "hoverinfo": "skip"})
        data.append({"type": "scatter", "mode": "lines", "x": ps, "y": lo, "line": {"width": 0},
                     "fill": "tonexty", "fillcolor": "rgba(134,142,150,0.25)", "name": "random ± std over seeds",
                     "legendgroup": RANDOM, "hoverinfo": "skip"})
        data.append({"type": "scatter", "mode": "lines+markers", "x": ps, "y": [100 * m for m, _ in stats],
                     "name": f"random (mean of {max(len(v) for v in rnd.values())} seeds)", "legendgroup": RANDOM,
                     "line": {"color": METHOD_COLOURS[RANDOM]},
                     "hovertemplate": "random p=%{x}%: %{y:.2f}%<extra></extra>"})
    for method in sorted({r["condition"] for r in rows} - {RANDOM}):
        mrows = sorted((r for r in rows if r["condition"] == method), key=lambda r: float(r["p"]))
        ps = [float(r["p"]) for r in mrows]
        colour = METHOD_COLOURS.get(method, OTHER_COLOUR)
        plus = [None if r["ci_hi"] is None or r["delta"] is None else 100 * (r["ci_hi"] - r["delta"]) for r in mrows]
        minus = [None if r["ci_lo"] is None or r["delta"] is None else 100 * (r["delta"] - r["ci_lo"]) for r in mrows]
        data.append({"type": "scatter", "mode": "lines+markers", "x": ps, "y": [pct(r["acc"]) for r in mrows],
                     "name": f"{method}-based", "legendgroup": method, "line": {"color": colour},
                     "error_y": {"type": "data", "array": plus, "arrayminus": minus, "visible": True,
                                 "thickness": 1},
                     "hovertemplate": f"{method} " + "p=%{x}%: %{y:.2f}%<extra></extra>"})
        matched = [(float(r["p"]), r["acc0"] + r["random_delta_mean"]) for r in mrows
                   if r["random_delta_mean"] is not None and r["acc0"] is not None]
        if matched:
            data.append({"type": "scatter", "mode": "lines", "x": [m[0] for m in matched],
                         "y": [100 * m[1] for m in matched], "name": f"layer-matched random of {method}",
                         "legendgroup": method, "line": {"color": colour, "dash": "dash"},
                         "hovertemplate": f"layer-matched random of {method} " + "p=%{x}%: %{y:.2f}%<extra></extra>"})
    layout = {"margin": {"t": 20}, "xaxis": {"title": {"text": "p: ablated neurons (% of all MLP neurons)"}},
              "yaxis": {"title": {"text": "pairwise accuracy (%)"}}, "legend": {"orientation": "h", "y": -0.2}}
    return {"data": data, "layout": layout}


def subsets_spec(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Experiment B: Δ accuracy per subset with its bootstrap CI, the random control beside it."""
    subs = [r for r in rows if str(r["grp"]).startswith(SUBSET_PREFIX)]
    x = [str(r["grp"]).split(":", 1)[1] for r in subs]
    data = [
        {"type": "bar", "name": "magnitude top-p", "x": x, "y": [pct(r["delta"]) for r in subs],
         "marker": {"color": [OBJECTIVE_COLOURS.get(r["group_type"] or "", OTHER_COLOUR) for r in subs]},
         "error_y": {"type": "data", "visible": True,
                     "array": [None if r["ci_hi"] is None else 100 * (r["ci_hi"] - r["delta"]) for r in subs],
                     "arrayminus": [None if r["ci_lo"] is None else 100 * (r["delta"] - r["ci_lo"]) for r in subs]}},
        {"type": "bar", "name": "layer-matched random", "x": x, "y": [pct(r["random_delta_mean"]) for r in subs],
         "marker": {"color": "#adb5bd"},
         "error_y": {"type": "data", "visible": True, "array": [pct(r["random_delta_std"]) for r in subs]}},
    ]
    return {"data": data, "layout": {"barmode": "group", "margin": {"t": 20, "b": 120},
                                     "yaxis": {"title": {"text": "Δ accuracy (pp)"}}}}


def sets_spec(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Experiment C: Δ accuracy (all items) of each set at each p, beside its random control."""
    alls = [r for r in rows if r["grp"] == ALL_ITEMS]
    data = []
    for name in SET_PARTS:
        rs = sorted((r for r in alls if r["condition"] == name), key=lambda r: float(r["p"]))
        if not rs:
            continue
        xs = [f"p={float(r['p']):g}%" for r in rs]
        data.append({"type": "bar", "name": SET_LABELS[name], "x": xs, "y": [pct(r["delta"]) for r in rs],
                     "marker": {"color": SET_COLOURS[name]}, "offsetgroup": str(name)})
        data.append({"type": "scatter", "mode": "markers", "name": f"random control of {SET_LABELS[name]}",
                     "x": xs, "y": [pct(r["random_delta_mean"]) for r in rs], "offsetgroup": str(name),
                     "marker": {"color": SET_COLOURS[name], "symbol": "x", "size": 10}})
    return {"data": data, "layout": {"barmode": "group", "scattermode": "group", "margin": {"t": 20},
                                     "yaxis": {"title": {"text": "Δ accuracy, all items (pp)"}}}}


def run_spec(view: dict[str, Any]) -> dict[str, Any]:
    """A live run as it streams: per objective, Δ mean margin (left) and Δ accuracy (pp, right) for the
    first-order estimate, the exact answer over the pairs done so far (95% bootstrap CI as error bars), and
    the layer-matched random control (exact when streamed, else its estimate). `view` is `pages.run_view`."""
    data: list[dict[str, Any]] = []
    styles = {"estimate": {"color": "#b0b0b0", "pattern": {"shape": "/"}}, "exact": {"color": "#3366cc"},
              "control": {"color": "#999933"}}
    for series in view["series"]:
        style = styles[series["kind"]]
        for metric, axis, scale in (("delta_margin", "", 1.0), ("delta_accuracy", "2", 100.0)):
            ys, lo, hi = [], [], []
            for o in view["objectives"]:
                v = series["values"].get(o) or {}
                y = v.get(metric)
                ys.append(None if y is None else scale * y)
                ci = v.get(metric + "_ci")
                lo.append(None if not ci or y is None else scale * (y - ci[0]))
                hi.append(None if not ci or y is None else scale * (ci[1] - y))
            trace: dict[str, Any] = {
                "type": "bar", "name": series["label"], "legendgroup": series["kind"], "x": view["objectives"],
                "y": ys, "marker": style, "xaxis": "x" + axis, "yaxis": "y" + axis, "showlegend": axis == "",
                "hovertemplate": series["label"] + " · %{x}: %{y:.4g}<extra></extra>"}
            if any(x is not None for x in hi):
                trace["error_y"] = {"type": "data", "symmetric": False, "array": hi, "arrayminus": lo,
                                    "color": "#333"}
            data.append(trace)
    layout = {"barmode": "group", "margin": {"t": 30, "r": 10, "b": 40}, "legend": {"orientation": "h", "y": 1.2},
              "xaxis": {"domain": [0, 0.46]}, "xaxis2": {"domain": [0.56, 1], "anchor": "y2"},
              "yaxis": {"title": {"text": "Δ mean margin"}, "zeroline": True},
              "yaxis2": {"title": {"text": "Δ accuracy (pp)"}, "anchor": "x2", "zeroline": True}}
    return {"data": data, "layout": layout}
