"""Plotly figures of the lab pages as plain dict specs: pure functions of the read models, no DB access.

The templates embed each spec as JSON (`| tojson` in a `<script type="application/json">`), which
`renderPlots` in base.html draws; no dataset text ever reaches a script. Callers pass the result through
`service.finite` so no NaN reaches the JSON.
"""

from __future__ import annotations

from typing import Any

from app.evaluation.queries import OVERALL
from app.evaluation.schemas import (
    CheckpointReliability,
    Comparison,
    HistoryPoint,
    ReliabilityBin,
    SubsetComparison,
    SubsetRowOut,
)
from app.evaluation.service import type_order
from workers.contract.vocab import REGIMES, Objective, Regime

Figure = dict[str, Any]

REGIME_COLORS: dict[str, str] = {Regime.helpful: "#1c7ed6", Regime.harmless: "#e8590c", Regime.mixed: "#7048e8"}
TYPE_LABELS: dict[str, str] = {Objective.helpful: "Helpful-type", Objective.harmless: "Harmless-type",
                               OVERALL: "overall"}
SCOPE_COLORS: dict[str, str] = {OVERALL: "#343a40", Objective.helpful: "#1c7ed6", Objective.harmless: "#e8590c"}
TRANSFER_LABELS: tuple[tuple[str, str], ...] = (("transferability", "transferability of mixed"),
                                                ("jaccard_helpful", "Jaccard(mixed, helpful)"),
                                                ("jaccard_harmless", "Jaccard(mixed, harmless)"))


def type_label(subset_type: str | None) -> str:
    return TYPE_LABELS.get(subset_type or "", subset_type or "other")


def _gap(hi: float | None, lo: float | None) -> float | None:
    return None if hi is None or lo is None else max(0.0, hi - lo)


def _diagonal() -> Figure:
    return {"type": "scatter", "mode": "lines", "x": [0, 1], "y": [0, 1], "name": "perfect calibration",
            "line": {"dash": "dash", "color": "#adb5bd"}, "hoverinfo": "skip"}


def _reliability_layout() -> Figure:
    return {"xaxis": {"title": {"text": "mean confidence P(chosen ≻ rejected)"}, "range": [0, 1]},
            "yaxis": {"title": {"text": "observed frequency"}, "range": [0, 1]},
            "margin": {"t": 20}, "legend": {"orientation": "h", "y": -0.2}}


def _reliability_trace(bins: list[ReliabilityBin], name: str, color: str) -> Figure:
    pts = [b for b in bins if b.count and b.mean_confidence is not None]
    return {"type": "scatter", "mode": "lines+markers", "name": name, "line": {"color": color},
            "x": [b.mean_confidence for b in pts], "y": [b.accuracy for b in pts],
            "customdata": [b.count for b in pts],
            "hovertemplate": "confidence %{x:.2f}<br>frequency %{y:.2f}<br>%{customdata} pairs"}


def _subset_axis(entries: list[SubsetRowOut] | list[SubsetComparison]) -> list[list[str]]:
    """Two-level category axis: subset type over subset name, so each subset's type is marked."""
    return [[type_label(e.subset_type) for e in entries], [e.subset for e in entries]]


def _acc_layout(**extra: Any) -> Figure:
    return {"barmode": "group", "yaxis": {"title": {"text": "accuracy"}, "range": [0, 1.05]},
            "margin": {"t": 20}, "legend": {"orientation": "h", "y": -0.25},
            "shapes": [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": 0.5, "y1": 0.5,
                        "line": {"dash": "dot", "color": "#868e96", "width": 1}}], **extra}


# -- one RM ------------------------------------------------------------------------------------------------


def training_figure(history: list[HistoryPoint]) -> Figure:
    data = []
    curves = (("train_loss", "y", "#1c7ed6", "solid"), ("eval_loss", "y", "#e8590c", "dot"),
              ("train_acc", "y2", "#1c7ed6", "solid"), ("eval_acc", "y2", "#e8590c", "dot"))
    for col, axis, color, dash in curves:
        pts = [r for r in history if getattr(r, col) is not None]
        data.append({"type": "scatter", "mode": "lines+markers", "name": col.replace("_", " "), "yaxis": axis,
                     "x": [r.step for r in pts], "y": [getattr(r, col) for r in pts],
                     "line": {"color": color, "dash": dash}, "marker": {"size": 5}})
    layout = {"xaxis": {"anchor": "y2", "title": {"text": "step"}},
              "yaxis": {"domain": [0.55, 1.0], "title": {"text": "loss"}},
              "yaxis2": {"domain": [0.0, 0.45], "title": {"text": "accuracy"}, "range": [0, 1.02],
                         "anchor": "x"},
              "margin": {"t": 20}, "legend": {"orientation": "h", "y": -0.15}}
    return {"data": data, "layout": layout}


def rm_accuracy_figure(rows: list[SubsetRowOut], regime: str) -> Figure:
    """One RM's per-subset accuracy with its 95% bootstrap CI, and the two length baselines beside it."""
    entries = sorted(rows, key=lambda r: (type_order(r.subset_type), r.subset))
    x = _subset_axis(entries)
    data = [
        {"type": "bar", "name": f"{regime} RM", "x": x, "y": [r.accuracy for r in entries],
         "marker": {"color": REGIME_COLORS.get(regime, "#495057")},
         "customdata": [[r.n_items, r.ci_lo, r.ci_hi] for r in entries],
         "hovertemplate": "accuracy %{y:.3f}<br>95% CI [%{customdata[1]:.3f}, %{customdata[2]:.3f}]"
                          "<br>%{customdata[0]} items",
         "error_y": {"type": "data", "symmetric": False,
                     "array": [_gap(r.ci_hi, r.accuracy) for r in entries],
                     "arrayminus": [_gap(r.accuracy, r.ci_lo) for r in entries]}},
        {"type": "bar", "name": "length baseline: longer wins", "x": x,
         "y": [r.length_longer for r in entries], "marker": {"color": "#adb5bd"}},
        {"type": "bar", "name": "length baseline: shorter wins", "x": x,
         "y": [r.length_shorter for r in entries], "marker": {"color": "#dee2e6"}},
    ]
    return {"data": data, "layout": _acc_layout()}


def rm_reliability_figure(bins: list[ReliabilityBin]) -> Figure:
    """One RM's reliability curve per scope ('all' pairs first), against the diagonal."""
    scopes = sorted({b.scope for b in bins}, key=lambda s: (s != OVERALL, s))
    data = [_diagonal()] + [_reliability_trace([b for b in bins if b.scope == scope], f"{scope} pairs",
                                               SCOPE_COLORS.get(scope, "#495057")) for scope in scopes]
    return {"data": data, "layout": _reliability_layout()}


# -- the three regimes -------------------------------------------------------------------------------------


def compare_accuracy_figure(cmp: Comparison) -> Figure:
    """Grouped bars by subset, one bar per regime; error bars = std over seeds, or the CI for one seed."""
    entries = cmp.subsets
    x = _subset_axis(entries)
    data = []
    for regime in REGIMES:
        vals = [e.regimes.get(regime) for e in entries]
        if all(v is None for v in vals):
            continue
        plus: list[float | None] = []
        minus: list[float | None] = []
        for v in vals:
            if v is None:
                plus.append(None)
                minus.append(None)
            elif v.n_seeds > 1:
                plus.append(v.std)
                minus.append(v.std)
            else:
                plus.append(_gap(v.ci_hi, v.mean))
                minus.append(_gap(v.mean, v.ci_lo))
        data.append({"type": "bar", "name": regime, "x": x, "y": [v.mean if v else None for v in vals],
                     "marker": {"color": REGIME_COLORS[regime]},
                     "customdata": [[v.n_seeds if v else 0, v.std if v else None] for v in vals],
                     "hovertemplate": f"{regime}: %{{y:.3f}}<br>seeds %{{customdata[0]}}, "
                                      "std %{customdata[1]:.3f}<extra></extra>",
                     "error_y": {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus}})
    return {"data": data, "layout": _acc_layout()}


def compare_types_figure(cmp: Comparison) -> Figure:
    """Mean accuracy per subset type (mean over the type's subsets), one bar per regime."""
    types = cmp.types
    x = [f"{type_label(t.subset_type)} ({max(v.n_subsets for v in t.regimes.values())} subsets)" for t in types]
    data = []
    for regime in REGIMES:
        vals = [t.regimes.get(regime) for t in types]
        if all(v is None for v in vals):
            continue
        means = [v.mean if v else None for v in vals]
        trace: Figure = {"type": "bar", "name": regime, "x": x, "y": means,
                         "marker": {"color": REGIME_COLORS[regime]},
                         "text": [None if m is None else f"{m:.3f}" for m in means], "textposition": "outside"}
        if any(v is not None and v.n_seeds > 1 for v in vals):
            trace["error_y"] = {"type": "data", "array": [v.std if v else None for v in vals]}
        data.append(trace)
    return {"data": data, "layout": _acc_layout()}


def transfer_figure(cmp: Comparison) -> Figure:
    """Heatmap: transferability and the correct-set Jaccards of the mixed RM, per subset."""
    rows = cmp.transfer
    x = [f"{r.subset} · {type_label(r.subset_type)}" for r in rows]
    z = [[getattr(r, m) for r in rows] for m, _ in TRANSFER_LABELS]
    data = [{"type": "heatmap", "name": "transfer", "x": x, "y": [label for _, label in TRANSFER_LABELS], "z": z,
             "zmin": 0, "zmax": 1, "colorscale": "Viridis", "texttemplate": "%{z:.2f}",
             "hovertemplate": "%{y}<br>%{x}: %{z:.3f}<extra></extra>"}]
    return {"data": data, "layout": {"margin": {"t": 20, "l": 180}, "xaxis": {"automargin": True},
                                     "yaxis": {"autorange": "reversed"}}}


def compare_reliability_figure(reliability: list[CheckpointReliability]) -> Figure:
    multi = len({r.seed for r in reliability}) > 1
    data = [_diagonal()]
    for r in reliability:
        name = f"{r.regime} · seed {r.seed}" if multi else r.regime
        data.append(_reliability_trace(r.bins, name, REGIME_COLORS.get(r.regime, "#343a40")))
    return {"data": data, "layout": _reliability_layout()}
