"""Neuron capture results: JSON API (captures, overlap, scores, named sets) and the pages built on it.

Every page's view state lives in its URL query (p, stat, seed, hook, shared mode), so a URL reproduces
the view and can be shared read-only. Plotly figures are plain dict specs embedded as JSON; no dataset
text ever goes into a figure or a script, only into autoescaped HTML.
"""

from __future__ import annotations

import math
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field

from app.core.errors import AppError, Invalid, NotFound
from app.core.services import Services, get_services
from app.neurons import service
from app.web.templating import templates

router = APIRouter(tags=["neurons"])

STATS = {"A": "magnitude (mean activation)", "C": "change (mean squared change from the base model)",
         "P": "probability (fraction of tokens > 0)"}
SHARED_MODES = {"intersection": "shared = H ∩ R", "per_layer": "study's per-layer rule (parity)"}
HOOKS = ("down_proj_input", "act_output")
SCATTER_MODES = {"single": "helpful RM's score vs harmless RM's score (each on its own objective's data)",
                 "mixed": "mixed RM's score on helpful data vs on harmless data"}
PART_LABELS = {"helpful": "H (helpful RM)", "harmless": "R (harmless RM)", "mixed": "M (mixed RM)",
               "helpful_specific": "helpful-specific H \\ R", "harmless_specific": "harmless-specific R \\ H",
               "shared": "shared"}
PART_COLOURS = {"neither": "#ced4da", "helpful_specific": "#1c7ed6", "harmless_specific": "#e8590c",
                "shared": "#7048e8"}
SCATTERGL_ABOVE = 20_000  # SVG scatter below this many points; WebGL above


# -- helpers ------------------------------------------------------------------------------------------
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


def _check_view(p: float, stat: str, shared: str = "intersection", hook: str = "down_proj_input") -> None:
    if not (isinstance(p, float | int) and math.isfinite(p) and 0 <= p <= 100):
        raise Invalid(f"p must be a percentage within [0, 100], got {p}")
    if stat not in STATS:
        raise Invalid(f"unknown statistic {stat!r}; one of A (magnitude), C (change), P (probability)")
    if shared not in SHARED_MODES:
        raise Invalid(f"unknown shared mode {shared!r}; one of {', '.join(SHARED_MODES)}")
    if hook not in HOOKS:
        raise Invalid(f"unknown hook {hook!r}; one of {', '.join(HOOKS)}")


def _model_path(base_model: str) -> str:
    return quote(base_model, safe="/")


def dashboard_url(base_model: str, **query: Any) -> str:
    q = urlencode({k: v for k, v in query.items() if v is not None})
    return f"/models/{_model_path(base_model)}/dashboard" + (f"?{q}" if q else "")


def neuron_url(base_model: str, layer: int, index: int, **query: Any) -> str:
    q = urlencode({k: v for k, v in query.items() if v is not None})
    return f"/models/{_model_path(base_model)}/neurons/{layer}/{index}" + (f"?{q}" if q else "")


def _parse_number(text: str, name: str, kind: type) -> Any:
    try:
        return kind(text.strip())
    except ValueError:
        what = "whole number" if kind is int else "number"
        raise Invalid(f"{name} must be a {what}, got {text!r}") from None


def _fmt_p(p: float) -> str:
    return f"{p:g}"


def overlap_public(ov: dict[str, Any]) -> dict[str, Any]:
    """overlap() without raw masks, JSON-safe."""
    out = {k: v for k, v in ov.items() if k != "masks"}
    out["n_layers"], out["n_neurons"] = (int(d) for d in ov["masks"]["helpful"].shape)
    return json_safe(out)  # type: ignore[no-any-return]


def _set_out(ns: Any, with_neurons: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"id": ns.id, "name": ns.name, "base_model": ns.base_model, "size": ns.size,
                           "formula": ns.formula, "shape": ns.formula.get("shape"),
                           "created_at": ns.created_at.isoformat() if ns.created_at else None}
    if with_neurons:
        out["neurons"] = {str(k): v for k, v in sorted(ns.neurons.items(), key=lambda kv: int(kv[0]))}
    return out


def _page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
    return templates.TemplateResponse(request, f"neurons/{name}", ctx, status_code=status_code)


def _error_page(request: Request, exc: AppError, title: str, **ctx: Any) -> Response:
    if request.headers.get("hx-request"):
        raise exc
    return _page(request, "error.html", status_code=exc.status, title=title, message=str(exc), **ctx)


# -- JSON API -----------------------------------------------------------------------------------------
@router.get("/api/neurons/captures")
def api_captures(base_model: str | None = None,
                 services: Services = Depends(get_services)) -> list[dict[str, Any]]:
    """Every captured checkpoint: base model, regime, seed, hook, layers × neurons, result key."""
    return json_safe(service.captured_checkpoints(services, base_model))  # type: ignore[no-any-return]


@router.get("/api/neurons/{base_model:path}/overlap")
def api_overlap(base_model: str, p: float = 10.0, stat: str = "A", seed: int = 0,
                hook: str = "down_proj_input", shared: str = "intersection",
                services: Services = Depends(get_services)) -> dict[str, Any]:
    """H, R, M top-p% sets of one base model and seed, and how they overlap (everything but raw masks)."""
    _check_view(p, stat, shared, hook)
    ov = service.overlap(services, base_model, p, stat, seed, hook, shared)  # type: ignore[arg-type]
    return overlap_public(ov)


@router.get("/api/neurons/{base_model:path}/scores")
def api_scores(base_model: str, regime: str = "mixed", stat: str = "A", scope: str = "own", seed: int = 0,
               hook: str = "down_proj_input", layer: int | None = None, checkpoint: str | None = None,
               services: Services = Depends(get_services)) -> dict[str, Any]:
    """Scores S of one RM of a base model ([layers][neurons], or one layer's list with `layer`)."""
    _check_view(0.0, stat, hook=hook)
    if checkpoint is None:
        if regime not in ("helpful", "harmless", "mixed"):
            raise Invalid(f"unknown regime {regime!r}; one of helpful, harmless, mixed")
        cks = service.regime_checkpoints(services, base_model, seed, hook)
        if regime not in cks:
            raise NotFound(f"{base_model} seed {seed}: no capture of the {regime} RM at hook {hook!r}")
        checkpoint = cks[regime]
    else:
        info = service._capture(services, checkpoint, hook)
        if info["base_model"] != base_model:
            raise Invalid(f"checkpoint {checkpoint!r} is a {info['base_model']} RM, not {base_model}")
        regime = info["regime"]
    s = service.scores(services, checkpoint, stat, scope, hook)  # type: ignore[arg-type]
    out: dict[str, Any] = {"base_model": base_model, "checkpoint": checkpoint, "regime": regime, "stat": stat,
                           "scope": scope, "hook": hook, "shape": list(s.shape)}
    if layer is not None:
        if not 0 <= layer < s.shape[0]:
            raise NotFound(f"layer {layer} out of range: {base_model} has layers 0-{s.shape[0] - 1}")
        out["layer"] = layer
        out["scores"] = json_safe(s[layer])
    else:
        out["scores"] = json_safe(s)
    return out


class NeuronSetCreate(BaseModel):
    """Either a top-p% formula on one checkpoint, or one part of a base model's H/R/M overlap."""

    name: str = Field(..., min_length=1, max_length=256)
    checkpoint: str | None = None
    scope: str = "own"
    base_model: str | None = None
    part: str | None = Field(None, description=", ".join(service.OVERLAP_PARTS))
    p: float = 10.0
    stat: str = "A"
    seed: int = 0
    hook: str = "down_proj_input"
    shared: str = "intersection"


class NeuronSetCombine(BaseModel):
    name: str = Field(..., min_length=1, max_length=256)
    op: str
    args: list[str] = Field(..., min_length=1)


def _create_set(services: Services, body: NeuronSetCreate) -> Any:
    name = body.name.strip()
    if not name:
        raise Invalid("a neuron set needs a non-blank name")
    _check_view(body.p, body.stat, body.shared, body.hook)
    if body.part is not None:
        if not body.base_model:
            raise Invalid("an overlap part needs base_model (with part, p, stat, seed)")
        if body.checkpoint:
            raise Invalid("give either checkpoint (top-p% formula) or base_model + part, not both")
        return service.set_from_overlap_part(services, name, body.base_model, body.part, body.p,
                                             body.stat, body.seed, body.hook, body.shared)  # type: ignore[arg-type]
    if body.checkpoint:
        return service.set_from_top_p(services, name, body.checkpoint, body.p, body.stat,  # type: ignore[arg-type]
                                      body.scope, body.hook)
    raise Invalid("give either checkpoint (with p, stat, scope) or base_model and part "
                   f"({', '.join(service.OVERLAP_PARTS)})")


@router.post("/api/neuron-sets", status_code=201)
def api_create_set(body: NeuronSetCreate, services: Services = Depends(get_services)) -> dict[str, Any]:
    return _set_out(_create_set(services, body))


@router.post("/api/neuron-sets/combine", status_code=201)
def api_combine_sets(body: NeuronSetCombine, services: Services = Depends(get_services)) -> dict[str, Any]:
    name = body.name.strip()
    if not name:
        raise Invalid("a neuron set needs a non-blank name")
    return _set_out(service.combine_sets(services, name, body.op, body.args))


@router.get("/api/neuron-sets")
def api_list_sets(base_model: str | None = None,
                  services: Services = Depends(get_services)) -> list[dict[str, Any]]:
    return [_set_out(ns, with_neurons=False) for ns in service.list_sets(services, base_model)]


@router.get("/api/neuron-sets/{name:path}")
def api_get_set(name: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    return _set_out(service.get_set(services, name))


# -- pages --------------------------------------------------------------------------------------------
def _group_captures(services: Services) -> list[dict[str, Any]]:
    """Base models → their captured checkpoints and the (seed, hook) views that have all three regimes."""
    by_model: dict[str, dict[str, Any]] = {}
    for r in service.captured_checkpoints(services):
        name = r["base_model"] or "(unknown base model)"
        m = by_model.setdefault(name, {"name": name, "captures": [], "views": {}})
        m["captures"].append({**r, "short": str(r["checkpoint"])[:12]})
        m["views"].setdefault((r["seed"], r["hook"]), set()).add(r["regime"])
    out = []
    for name in sorted(by_model):
        m = by_model[name]
        views = []
        for (seed, hook), regimes in sorted(m["views"].items(), key=lambda kv: (kv[0][0], kv[0][1])):
            complete = {"helpful", "harmless", "mixed"} <= regimes
            views.append({"seed": seed, "hook": hook, "complete": complete,
                          "missing": sorted({"helpful", "harmless", "mixed"} - regimes),
                          "url": dashboard_url(name, seed=seed, hook=hook) if complete else None})
        m["views"] = views
        m["neuron0"] = neuron_url(name, 0, 0) if m["name"] != "(unknown base model)" else None
        out.append(m)
    return out


@router.get("/neurons", response_class=HTMLResponse, include_in_schema=False)
def neurons_index(request: Request, services: Services = Depends(get_services)) -> Response:
    sets = service.list_sets(services)
    return _page(request, "index.html", models=_group_captures(services),
                 sets=[{**_set_out(ns, with_neurons=False),
                        "api": "/api/neuron-sets/" + quote(ns.name, safe="")} for ns in sets])


def _round(x: float, digits: int = 6) -> float | None:
    return float(f"{x:.{digits}g}") if math.isfinite(x) else None


def _scatter_spec(services: Services, ov: dict[str, Any], mode: str, stat: str, hook: str) -> dict[str, Any]:
    cks = ov["checkpoints"]
    if mode == "mixed":
        x = service.scores(services, cks["mixed"], stat, "helpful", hook)  # type: ignore[arg-type]
        y = service.scores(services, cks["mixed"], stat, "harmless", hook)  # type: ignore[arg-type]
        xt, yt = f"mixed RM: S ({stat}) on helpful data", f"mixed RM: S ({stat}) on harmless data"
    else:
        x = service.scores(services, cks["helpful"], stat, "helpful", hook)  # type: ignore[arg-type]
        y = service.scores(services, cks["harmless"], stat, "harmless", hook)  # type: ignore[arg-type]
        xt, yt = f"helpful RM: S ({stat}) on helpful data", f"harmless RM: S ({stat}) on harmless data"
    masks = ov["masks"]
    H, R, M = masks["helpful"], masks["harmless"], masks["mixed"]
    group = np.full(H.shape, "neither", dtype=object)
    group[H & ~R] = "helpful_specific"
    group[R & ~H] = "harmless_specific"
    group[H & R] = "shared"
    labels = {"neither": "in neither H nor R", "helpful_specific": "helpful-specific (H only)",
              "harmless_specific": "harmless-specific (R only)", "shared": "shared (H ∩ R)"}
    kind = "scattergl" if H.size > SCATTERGL_ABOVE else "scatter"
    traces = []
    for g in ("neither", "helpful_specific", "harmless_specific", "shared"):
        layers, idx = np.nonzero(group == g)
        if layers.size == 0:
            continue
        xs, ys = x[layers, idx], y[layers, idx]
        in_m = M[layers, idx]
        traces.append({
            "type": kind, "mode": "markers", "name": labels[g],
            "x": [_round(float(v)) for v in xs], "y": [_round(float(v)) for v in ys],
            "customdata": [[int(a), int(b)] for a, b in zip(layers, idx, strict=True)],
            "text": ["in M" if m else "not in M" for m in in_m],
            "hovertemplate": "layer %{customdata[0]} · neuron %{customdata[1]}<br>x %{x:.4g} · y %{y:.4g}"
                             "<br>%{text}<extra>" + labels[g] + "</extra>",
            "marker": {"color": PART_COLOURS[g], "size": 6 if g != "neither" else 4,
                       "opacity": 0.9 if g != "neither" else 0.5,
                       "symbol": ["circle" if m else "circle-open" for m in in_m]},
        })
    layout: dict[str, Any] = {"xaxis": {"title": {"text": xt}}, "yaxis": {"title": {"text": yt}},
                              "margin": {"t": 40}, "hovermode": "closest",
                              "legend": {"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"}}
    if mode == "single":
        shapes = []
        tx, ty = ov["selection"]["helpful"]["threshold"], ov["selection"]["harmless"]["threshold"]
        if tx is not None and math.isfinite(tx):
            shapes.append({"type": "line", "x0": tx, "x1": tx, "yref": "paper", "y0": 0, "y1": 1,
                           "line": {"dash": "dot", "color": PART_COLOURS["helpful_specific"]}})
        if ty is not None and math.isfinite(ty):
            shapes.append({"type": "line", "y0": ty, "y1": ty, "xref": "paper", "x0": 0, "x1": 1,
                           "line": {"dash": "dot", "color": PART_COLOURS["harmless_specific"]}})
        layout["shapes"] = shapes
    return {"data": traces, "layout": layout}


def _dashboard_specs(services: Services, ov: dict[str, Any], scatter: str, stat: str,
                     hook: str) -> dict[str, Any]:
    v = ov["venn"]
    regions = [("H only", "H_only"), ("R only", "R_only"), ("M only", "M_only"), ("H ∩ R only", "HR_only"),
               ("H ∩ M only", "HM_only"), ("R ∩ M only", "RM_only"), ("H ∩ R ∩ M", "HRM")]
    venn = {"data": [{"type": "bar", "x": [r[0] for r in regions], "y": [v[r[1]] for r in regions],
                      "text": [str(v[r[1]]) for r in regions], "textposition": "auto",
                      "marker": {"color": ["#1c7ed6", "#e8590c", "#2b8a3e", "#7048e8", "#0ca678", "#f08c00",
                                           "#343a40"]},
                      "hovertemplate": "%{x}: %{y} neurons<extra></extra>"}],
            "layout": {"yaxis": {"title": {"text": "neurons (exclusive region)"}}, "margin": {"t": 20}}}
    rows = list(PART_LABELS)
    n_layers = len(ov["layer_counts"]["helpful"])
    layers = {"data": [{"type": "heatmap", "z": [ov["layer_counts"][r] for r in rows],
                        "x": list(range(n_layers)), "y": [PART_LABELS[r] for r in rows],
                        "colorscale": "Blues", "reversescale": True,
                        "colorbar": {"title": {"text": "neurons"}},
                        "hovertemplate": "%{y}<br>layer %{x}: %{z} neurons<extra></extra>"}],
              "layout": {"xaxis": {"title": {"text": "layer"}, "dtick": 1},
                         "yaxis": {"autorange": "reversed"}, "margin": {"t": 20, "l": 170}}}
    return {"venn": venn, "layers": layers,
            "scatter": _scatter_spec(services, ov, scatter, stat, hook)}


def _part_lists(base_model: str, ov: dict[str, Any], hook: str, limit: int = 40) -> list[dict[str, Any]]:
    out = []
    q = {"hook": None if hook == "down_proj_input" else hook}
    for part in ("helpful_specific", "harmless_specific", "shared"):
        layers, idx = np.nonzero(ov["masks"][part])
        items = [{"layer": int(a), "index": int(b), "url": neuron_url(base_model, int(a), int(b), **q)}
                 for a, b in zip(layers[:limit], idx[:limit], strict=True)]
        out.append({"part": part, "label": PART_LABELS[part], "total": int(layers.size), "neurons": items})
    return out


@router.get("/models/{base_model:path}/dashboard", response_class=HTMLResponse, include_in_schema=False)
def dashboard(request: Request, base_model: str, p: str = "10", stat: str = "A", seed: str = "0",
              shared: str = "intersection", hook: str = "down_proj_input", scatter: str = "single",
              services: Services = Depends(get_services)) -> Response:
    view = {"p": p, "stat": stat, "seed": seed, "shared": shared, "hook": hook, "scatter": scatter}
    ctx: dict[str, Any] = {"base_model": base_model, "view": view, "stats": STATS,
                           "shared_modes": SHARED_MODES, "hooks": HOOKS, "scatter_modes": SCATTER_MODES,
                           "action": f"/models/{_model_path(base_model)}/dashboard"}
    try:
        p_num, seed_num = _parse_number(p, "p", float), _parse_number(seed, "seed", int)
        view["p"], view["seed"] = _fmt_p(p_num), seed_num
        _check_view(p_num, stat, shared, hook)
        if scatter not in SCATTER_MODES:
            raise Invalid(f"unknown scatter mode {scatter!r}; one of {', '.join(SCATTER_MODES)}")
        ov = service.overlap(services, base_model, p_num, stat, seed_num, hook, shared)  # type: ignore[arg-type]
        specs = _dashboard_specs(services, ov, scatter, stat, hook)
    except AppError as exc:
        return _error_page(request, exc, f"Neuron overlap · {base_model}", form=ctx)
    pub = overlap_public(ov)
    return _page(request, "dashboard.html", **ctx, form=ctx, ov=pub, specs=json_safe(specs),
                 parts=_part_lists(base_model, ov, hook), part_labels=PART_LABELS,
                 neuron_base=f"/models/{_model_path(base_model)}/neurons/",
                 neuron_query=urlencode({"hook": hook}) if hook != "down_proj_input" else "",
                 api_url=f"/api/neurons/{_model_path(base_model)}/overlap?" + urlencode(
                     {"p": view["p"], "stat": stat, "seed": seed_num, "hook": hook, "shared": shared}),
                 permalink=dashboard_url(base_model, **view))


@router.post("/ui/neuron-sets", response_class=HTMLResponse, include_in_schema=False)
def ui_save_part(request: Request, name: str = Form(...), base_model: str = Form(...), part: str = Form(...),
                 p: float = Form(10.0), stat: str = Form("A"), seed: int = Form(0),
                 hook: str = Form("down_proj_input"), shared: str = Form("intersection"),
                 services: Services = Depends(get_services)) -> Response:
    body = NeuronSetCreate(name=name, base_model=base_model, part=part, p=p, stat=stat, seed=seed, hook=hook,
                           shared=shared)
    ns = _create_set(services, body)
    api = "/api/neuron-sets/" + quote(ns.name, safe="")
    return HTMLResponse(templates.env.from_string(
        "<p class=\"saved-set\">Saved <b>{{ n.name }}</b>: {{ n.size }} neurons "
        "(<a href=\"{{ api }}\">JSON</a>)</p>").render(n=ns, api=api))


def _neuron_stat_spec(stats: list[dict[str, Any]], stat: str) -> dict[str, Any]:
    col = service.STAT_COLUMN[stat]
    groups: list[tuple[str, str, str]] = []
    for r in stats:
        key = (r["regime"] or "?", r["checkpoint"], r["objective"])
        if key not in groups:
            groups.append(key)
    label = {g: f"{g[0]} RM · {g[2]} data" for g in groups}
    if len({label[g] for g in groups}) < len(groups):  # several checkpoints of one regime
        label = {g: f"{g[0]} RM {g[1][:6]} · {g[2]} data" for g in groups}
    data = []
    for side, colour in (("chosen", "#2b8a3e"), ("rejected", "#c92a2a")):
        vals = {(r["regime"] or "?", r["checkpoint"], r["objective"]): r[col]
                for r in stats if r["side"] == side}
        data.append({"type": "bar", "name": side, "x": [label[g] for g in groups],
                     "y": [vals.get(g) for g in groups], "marker": {"color": colour},
                     "hovertemplate": "%{x}<br>" + side + ": %{y:.4g}<extra></extra>"})
    return {"data": data, "layout": {"barmode": "group", "margin": {"t": 20},
                                     "yaxis": {"title": {"text": STATS[stat]}}}}


@router.get("/models/{model:path}/neurons/{layer:int}/{index:int}", response_class=HTMLResponse,
            include_in_schema=False)
def neuron_page(request: Request, model: str, layer: int, index: int, stat: str = "A",
                hook: str = "down_proj_input", services: Services = Depends(get_services)) -> Response:
    title = f"Neuron {layer}/{index} · {model}"
    try:
        _check_view(0.0, stat, hook=hook)
        n_layers, n_neurons = service.base_model_shape(services, model, hook)
        if layer >= n_layers:
            raise NotFound(f"layer {layer} out of range: {model} has layers 0-{n_layers - 1}")
        if index >= n_neurons:
            raise NotFound(f"neuron {index} out of range: {model} has neurons 0-{n_neurons - 1} per layer")
    except AppError as exc:
        return _error_page(request, exc, title)
    detail = service.neuron_detail_at_hook(services, model, layer, index, hook)
    order = {"helpful": 0, "harmless": 1, "mixed": 2}
    detail["stats"].sort(key=lambda r: (order.get(r["regime"], 3), r["regime"] or "", r["checkpoint"],
                                        order.get(r["objective"], 3), r["side"] != "chosen"))
    # Where the neuron ranks in each captured RM by its own-objective score S.
    ranks = []
    for r in service.captured_checkpoints(services, model):
        if r["hook"] != hook:
            continue
        try:
            s = service.scores(services, r["checkpoint"], stat, "own", hook)  # type: ignore[arg-type]
        except AppError:
            continue
        if layer >= s.shape[0] or index >= s.shape[1]:
            continue
        v = float(s[layer, index])
        finite = s[np.isfinite(s)]
        pct = float((finite < v).sum() / finite.size * 100) if finite.size and math.isfinite(v) else None
        ranks.append({"regime": r["regime"], "checkpoint": r["checkpoint"], "seed": r["seed"],
                      "score": v if math.isfinite(v) else None, "percentile": pct})
    q = {"stat": stat if stat != "A" else None, "hook": hook if hook != "down_proj_input" else None}
    nav = {
        "prev": neuron_url(model, layer, index - 1, **q) if index > 0 else
        (neuron_url(model, layer - 1, n_neurons - 1, **q) if layer > 0 else None),
        "next": neuron_url(model, layer, index + 1, **q) if index + 1 < n_neurons else
        (neuron_url(model, layer + 1, 0, **q) if layer + 1 < n_layers else None),
    }
    examples: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for e in detail["examples"]:
        examples.setdefault((e["regime"] or "?", e["objective"], e["side"]), []).append(e)
    return _page(request, "neuron.html", model=model, layer=layer, index=index, n_layers=n_layers,
                 n_neurons=n_neurons, stat=stat, stats_names=STATS, hook=hook, hooks=HOOKS,
                 rows=detail["stats"], ranks=ranks,
                 examples=[{"regime": k[0], "objective": k[1], "side": k[2], "entries": v}
                           for k, v in examples.items()],
                 spec=json_safe(_neuron_stat_spec(detail["stats"], stat)), nav=nav,
                 action=f"/models/{_model_path(model)}/neurons/{layer}/{index}",
                 dashboard=dashboard_url(model, stat=stat, hook=hook if hook != "down_proj_input" else None))
