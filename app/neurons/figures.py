"""Plotly figure specs of the neuron pages: plain JSON-safe dicts built from numbers, no database access.

No dataset text ever goes into a figure (only numbers, neuron addresses and fixed labels); the pages
embed these specs as JSON and `frontend/static` renders them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from app.neurons.schemas import STAT_NAMES, OverlapOut, ScatterMode
from workers.contract.vocab import STAT_COLUMN, OverlapPart, Regime, Scope, Side, Stat

PART_LABELS: dict[OverlapPart, str] = {
    OverlapPart.helpful: "H (helpful RM)", OverlapPart.harmless: "R (harmless RM)", OverlapPart.mixed: "M (mixed RM)",
    OverlapPart.helpful_specific: "helpful-specific H \\ R", OverlapPart.harmless_specific: "harmless-specific R \\ H",
    OverlapPart.shared: "shared"}
SCATTER_GROUPS: dict[str, tuple[str, str]] = {  # group: (legend label, colour)
    "neither": ("in neither H nor R", "#ced4da"),
    OverlapPart.helpful_specific: ("helpful-specific (H only)", "#1c7ed6"),
    OverlapPart.harmless_specific: ("harmless-specific (R only)", "#e8590c"),
    OverlapPart.shared: ("shared (H ∩ R)", "#7048e8")}
VENN_REGIONS = (("H only", "H_only", "#1c7ed6"), ("R only", "R_only", "#e8590c"), ("M only", "M_only", "#2b8a3e"),
                ("H ∩ R only", "HR_only", "#7048e8"), ("H ∩ M only", "HM_only", "#0ca678"),
                ("R ∩ M only", "RM_only", "#f08c00"), ("H ∩ R ∩ M", "HRM", "#343a40"))
SIDE_COLOURS: dict[Side, str] = {Side.chosen: "#2b8a3e", Side.rejected: "#c92a2a"}
SYMBOL_IN_M, SYMBOL_NOT_IN_M = 0, 100  # Plotly's "circle" and "circle-open" (numbers: a smaller page)
SCATTER_MAX_POINTS = 5_000
"""The scatter draws at most this many neurons (SVG markers: no WebGL, so no eval under the page's CSP, and a
page of bounded size). A model with more neurons is drawn from a sample: `scatter_sample`."""


def json_safe(x: Any) -> Any:
    """Plain JSON: numpy scalars and arrays to Python, NaN/inf to None (JSON has neither)."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [json_safe(v) for v in x]
    if isinstance(x, np.ndarray):
        return json_safe(x.tolist())
    if isinstance(x, np.bool_ | bool):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating):
        f = float(x)
        return f if math.isfinite(f) else None
    return x


FROZEN_FILL = "rgba(134, 142, 150, 0.25)"
"""The band that marks layers frozen in training on the layer plots."""


def layer_span(layers: list[int] | tuple[int, ...]) -> str:
    """Layers as words: "layer 0", "layers 0–1", "layers 0–2, 5"."""
    runs: list[list[int]] = []
    for layer in sorted(set(layers)):
        if runs and layer == runs[-1][1] + 1:
            runs[-1][1] = layer
        else:
            runs.append([layer, layer])
    text = ", ".join(f"{a}" if a == b else f"{a}–{b}" for a, b in runs)
    return ("layer " if len(layers) == 1 else "layers ") + text


def frozen_bands(frozen: list[int], label: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Plotly shapes (a shaded band per run of frozen layers, on a layer x axis) and one annotation."""
    if not frozen:
        return [], []
    shapes = []
    for layer in sorted(set(frozen)):
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": layer - 0.5, "x1": layer + 0.5,
                       "y0": 0, "y1": 1, "fillcolor": FROZEN_FILL, "line": {"width": 0}, "layer": "above"})
    lo = min(frozen) - 0.5
    note = {"xref": "x", "yref": "paper", "x": lo, "y": 1.0, "xanchor": "left", "yanchor": "bottom",
            "showarrow": False, "text": label, "font": {"size": 11, "color": "#495057"}}
    return shapes, [note]


def _round(x: float, digits: int = 6) -> float | None:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


@functools.lru_cache(maxsize=8)
def _draw_priority(n: int) -> np.ndarray:
    """A fixed pseudo-random rank of each of n neurons (flat index): the sample keeps the lowest ranks, so
    the same neurons stay drawn from one view to the next."""
    out = np.empty(n, dtype=np.int64)
    out[np.random.default_rng(0).permutation(n)] = np.arange(n)
    out.setflags(write=False)
    return out


def scatter_sample(group: np.ndarray, n_groups: int, cap: int = SCATTER_MAX_POINTS) -> np.ndarray:
    """Which neurons to draw (a boolean mask like `group`, whose values are group codes 0..n_groups-1).

    All of them when there are at most `cap`; else the budget is shared out smallest group first, each
    group taking all its neurons or an equal share of what is left (so small groups, e.g. the shared
    neurons, are drawn whole and large ones are thinned), and within a group the neurons of lowest
    `_draw_priority` are kept: deterministic, and stable across views."""
    flat = group.ravel()
    if flat.size <= cap:
        return np.ones(group.shape, dtype=bool)
    sizes = np.bincount(flat, minlength=n_groups)
    budget, left = cap, int((sizes > 0).sum())
    take = np.zeros(n_groups, dtype=np.int64)
    for g in np.argsort(sizes, kind="stable"):
        if sizes[g] == 0:
            continue
        take[g] = min(int(sizes[g]), budget // left)
        budget -= int(take[g])
        left -= 1
    prio = _draw_priority(flat.size)
    keep = np.zeros(flat.size, dtype=bool)
    for g in range(n_groups):
        members = np.flatnonzero(flat == g)
        if take[g] >= members.size:
            keep[members] = True
        elif take[g] > 0:
            keep[members[np.argpartition(prio[members], take[g] - 1)[:take[g]]]] = True
    return keep.reshape(group.shape)


def scatter_axes(mode: ScatterMode, stat: Stat) -> tuple[tuple[Regime, Scope], tuple[Regime, Scope], str, str]:
    """(regime, scope) of the x and y scores and the axis titles of a scatter mode."""
    if mode == ScatterMode.mixed:
        return ((Regime.mixed, Scope.helpful), (Regime.mixed, Scope.harmless),
                f"mixed RM: S ({stat}) on helpful data", f"mixed RM: S ({stat}) on harmless data")
    return ((Regime.helpful, Scope.helpful), (Regime.harmless, Scope.harmless),
            f"helpful RM: S ({stat}) on helpful data", f"harmless RM: S ({stat}) on harmless data")


def scatter(x: np.ndarray, y: np.ndarray, masks: Mapping[OverlapPart, np.ndarray], ov: OverlapOut,
            mode: ScatterMode, cap: int = SCATTER_MAX_POINTS) -> dict[str, Any]:
    """Each neuron's x score against its y score, coloured by H/R membership, open circles when not in M.

    At most `cap` points are drawn (`scatter_sample`); `sample` tells how many of how many, per group, for
    the page to say so. Every count and overlap number of the page is computed on all neurons."""
    *_, xt, yt = scatter_axes(mode, ov.stat)
    H, R, M = masks[OverlapPart.helpful], masks[OverlapPart.harmless], masks[OverlapPart.mixed]
    names = list(SCATTER_GROUPS)
    group = np.zeros(H.shape, dtype=np.int64)  # 0: neither
    group[H & ~R] = names.index(OverlapPart.helpful_specific)
    group[R & ~H] = names.index(OverlapPart.harmless_specific)
    group[H & R] = names.index(OverlapPart.shared)
    drawn = scatter_sample(group, len(names), cap)
    sampled = not drawn.all()
    traces, counts = [], {}
    for code, g in enumerate(names):
        label, colour = SCATTER_GROUPS[g]
        in_group = group == code
        total = int(in_group.sum())
        layers, idx = np.nonzero(in_group & drawn)
        counts[str(g)] = {"label": label, "shown": int(layers.size), "total": total}
        if layers.size == 0:
            continue
        in_m = M[layers, idx].tolist()
        name = f"{label}: {layers.size:,} of {total:,} drawn" if layers.size < total else label
        traces.append({
            "type": "scatter", "mode": "markers", "name": name,
            "x": [_round(v) for v in x[layers, idx].tolist()], "y": [_round(v) for v in y[layers, idx].tolist()],
            "customdata": np.stack([layers, idx], axis=1).tolist(),
            "text": ["in M" if m else "not in M" for m in in_m],
            "hovertemplate": "layer %{customdata[0]} · neuron %{customdata[1]}<br>x %{x:.4g} · y %{y:.4g}"
                             "<br>%{text}<extra>" + label + "</extra>",
            "marker": {"color": colour, "size": 6 if g != "neither" else 4,
                       "opacity": 0.9 if g != "neither" else 0.5,
                       "symbol": [SYMBOL_IN_M if m else SYMBOL_NOT_IN_M for m in in_m]},
        })
    layout: dict[str, Any] = {"xaxis": {"title": {"text": xt}}, "yaxis": {"title": {"text": yt}},
                              "margin": {"t": 40}, "hovermode": "closest",
                              "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"}}
    if mode == ScatterMode.single:
        shapes = []
        tx, ty = ov.selection[Regime.helpful].threshold, ov.selection[Regime.harmless].threshold
        if tx is not None:
            shapes.append({"type": "line", "x0": tx, "x1": tx, "yref": "paper", "y0": 0, "y1": 1,
                           "line": {"dash": "dot", "color": SCATTER_GROUPS[OverlapPart.helpful_specific][1]}})
        if ty is not None:
            shapes.append({"type": "line", "y0": ty, "y1": ty, "xref": "paper", "x0": 0, "x1": 1,
                           "line": {"dash": "dot", "color": SCATTER_GROUPS[OverlapPart.harmless_specific][1]}})
        layout["shapes"] = shapes
    sample = {"drawn": int(drawn.sum()), "total": int(drawn.size), "sampled": sampled, "cap": cap, "groups": counts}
    return {"data": traces, "layout": layout, "sample": sample}


def venn(ov: OverlapOut) -> dict[str, Any]:
    """Bars of the seven exclusive regions of H, R and M."""
    v = ov.venn.model_dump()
    return {"data": [{"type": "bar", "x": [r[0] for r in VENN_REGIONS], "y": [v[r[1]] for r in VENN_REGIONS],
                      "text": [str(v[r[1]]) for r in VENN_REGIONS], "textposition": "auto",
                      "marker": {"color": [r[2] for r in VENN_REGIONS]},
                      "hovertemplate": "%{x}: %{y} neurons<extra></extra>"}],
            "layout": {"yaxis": {"title": {"text": "neurons (exclusive region)"}}, "margin": {"t": 20}}}


def layer_heatmap(ov: OverlapOut) -> dict[str, Any]:
    """Selected neurons per layer of each overlap part; layers frozen in training are shaded and labelled
    (left out of selection, or included when the view asks)."""
    rows = list(PART_LABELS)
    label = f"frozen in training ({'included' if ov.include_frozen else 'left out'})"
    shapes, notes = frozen_bands(ov.frozen_layers, label)
    spec: dict[str, Any] = {
        "data": [{"type": "heatmap", "z": [ov.layer_counts[r] for r in rows],
                  "x": list(range(ov.n_layers)), "y": [PART_LABELS[r] for r in rows],
                  "colorscale": "Blues", "reversescale": True,
                  "colorbar": {"title": {"text": "neurons"}},
                  "hovertemplate": "%{y}<br>layer %{x}: %{z} neurons<extra></extra>"}],
        "layout": {"xaxis": {"title": {"text": "layer"}, "dtick": 1},
                   "yaxis": {"autorange": "reversed"}, "margin": {"t": 20, "l": 170}}}
    if shapes:
        spec["layout"].update(shapes=shapes, annotations=notes, margin={"t": 30, "l": 170})
    return spec


def neuron_stats(stats: list[dict[str, Any]], stat: Stat) -> dict[str, Any]:
    """One neuron's statistic, chosen against rejected bars per (RM, objective)."""
    col = STAT_COLUMN[stat]
    groups: list[tuple[str, str, str]] = []
    for r in stats:
        key = (r["regime"] or "?", r["checkpoint"], r["objective"])
        if key not in groups:
            groups.append(key)
    label = {g: f"{g[0]} RM · {g[2]} data" for g in groups}
    if len({label[g] for g in groups}) < len(groups):  # several checkpoints of one regime
        label = {g: f"{g[0]} RM {g[1][:6]} · {g[2]} data" for g in groups}
    data = []
    for side, colour in SIDE_COLOURS.items():
        vals = {(r["regime"] or "?", r["checkpoint"], r["objective"]): r[col] for r in stats if r["side"] == side}
        data.append({"type": "bar", "name": str(side), "x": [label[g] for g in groups],
                     "y": [vals.get(g) for g in groups], "marker": {"color": colour},
                     "hovertemplate": "%{x}<br>" + side + ": %{y:.4g}<extra></extra>"})
    return json_safe({"data": data, "layout": {"barmode": "group", "margin": {"t": 20},  # type: ignore[no-any-return]
                                               "yaxis": {"title": {"text": STAT_NAMES[stat]}}}})
