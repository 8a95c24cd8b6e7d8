"""Ablation pages and htmx partials: live toggles on the dashboard and neuron pages, result pages.

A toggle is a GET (allowed through read-only share links): `/ui/live/{checkpoint}?part=...` answers a
partial with the per-objective shift. Its state is pushed into the page URL (`HX-Push-Url`, built from the
page's own URL), so reloading or sharing the page reproduces the toggle. Queueing the exact full-test
evaluation is a POST (refused through share links). Figures are dict specs embedded as JSON.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import numpy as np
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.ablation import service
from app.ablation.routes import live_pool
from app.core.errors import Invalid, NotFound
from app.core.services import Services, get_services
from app.neurons import service as neurons
from app.neurons.routes import dashboard_url, json_safe, neuron_url
from app.web.templating import templates

router = APIRouter(include_in_schema=False)

# Query keys that carry a toggle's state in a page URL (the page's own keys, such as p or stat, stay as they are).
TOGGLE_KEYS = ("ck", "part", "set", "layer", "mode", "factor", "probe_limit")
PART_LABELS = {"helpful": "H: helpful RM's top p%", "harmless": "R: harmless RM's top p%",
               "mixed": "M: mixed RM's top p%", "helpful_specific": "helpful-specific H \\ R",
               "harmless_specific": "harmless-specific R \\ H", "shared": "shared (H ∩ R)"}
MODES = {"zero": "zero (set to 0)", "mean": "mean (set to its mean activation)", "scale": "scale (multiply)"}
OBJECTIVE_COLOURS = {"helpful": "#1c7ed6", "harmless": "#e8590c"}
METHOD_COLOURS = {"magnitude": "#c92a2a", "change": "#2b8a3e", "random": "#868e96"}
SET_COLOURS = {"helpful_specific": "#1c7ed6", "harmless_specific": "#e8590c", "shared": "#7048e8"}
SHORT_LABELS = {"helpful": "H (helpful RM's set)", "harmless": "R (harmless RM's set)", "mixed": "M (mixed RM's set)",
                "helpful_specific": "helpful-specific H \\ R", "harmless_specific": "harmless-specific R \\ H",
                "shared": "shared H ∩ R"}
SET_LABELS = {"helpful_specific": "helpful-specific", "harmless_specific": "harmless-specific", "shared": "shared"}
DEFAULT_PROBE = 64


# -- parsing ------------------------------------------------------------------------------------------
def _num(text: str | None, name: str, kind: type, default: Any = None) -> Any:
    if text is None or str(text).strip() == "":
        return default
    try:
        value = kind(str(text).strip())
    except ValueError:
        what = "whole number" if kind is int else "number"
        raise Invalid(f"{name} must be a {what}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{name} must be a finite number, got {text!r}")
    return value


def _page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
    return templates.TemplateResponse(request, f"ablation/{name}", ctx, status_code=status_code)


def _captures(services: Services, base_model: str, hook: str) -> list[dict[str, Any]]:
    order = {"helpful": 0, "harmless": 1, "mixed": 2}
    rows = [r for r in neurons.captured_checkpoints(services, base_model) if r["hook"] == hook]
    rows.sort(key=lambda r: (r["seed"], order.get(r["regime"], 3), r["checkpoint"]))
    return [{**r, "label": f"{r['regime']} RM · seed {r['seed']} · {str(r['checkpoint'])[:12]}"} for r in rows]


def _default_checkpoint(captures: list[dict[str, Any]], seed: int) -> str | None:
    for want in (lambda r: r["regime"] == "mixed" and r["seed"] == seed, lambda r: r["regime"] == "mixed",
                 lambda r: True):
        for r in captures:
            if want(r):
                return str(r["checkpoint"])
    return None


def _push_url(request: Request, toggle: dict[str, Any]) -> str | None:
    """The page's URL (from htmx's HX-Current-URL) with its toggle keys replaced by this toggle's."""
    current = request.headers.get("hx-current-url")
    if not current:
        return None
    parts = urlsplit(current)
    if not parts.path.startswith("/") or parts.path.startswith("/ui/"):
        return None
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in TOGGLE_KEYS]
    query += [(k, str(v)) for k, v in toggle.items() if v not in (None, "")]
    return parts.path + ("?" + urlencode(query) if query else "")


# -- figures ------------------------------------------------------------------------------------------
def shift_spec(answer: dict[str, Any]) -> dict[str, Any]:
    """Grouped bars per objective: Δ mean chosen / rejected reward and Δ margin (reward units, left) and
    Δ pairwise accuracy (percentage points, right panel)."""
    data: list[dict[str, Any]] = []
    for o, v in answer["objectives"].items():
        d = v["delta"]
        colour = OBJECTIVE_COLOURS.get(o, "#495057")
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


def _pct(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else 100.0 * x


def dose_spec(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Experiment A: accuracy (%) against p per selection; random as mean ± std over seeds (a band);
    each score-based set's layer-matched random control as a dashed line."""
    rows = [r for r in rows if r["grp"] == "all"]
    data: list[dict[str, Any]] = []
    rnd: dict[float, list[float]] = defaultdict(list)
    for r in rows:
        if r["condition"] == "random" and r["acc"] is not None:
            rnd[float(r["p"])].append(float(r["acc"]))
    if rnd:
        ps = sorted(rnd)
        mean = [float(np.mean(rnd[p])) for p in ps]
        std = [float(np.std(rnd[p], ddof=1)) if len(rnd[p]) > 1 else 0.0 for p in ps]
        lo = [100 * (m - s) for m, s in zip(mean, std, strict=True)]
        hi = [100 * (m + s) for m, s in zip(mean, std, strict=True)]
        data.append({"type": "scatter", "mode": "lines", "x": ps, "y": hi, "line": {"width": 0},
                     "name": "random + std", "legendgroup": "random", "showlegend": False, "hoverinfo": "skip"})
        data.append({"type": "scatter", "mode": "lines", "x": ps, "y": lo, "line": {"width": 0},
                     "fill": "tonexty", "fillcolor": "rgba(134,142,150,0.25)", "name": "random ± std over seeds",
                     "legendgroup": "random", "hoverinfo": "skip"})
        data.append({"type": "scatter", "mode": "lines+markers", "x": ps, "y": [100 * m for m in mean],
                     "name": f"random (mean of {max(len(v) for v in rnd.values())} seeds)", "legendgroup": "random",
                     "line": {"color": METHOD_COLOURS["random"]},
                     "hovertemplate": "random p=%{x}%: %{y:.2f}%<extra></extra>"})
    for method in sorted({r["condition"] for r in rows} - {"random"}):
        mrows = sorted((r for r in rows if r["condition"] == method), key=lambda r: float(r["p"]))
        ps = [float(r["p"]) for r in mrows]
        colour = METHOD_COLOURS.get(method, "#495057")
        acc = [_pct(r["acc"]) for r in mrows]
        plus = [None if r["ci_hi"] is None or r["delta"] is None else 100 * (r["ci_hi"] - r["delta"]) for r in mrows]
        minus = [None if r["ci_lo"] is None or r["delta"] is None else 100 * (r["delta"] - r["ci_lo"]) for r in mrows]
        data.append({"type": "scatter", "mode": "lines+markers", "x": ps, "y": acc, "name": f"{method}-based",
                     "legendgroup": method, "line": {"color": colour},
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
    subs = [r for r in rows if str(r["grp"]).startswith("subset:")]
    x = [str(r["grp"]).split(":", 1)[1] for r in subs]
    data = [
        {"type": "bar", "name": "magnitude top-p", "x": x, "y": [_pct(r["delta"]) for r in subs],
         "marker": {"color": [OBJECTIVE_COLOURS.get(r["group_type"] or "", "#495057") for r in subs]},
         "error_y": {"type": "data", "visible": True,
                     "array": [None if r["ci_hi"] is None else 100 * (r["ci_hi"] - r["delta"]) for r in subs],
                     "arrayminus": [None if r["ci_lo"] is None else 100 * (r["delta"] - r["ci_lo"]) for r in subs]}},
        {"type": "bar", "name": "layer-matched random", "x": x, "y": [_pct(r["random_delta_mean"]) for r in subs],
         "marker": {"color": "#adb5bd"},
         "error_y": {"type": "data", "visible": True, "array": [_pct(r["random_delta_std"]) for r in subs]}},
    ]
    return {"data": data, "layout": {"barmode": "group", "margin": {"t": 20, "b": 120},
                                     "yaxis": {"title": {"text": "Δ accuracy (pp)"}}}}


def sets_spec(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Experiment C: Δ accuracy (all items) of each set at each p, beside its random control."""
    alls = [r for r in rows if r["grp"] == "all"]
    data = []
    for name in ("helpful_specific", "harmless_specific", "shared"):
        rs = sorted((r for r in alls if r["condition"] == name), key=lambda r: float(r["p"]))
        if not rs:
            continue
        xs = [f"p={float(r['p']):g}%" for r in rs]
        data.append({"type": "bar", "name": SET_LABELS[name], "x": xs, "y": [_pct(r["delta"]) for r in rs],
                     "marker": {"color": SET_COLOURS[name]}, "offsetgroup": name})
        data.append({"type": "scatter", "mode": "markers", "name": f"random control of {SET_LABELS[name]}",
                     "x": xs, "y": [_pct(r["random_delta_mean"]) for r in rs], "offsetgroup": name,
                     "marker": {"color": SET_COLOURS[name], "symbol": "x", "size": 10}})
    return {"data": data, "layout": {"barmode": "group", "scattermode": "group", "margin": {"t": 20},
                                     "yaxis": {"title": {"text": "Δ accuracy, all items (pp)"}}}}


# -- live toggle panels -------------------------------------------------------------------------------
@router.get("/ui/ablation/panel", response_class=HTMLResponse)
def dashboard_panel(request: Request, base_model: str, p: str = "10", stat: str = "A", seed: str = "0",
                    shared: str = "intersection", hook: str = "down_proj_input", ck: str | None = None,
                    part: str = "", set: str = "", layer: str = "", mode: str = "zero", factor: str = "0",
                    probe_limit: str = str(DEFAULT_PROBE), services: Services = Depends(get_services)) -> Response:
    """The dashboard's toggle panel: target RM, what to switch off (a part of the overlap or a named set,
    optionally one layer's slice), how; with the toggle state from the page URL it computes at once."""
    seed_num = _num(seed, "seed", int, 0)
    captures = _captures(services, base_model, hook)
    if not captures:
        raise NotFound(f"no capture of base model {base_model!r} at hook {hook!r}")
    n_layers = max(int(r["n_layers"]) for r in captures)
    from_url = ck is not None
    ck = ck or _default_checkpoint(captures, seed_num)
    if not part and not set:
        part = "shared"
    query = {"p": p, "stat": stat, "seed": seed_num, "shared": shared, "hook": hook, "part": part, "set": set,
             "layer": layer, "mode": mode, "factor": factor, "probe_limit": probe_limit}
    sets = [ns.name for ns in neurons.list_sets(services, base_model)]
    return _page(request, "_dashboard_panel.html", base_model=base_model, captures=captures, ck=ck,
                 view={"p": p, "stat": stat, "seed": seed_num, "shared": shared, "hook": hook},
                 toggle=query, sets=sets, n_layers=n_layers, part_labels=PART_LABELS, modes=MODES,
                 autorun=f"/ui/live/{ck}?" + urlencode(query) if from_url else None)


@router.get("/ui/ablation/neuron-panel", response_class=HTMLResponse)
def neuron_panel(request: Request, model: str, layer: int, index: int, hook: str = "down_proj_input",
                 ck: str | None = None, mode: str = "zero", factor: str = "0",
                 probe_limit: str = str(DEFAULT_PROBE), services: Services = Depends(get_services)) -> Response:
    """The neuron page's toggle: switch this one neuron off in any captured RM of the base model."""
    captures = _captures(services, model, hook)
    if not captures:
        raise NotFound(f"no capture of base model {model!r} at hook {hook!r}")
    from_url = ck is not None
    ck = ck or _default_checkpoint(captures, 0)
    neurons_json = f'{{"{layer}": [{index}]}}'
    query = {"neurons": neurons_json, "mode": mode, "factor": factor, "probe_limit": probe_limit}
    return _page(request, "_neuron_panel.html", model=model, layer=layer, index=index, hook=hook,
                 captures=captures, ck=ck, neurons_json=neurons_json, toggle=query, modes=MODES,
                 autorun=f"/ui/live/{ck}?" + urlencode(query) if from_url else None)


def _describe(part: str | None, set_name: str | None, neurons_json: str | None, layer: int | None, p: float,
              stat: str, seed: int, shared: str) -> str:
    if neurons_json:
        what = f"neurons {neurons_json}"
    elif set_name:
        what = f"named set “{set_name}”"
    else:
        what = f"{SHORT_LABELS.get(part or '', part)} at top {p:g}% by {stat}, seed {seed}"
        if part in ("shared", "helpful_specific", "harmless_specific") and shared != "intersection":
            what += f" ({shared} rule)"
    return what + (f", layer {layer} only" if layer is not None else "")


def _live(request: Request, services: Services, checkpoint: str, neurons_json: str | None, set_name: str | None,
          part: str | None, p: str, stat: str, seed: str, shared: str, layer: str, mode: str, factor: str,
          probe_limit: str, hook: str, push: str) -> Response:
    p_num = _num(p, "p", float, 10.0)
    seed_num = _num(seed, "seed", int, 0)
    layer_num = _num(layer, "layer", int, None)
    factor_num = _num(factor, "factor", float, 0.0)
    probe = _num(probe_limit, "probe_limit", int, DEFAULT_PROBE)
    neurons_json, set_name, part = neurons_json or None, set_name or None, part or None
    chosen = service.checked_toggle_neurons(services, checkpoint, neurons_json=neurons_json, set_name=set_name,
                                            part=part, p=p_num, stat=stat, seed=seed_num, shared=shared,
                                            layer=layer_num, hook=hook)
    answer = service.live_toggle(services, live_pool(request), checkpoint, chosen, mode, factor_num, probe)
    ck = service.checkpoint_info(services, [checkpoint]).get(checkpoint, {})
    per_layer = sorted(((int(k), len(v)) for k, v in chosen.items() if v), key=lambda kv: kv[0])
    ctx = {"checkpoint": checkpoint, "ck": ck, "answer": json_safe(answer), "spec": json_safe(shift_spec(answer)),
           "what": _describe(part, set_name, neurons_json, layer_num, p_num, stat, seed_num, shared),
           "per_layer": per_layer, "mode": mode, "factor": factor_num, "probe_limit": probe,
           "neurons_json": _compact_json(chosen), "queue": service.single_params(checkpoint, chosen, mode, factor_num)}
    resp = _page(request, "_shift.html", **ctx)
    if push:
        toggle = {"ck": checkpoint, "part": None if (set_name or neurons_json) else part, "set": set_name,
                  "layer": layer_num, "mode": None if mode == "zero" else mode,
                  "factor": factor if mode == "scale" else None,
                  "probe_limit": None if probe == DEFAULT_PROBE else probe}
        url = _push_url(request, toggle)
        if url:
            resp.headers["HX-Push-Url"] = url
    return resp


def _compact_json(chosen: dict[str, list[int]]) -> str:
    import json

    return json.dumps({k: v for k, v in sorted(chosen.items(), key=lambda kv: int(kv[0])) if v},
                      separators=(",", ":"))


@router.get("/ui/live/{checkpoint}", response_class=HTMLResponse)
def live_partial(request: Request, checkpoint: str, neurons: str | None = None, set: str | None = None,
                 part: str | None = None, p: str = "10", stat: str = "A", seed: str = "0",
                 shared: str = "intersection", layer: str = "", mode: str = "zero", factor: str = "0",
                 probe_limit: str = str(DEFAULT_PROBE), hook: str = "down_proj_input", push: str = "",
                 services: Services = Depends(get_services)) -> Response:
    """One toggle, as a partial: the shift chart (`plot-shift`), its numbers, timing and path."""
    return _live(request, services, checkpoint, neurons, set, part, p, stat, seed, shared, layer, mode, factor,
                 probe_limit, hook, push)


@router.get("/ui/live", response_class=HTMLResponse)
def live_form(request: Request, ck: str, neurons: str | None = None, set: str | None = None,
              part: str | None = None, p: str = "10", stat: str = "A", seed: str = "0",
              shared: str = "intersection", layer: str = "", mode: str = "zero", factor: str = "0",
              probe_limit: str = str(DEFAULT_PROBE), hook: str = "down_proj_input", push: str = "",
              services: Services = Depends(get_services)) -> Response:
    """The same as /ui/live/{checkpoint}, with the checkpoint as a form field (the panels' target select)."""
    return _live(request, services, ck, neurons, set, part, p, stat, seed, shared, layer, mode, factor,
                 probe_limit, hook, push)


@router.post("/ui/ablation/queue", response_class=HTMLResponse)
def queue_full(request: Request, checkpoint: str = Form(...), neurons: str = Form(...), mode: str = Form("zero"),
               factor: str = Form("0"), services: Services = Depends(get_services)) -> Response:
    """Queue the exact evaluation of a toggle on the whole bundled test split (an `ablate` job, experiment
    'single', with layer-matched random controls); answer the job's live progress fragment."""
    chosen = service.checked_toggle_neurons(services, checkpoint, neurons_json=neurons)
    if not any(chosen.values()):
        raise Invalid("nothing to ablate: the toggle selects no neurons")
    if mode not in MODES:
        raise Invalid(f"unknown mode {mode!r}; one of {', '.join(MODES)}")
    params = service.single_params(checkpoint, chosen, mode, _num(factor, "factor", float, 0.0))
    job, cached = services.jobs.submit("ablate", params)
    return templates.TemplateResponse(request, "partials/job_status.html", {"job": job, "cached": cached})


# -- result pages -------------------------------------------------------------------------------------
@router.get("/ablations", response_class=HTMLResponse)
def ablations_index(request: Request, checkpoint: str | None = None,
                    services: Services = Depends(get_services)) -> Response:
    """Every stored ablation result, grouped by the RM it ablated."""
    runs = service.ablation_runs(services, checkpoint)
    info = service.checkpoint_info(services, sorted({str(r["checkpoint"]) for r in runs}))
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:
        ck = str(r["checkpoint"])
        ci = info.get(ck, {})
        g = groups.setdefault(ck, {"checkpoint": ck, "base_model": ci.get("base_model"),
                                   "regime": ci.get("regime") or r["regime"], "seed": ci.get("seed"), "results": []})
        rec = service.run_record(services, str(r["result_key"])) or {}
        params = rec.get("params", {})
        g["results"].append({**r, "job_id": rec.get("job_id"), "created_at": rec.get("created_at"),
                             "percents": params.get("percents"), "dataset": params.get("dataset") or {},
                             "limit": params.get("limit_per_objective"),
                             "n_set": sum(len(v) for v in (params.get("neuron_set") or {}).values())})
    ordered = sorted(groups.values(), key=lambda g: (str(g["base_model"]), g["seed"] or 0, str(g["regime"]),
                                                     g["checkpoint"]))
    return _page(request, "index.html", groups=ordered, checkpoint=checkpoint)


def _random_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_p: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["condition"] == "random" and r["grp"] == "all":
            by_p[float(r["p"])].append(r)
    out = []
    for p in sorted(by_p):
        accs = [float(r["acc"]) for r in by_p[p] if r["acc"] is not None]
        out.append({"p": p, "n": len(accs), "mean": float(np.mean(accs)) if accs else None,
                    "std": (float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0) if accs else None,
                    "n_neurons": by_p[p][0]["n_neurons"]})
    return out


def _group_label(grp: str) -> str:
    return grp.split(":", 1)[1] if ":" in grp else grp


@router.get("/ablations/{result_key}", response_class=HTMLResponse)
def ablation_page(request: Request, result_key: str, services: Services = Depends(get_services)) -> Response:
    out = service.results(services, result_key)
    rows = out["rows"]
    if not rows:
        return _page(request, "error.html", status_code=404, title="Ablation result",
                     message=f"no ablation result with key {result_key!r}")
    experiment = str(rows[0]["experiment"])
    ck = str(rows[0]["checkpoint"])
    ck_info = service.checkpoint_info(services, [ck]).get(ck, {})
    run = service.run_record(services, result_key)
    ctx: dict[str, Any] = {"result_key": result_key, "experiment": experiment, "rows": rows, "flips": out["flips"],
                           "checkpoint": ck, "ck": ck_info, "regime": ck_info.get("regime") or rows[0]["regime"],
                           "run": run, "command": service.recompute_command(run["params"]) if run else None,
                           "label": _group_label, "set_labels": SET_LABELS, "specs": {}}
    if ck_info.get("base_model"):
        ctx["dashboard"] = dashboard_url(ck_info["base_model"], seed=ck_info.get("seed"))
    if experiment == "A":
        alls = [r for r in rows if r["grp"] == "all"]
        ctx["specs"]["dose"] = json_safe(dose_spec(rows))
        ctx["random"] = _random_summary(rows)
        ctx["methods"] = sorted({r["condition"] for r in alls} - {"random"})
        ctx["score_rows"] = sorted((r for r in alls if r["condition"] != "random"),
                                   key=lambda r: (r["condition"], float(r["p"])))
        ctx["random_rows"] = sorted((r for r in alls if r["condition"] == "random"),
                                    key=lambda r: (float(r["p"]), r["seed"] if r["seed"] is not None else -1))
    elif experiment == "B":
        ctx["specs"]["subsets"] = json_safe(subsets_spec(rows))
        ctx["overall"] = [r for r in rows if not str(r["grp"]).startswith("subset:")]
        ctx["tables"] = [(t, [r for r in rows if str(r["grp"]).startswith("subset:") and r["group_type"] == t])
                         for t in ("helpful", "harmless")]
        ctx["untyped"] = [r for r in rows if str(r["grp"]).startswith("subset:") and r["group_type"] is None]
        ctx["p"] = rows[0]["p"]
    elif experiment == "C":
        ctx["specs"]["sets"] = json_safe(sets_spec(rows))
        order = {"helpful_specific": 0, "harmless_specific": 1, "shared": 2}
        by_set: dict[tuple[float, str], dict[str, Any]] = {}
        for r in rows:
            key = (float(r["p"]), str(r["condition"]))
            by_set.setdefault(key, {"p": key[0], "set": key[1], "groups": {}})["groups"][str(r["grp"])] = r
        ctx["c_rows"] = [by_set[k] for k in sorted(by_set, key=lambda k: (k[0], order.get(k[1], 9), k[1]))]
        ctx["c_subsets"] = sorted({str(r["grp"]) for r in rows if str(r["grp"]).startswith("subset:")})
    else:
        ctx["neuron_set"] = (run or {}).get("params", {}).get("neuron_set") or {}
        ctx["n_set"] = sum(len(v) for v in ctx["neuron_set"].values())
        base = ck_info.get("base_model")
        ctx["neuron_links"] = [
            {"layer": int(k), "index": int(i), "url": neuron_url(base, int(k), int(i)) if base else None}
            for k, v in sorted(ctx["neuron_set"].items(), key=lambda kv: int(kv[0])) for i in v][:60]
    return _page(request, "result.html", **ctx)
