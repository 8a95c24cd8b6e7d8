"""Reward-model lab: JSON API (`/api/lab/...`), the launch form and the Plotly pages (`/lab/...`).

Routes are thin: every number comes from `app.evaluation.service`. Figures are built here as plain
Plotly dict specs, cleaned of NaN, and embedded by the templates as JSON (`| tojson` in a
`<script type="application/json">`), which `renderPlots` in base.html draws. No dataset text ever
reaches a script.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.core.db import Job
from app.core.errors import AppError, Invalid, NotFound
from app.core.services import Services, get_services
from app.datasets import service as datasets
from app.evaluation import service
from app.web.templating import templates
from workers.models.names import REGISTERED_MODELS

router = APIRouter(tags=["evaluation"])

REGIME_COLORS = {"helpful": "#1c7ed6", "harmless": "#e8590c", "mixed": "#7048e8"}
TYPE_LABELS = {"helpful": "Helpful-type", "harmless": "Harmless-type", "all": "overall"}
SCOPE_COLORS = {"all": "#343a40", "helpful": "#1c7ed6", "harmless": "#e8590c"}


def _page(request: Request, name: str, **ctx: Any) -> Response:
    return templates.TemplateResponse(request, name, ctx)


def _type_label(subset_type: str | None) -> str:
    return TYPE_LABELS.get(subset_type or "", subset_type or "other")


def _checkpoint_or_404(services: Services, checkpoint_id: str) -> Any:
    ck = service.get_checkpoint(services, checkpoint_id)
    if ck is None:
        raise NotFound(f"unknown checkpoint {checkpoint_id!r}; list them at /api/lab/checkpoints")
    return ck


def _evaluation_or_404(services: Services, key: str) -> Any:
    run = service.evaluation_run(services, key)
    if run is None:
        raise NotFound(f"no stored evaluation with key {key!r}; list them at /api/lab/evaluations")
    return run


# =============================================================================================== JSON API


@router.get("/api/lab/checkpoints")
def api_checkpoints(base_model: str | None = None,
                    services: Services = Depends(get_services)) -> dict[str, Any]:
    cks = service.checkpoints(services, base_model)
    acc = service.latest_accuracies(services, [c.id for c in cks])
    return {"checkpoints": [{**service.checkpoint_dict(c), "test": acc.get(c.id)} for c in cks]}


@router.get("/api/lab/checkpoints/{checkpoint_id}")
def api_checkpoint(checkpoint_id: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    ck = _checkpoint_or_404(services, checkpoint_id)
    runs = service.evaluation_runs(services, [ck.id])
    return {**service.checkpoint_dict(ck), "meta": service.finite(ck.meta or {}),
            "evaluations": [service.run_dict(r) for r in runs]}


@router.get("/api/lab/checkpoints/{checkpoint_id}/history")
def api_history(checkpoint_id: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    ck = _checkpoint_or_404(services, checkpoint_id)
    return {"checkpoint": ck.id, "rows": service.finite(service.training_history(services, ck.id))}


@router.get("/api/lab/evaluations")
def api_evaluations(checkpoint: str | None = None,
                    services: Services = Depends(get_services)) -> dict[str, Any]:
    if checkpoint is not None:
        _checkpoint_or_404(services, checkpoint)
    runs = service.evaluation_runs(services, [checkpoint] if checkpoint else None)
    return {"evaluations": [service.run_dict(r) for r in runs]}


@router.get("/api/lab/evaluations/{result_key}")
def api_evaluation(result_key: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    run = _evaluation_or_404(services, result_key)
    return {**service.run_dict(run), **service.evaluation_results(services, result_key)}


@router.get("/api/lab/evaluations/{result_key}/flips")
def api_flips(result_key: str, a: str = Query(..., description="checkpoint id"),
              b: str = Query(..., description="checkpoint id"), limit: int = 200,
              services: Services = Depends(get_services)) -> dict[str, Any]:
    run = _evaluation_or_404(services, result_key)
    covered = set(run.params.get("checkpoints", []))
    for ck in (a, b):
        if ck not in covered:
            raise NotFound(f"checkpoint {ck!r} is not part of evaluation {result_key!r}")
    counts = service.flip_counts(services, result_key, a, b)
    items = service.flipped_items(services, result_key, a, b, min(max(limit, 1), 10_000))
    return {"result_key": result_key, "a": a, "b": b, **counts, "items": service.finite(items)}


@router.get("/api/lab/compare/{base_model:path}")
def api_compare(base_model: str, seed: int | None = None, eval: str | None = None,
                services: Services = Depends(get_services)) -> dict[str, Any]:
    return _comparison(services, base_model, seed, eval)


def _comparison(services: Services, base_model: str, seed: int | None, key: str | None) -> dict[str, Any]:
    if key:
        _evaluation_or_404(services, key)
    data = service.comparison(services, base_model, seed, key)
    if data is None:
        known = ", ".join(service.base_models(services)) or "none yet"
        what = f"base model {base_model!r}" + (f" with seed {seed}" if seed is not None else "")
        raise NotFound(f"no checkpoints for {what}; trained base models: {known}")
    if key and not data["evaluated"]:
        raise NotFound(f"evaluation {key!r} has no results for base model {base_model!r}")
    return data


# =============================================================================================== figures


def _diagonal() -> dict[str, Any]:
    return {"type": "scatter", "mode": "lines", "x": [0, 1], "y": [0, 1], "name": "perfect calibration",
            "line": {"dash": "dash", "color": "#adb5bd"}, "hoverinfo": "skip"}


def _reliability_layout() -> dict[str, Any]:
    return {"xaxis": {"title": {"text": "mean confidence P(chosen ≻ rejected)"}, "range": [0, 1]},
            "yaxis": {"title": {"text": "observed frequency"}, "range": [0, 1]},
            "margin": {"t": 20}, "legend": {"orientation": "h", "y": -0.2}}


def _reliability_trace(bins: list[dict[str, Any]], name: str, color: str) -> dict[str, Any]:
    pts = [b for b in bins if b.get("count") and b.get("mean_confidence") is not None]
    return {"type": "scatter", "mode": "lines+markers", "name": name, "line": {"color": color},
            "x": [b["mean_confidence"] for b in pts], "y": [b["accuracy"] for b in pts],
            "customdata": [b["count"] for b in pts],
            "hovertemplate": "confidence %{x:.2f}<br>frequency %{y:.2f}<br>%{customdata} pairs"}


def training_figure(history: list[dict[str, Any]]) -> dict[str, Any]:
    data = []
    curves = (("train_loss", "y", "#1c7ed6", "solid"), ("eval_loss", "y", "#e8590c", "dot"),
              ("train_acc", "y2", "#1c7ed6", "solid"), ("eval_acc", "y2", "#e8590c", "dot"))
    for col, axis, color, dash in curves:
        pts = [r for r in history if r.get(col) is not None]
        data.append({"type": "scatter", "mode": "lines+markers", "name": col.replace("_", " "), "yaxis": axis,
                     "x": [r["step"] for r in pts], "y": [r[col] for r in pts],
                     "line": {"color": color, "dash": dash}, "marker": {"size": 5}})
    layout = {"xaxis": {"anchor": "y2", "title": {"text": "step"}},
              "yaxis": {"domain": [0.55, 1.0], "title": {"text": "loss"}},
              "yaxis2": {"domain": [0.0, 0.45], "title": {"text": "accuracy"}, "range": [0, 1.02],
                         "anchor": "x"},
              "margin": {"t": 20}, "legend": {"orientation": "h", "y": -0.15}}
    return {"data": data, "layout": layout}


def _subset_axis(entries: list[dict[str, Any]]) -> list[list[str]]:
    """Two-level category axis: subset type over subset name, so each subset's type is marked."""
    return [[_type_label(e["subset_type"]) for e in entries], [e["subset"] for e in entries]]


def _acc_layout(**extra: Any) -> dict[str, Any]:
    return {"barmode": "group", "yaxis": {"title": {"text": "accuracy"}, "range": [0, 1.05]},
            "margin": {"t": 20}, "legend": {"orientation": "h", "y": -0.25},
            "shapes": [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": 0.5, "y1": 0.5,
                        "line": {"dash": "dot", "color": "#868e96", "width": 1}}], **extra}


def rm_accuracy_figure(rows: list[dict[str, Any]], regime: str) -> dict[str, Any]:
    """One RM's per-subset accuracy with its 95% bootstrap CI, and the two length baselines beside it."""
    entries = sorted(rows, key=lambda r: (service.type_order(r["subset_type"]), r["subset"]))
    x = _subset_axis(entries)
    acc = [r["accuracy"] for r in entries]
    data = [
        {"type": "bar", "name": f"{regime} RM", "x": x, "y": acc,
         "marker": {"color": REGIME_COLORS.get(regime, "#495057")},
         "customdata": [[r["n_items"], r["ci_lo"], r["ci_hi"]] for r in entries],
         "hovertemplate": "accuracy %{y:.3f}<br>95% CI [%{customdata[1]:.3f}, %{customdata[2]:.3f}]"
                          "<br>%{customdata[0]} items",
         "error_y": {"type": "data", "symmetric": False,
                     "array": [_gap(r["ci_hi"], r["accuracy"]) for r in entries],
                     "arrayminus": [_gap(r["accuracy"], r["ci_lo"]) for r in entries]}},
        {"type": "bar", "name": "length baseline: longer wins", "x": x,
         "y": [r["length_longer"] for r in entries], "marker": {"color": "#adb5bd"}},
        {"type": "bar", "name": "length baseline: shorter wins", "x": x,
         "y": [r["length_shorter"] for r in entries], "marker": {"color": "#dee2e6"}},
    ]
    return {"data": data, "layout": _acc_layout()}


def _gap(hi: float | None, lo: float | None) -> float | None:
    return None if hi is None or lo is None else max(0.0, hi - lo)


def compare_accuracy_figure(cmp: dict[str, Any]) -> dict[str, Any]:
    """Grouped bars by subset, one bar per regime; error bars = std over seeds, or the CI for one seed."""
    entries = cmp["subsets"]
    x = _subset_axis(entries)
    data = []
    for regime in service.REGIMES:
        if not any(regime in e["regimes"] for e in entries):
            continue
        vals = [e["regimes"].get(regime) or {} for e in entries]
        plus, minus = [], []
        for v in vals:
            if v.get("n_seeds", 0) > 1:
                plus.append(v.get("std"))
                minus.append(v.get("std"))
            else:
                plus.append(_gap(v.get("ci_hi"), v.get("mean")))
                minus.append(_gap(v.get("mean"), v.get("ci_lo")))
        data.append({"type": "bar", "name": regime, "x": x, "y": [v.get("mean") for v in vals],
                     "marker": {"color": REGIME_COLORS[regime]},
                     "customdata": [[v.get("n_seeds", 0), v.get("std")] for v in vals],
                     "hovertemplate": f"{regime}: %{{y:.3f}}<br>seeds %{{customdata[0]}}, "
                                      "std %{customdata[1]:.3f}<extra></extra>",
                     "error_y": {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus}})
    return {"data": data, "layout": _acc_layout()}


def compare_types_figure(cmp: dict[str, Any]) -> dict[str, Any]:
    """Mean accuracy per subset type (mean over the type's subsets), one bar per regime."""
    types = cmp["types"]
    x = [f"{_type_label(t['subset_type'])} ({max(v['n_subsets'] for v in t['regimes'].values())} subsets)"
         for t in types]
    data = []
    for regime in service.REGIMES:
        if not any(regime in t["regimes"] for t in types):
            continue
        vals = [t["regimes"].get(regime) or {} for t in types]
        multi = any(v.get("n_seeds", 0) > 1 for v in vals)
        trace: dict[str, Any] = {"type": "bar", "name": regime, "x": x, "y": [v.get("mean") for v in vals],
                                 "marker": {"color": REGIME_COLORS[regime]},
                                 "text": [None if v.get("mean") is None else f"{v['mean']:.3f}"
                                          for v in vals],
                                 "textposition": "outside"}
        if multi:
            trace["error_y"] = {"type": "data", "array": [v.get("std") for v in vals]}
        data.append(trace)
    return {"data": data, "layout": _acc_layout()}


TRANSFER_METRICS = (("transferability", "transferability of mixed"),
                    ("jaccard_helpful", "Jaccard(mixed, helpful)"),
                    ("jaccard_harmless", "Jaccard(mixed, harmless)"))


def transfer_figure(cmp: dict[str, Any]) -> dict[str, Any]:
    """Heatmap: transferability and the correct-set Jaccards of the mixed RM, per subset."""
    rows = cmp["transfer"]
    x = [f"{r['subset']} · {_type_label(r['subset_type'])}" for r in rows]
    z = [[r[m] for r in rows] for m, _ in TRANSFER_METRICS]
    data = [{"type": "heatmap", "name": "transfer", "x": x, "y": [label for _, label in TRANSFER_METRICS],
             "z": z,
             "zmin": 0, "zmax": 1, "colorscale": "Viridis", "texttemplate": "%{z:.2f}",
             "hovertemplate": "%{y}<br>%{x}: %{z:.3f}<extra></extra>"}]
    return {"data": data, "layout": {"margin": {"t": 20, "l": 180}, "xaxis": {"automargin": True},
                                     "yaxis": {"autorange": "reversed"}}}


def compare_reliability_figure(cmp: dict[str, Any]) -> dict[str, Any]:
    multi = len({r["seed"] for r in cmp["reliability"]}) > 1
    data = [_diagonal()]
    for r in cmp["reliability"]:
        name = f"{r['regime']} · seed {r['seed']}" if multi else r["regime"]
        data.append(_reliability_trace(r["bins"], name, REGIME_COLORS.get(r["regime"], "#343a40")))
    return {"data": data, "layout": _reliability_layout()}


# =============================================================================================== pages


def _lab_jobs(services: Services) -> list[Job]:
    jobs = services.jobs.list(kind="train", limit=30) + services.jobs.list(kind="evaluate", limit=30)
    return sorted(jobs, key=lambda j: j.created_at, reverse=True)[:30]


@router.get("/lab", response_class=HTMLResponse, include_in_schema=False)
def lab_page(request: Request, services: Services = Depends(get_services)) -> Response:
    return _page(request, "lab/index.html", models=list(REGISTERED_MODELS),
                 checkpoints=service.checkpoints(services), datasets=datasets.list_datasets(services),
                 jobs=_lab_jobs(services), regimes=service.REGIMES)


@router.get("/lab/ui/jobs", response_class=HTMLResponse, include_in_schema=False)
def lab_jobs(request: Request, services: Services = Depends(get_services)) -> Response:
    return _page(request, "partials/job_table.html", jobs=_lab_jobs(services))


def _limit(limit: str) -> int | None:
    if not limit.strip():
        return None
    try:
        value = int(limit)
    except ValueError as exc:
        raise Invalid(f"pairs per objective must be a whole number, got {limit!r}") from exc
    if value < 1:
        raise Invalid(f"pairs per objective must be at least 1, got {value}")
    return value


@router.post("/lab/ui/train", response_class=HTMLResponse, include_in_schema=False)
def launch_train(request: Request, model: str = Form(""), model_text: str = Form(""),
                 regime: str = Form("mixed"), preset: str = Form("demo"), seed: int = Form(0),
                 source: str = Form("bundled"), limit: str = Form(""),
                 services: Services = Depends(get_services)) -> Response:
    name = model_text.strip() or model.strip()
    if not name:
        raise Invalid("choose a model or type a Hugging Face id / local path")
    dataset: dict[str, Any] = {"source": source, "split": "train"}
    n = _limit(limit)
    if n is not None:
        dataset["limit"] = n
    regimes = list(service.REGIMES) if regime == "all" else [regime]
    launched: list[dict[str, Any]] = []
    first_error: AppError | None = None
    for r in regimes:
        params = {"model": name, "regime": r, "preset": preset, "seed": seed, "dataset": dataset}
        try:
            job, cached = services.jobs.submit("train", params)
            launched.append({"regime": r, "job": job, "cached": cached, "error": None})
        except AppError as exc:
            first_error = first_error or exc
            launched.append({"regime": r, "job": None, "cached": False, "error": str(exc)})
    if first_error is not None and not any(x["job"] for x in launched):
        raise first_error
    return _page(request, "lab/launched.html", launched=launched)


@router.post("/lab/ui/evaluate", response_class=HTMLResponse, include_in_schema=False)
def launch_evaluate(request: Request, checkpoints: list[str] = Form([]),
                    source: str = Form("bundled"), split: str = Form("test"), limit: str = Form(""),
                    services: Services = Depends(get_services)) -> Response:
    chosen = [c for c in checkpoints if c.strip()]
    if not chosen:
        raise Invalid("pick at least one checkpoint to evaluate")
    dataset: dict[str, Any] = {"source": source, "split": split}
    n = _limit(limit)
    if n is not None:
        dataset["limit"] = n
    job, cached = services.jobs.submit("evaluate", {"checkpoints": chosen, "dataset": dataset})
    return _page(request, "lab/launched.html", launched=[{"regime": None, "job": job, "cached": cached,
                                                          "error": None}])


@router.get("/lab/runs", response_class=HTMLResponse, include_in_schema=False)
def runs_page(request: Request, services: Services = Depends(get_services)) -> Response:
    cks = service.checkpoints(services)
    acc = service.latest_accuracies(services, [c.id for c in cks])
    groups: dict[str, list[dict[str, Any]]] = {}
    for c in cks:
        groups.setdefault(c.base_model, []).append({**service.checkpoint_dict(c), "test": acc.get(c.id)})
    return _page(request, "lab/runs.html", groups=groups)


@router.get("/lab/rm/{checkpoint_id}", response_class=HTMLResponse, include_in_schema=False)
def rm_page(request: Request, checkpoint_id: str, eval: str | None = None,
            services: Services = Depends(get_services)) -> Response:
    ck = _checkpoint_or_404(services, checkpoint_id)
    runs = service.evaluation_runs(services, [ck.id])
    if eval:
        run = _evaluation_or_404(services, eval)
        if ck.id not in run.params.get("checkpoints", []):
            raise NotFound(f"evaluation {eval!r} did not evaluate checkpoint {ck.id!r}")
        key: str | None = eval
    else:
        key = runs[0].result_key if runs else None
    history = service.finite(service.training_history(services, ck.id))
    rows = service.finite(service.subset_rows(services, key, [ck.id])) if key else []
    rows.sort(key=lambda r: (service.type_order(r["subset_type"]), r["subset"]))
    bins = service.finite(service.reliability(services, key, ck.id)) if key else []
    overall = next((r for r in rows if r["subset"] == "all"), None)
    rel_data = [_diagonal()] + [
        _reliability_trace([b for b in bins if b["scope"] == scope], f"{scope} pairs",
                           SCOPE_COLORS.get(scope, "#495057"))
        for scope in sorted({b["scope"] for b in bins}, key=lambda s: (s != "all", s))]
    figures = {
        "training": training_figure(history) if history else None,
        "accuracy": rm_accuracy_figure(rows, ck.regime) if rows else None,
        "reliability": {"data": rel_data, "layout": _reliability_layout()} if bins else None,
    }
    return _page(request, "lab/rm.html", ck=service.checkpoint_dict(ck), meta=service.finite(ck.meta or {}),
                 runs=[service.run_dict(r) for r in runs], result_key=key, rows=rows, overall=overall,
                 history=history, figures=service.finite(figures), type_label=_type_label)


@router.get("/lab/compare/{base_model:path}", response_class=HTMLResponse, include_in_schema=False)
def compare_page(request: Request, base_model: str, seed: str = "", eval: str = "",
                 services: Services = Depends(get_services)) -> Response:
    seed_value: int | None = None
    if seed.strip():
        try:
            seed_value = int(seed)
        except ValueError as exc:
            raise Invalid(f"seed must be a whole number, got {seed!r}") from exc
    cmp = _comparison(services, base_model, seed_value, eval.strip() or None)
    all_seeds = sorted({c.seed for c in service.checkpoints(services, base_model)})
    figures = {
        "accuracy": compare_accuracy_figure(cmp) if cmp["subsets"] else None,
        "types": compare_types_figure(cmp) if cmp["types"] else None,
        "transfer": transfer_figure(cmp) if cmp["transfer"] else None,
        "reliability": compare_reliability_figure(cmp) if cmp["reliability"] else None,
    }
    runs = service.evaluation_runs(services, [c["id"] for cs in cmp["checkpoints"].values() for c in cs])
    return _page(request, "lab/compare.html", cmp=cmp, figures=service.finite(figures), all_seeds=all_seeds,
                 runs=[service.run_dict(r) for r in runs], regimes=service.REGIMES, type_label=_type_label,
                 missing=[r for r in service.REGIMES if not cmp["checkpoints"][r]])
