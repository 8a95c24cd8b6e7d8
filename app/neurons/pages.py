"""Neuron pages: the captures index, the H/R/M overlap dashboard and one neuron's page.

Every page's view state lives in its URL query (p, stat, seed, hook, shared mode, scatter), so a URL
reproduces the view and can be shared read-only. A bad view parameter is an error page (422) that keeps
the form; an htmx request gets the error partial instead. Dataset text only reaches autoescaped HTML.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote, urlencode

import numpy as np
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from jinja2.utils import htmlsafe_json_dumps
from markupsafe import Markup

from app.core.deps import DatabaseDep, ServicesDep, StoreDep
from app.core.errors import AppError, NotFound
from app.neurons import figures, service
from app.neurons.figures import PART_LABELS
from app.neurons.schemas import (
    SCATTER_MODE_NAMES,
    SHARED_MODE_NAMES,
    STAT_NAMES,
    DashboardView,
    NeuronSetCreate,
    NeuronSetSummary,
    NeuronView,
    Percent,
    ScatterMode,
)
from app.web.templating import templates
from workers.contract.vocab import REGIMES, HookPoint, JobKind, OverlapPart, SharedMode, Side, Stat

router = APIRouter(tags=["neurons"], include_in_schema=False)

__all__ = ["dashboard_url", "neuron_url", "router"]

DEFAULT_HOOK = HookPoint.down_proj_input
REGIME_ORDER: dict[str, int] = {str(r): i for i, r in enumerate(REGIMES)}


# -- URLs -----------------------------------------------------------------------------------------------
def _model_path(base_model: str) -> str:
    return quote(base_model, safe="/")


def _with_query(path: str, query: dict[str, Any]) -> str:
    q = urlencode({k: v for k, v in query.items() if v is not None})
    return path + (f"?{q}" if q else "")


def dashboard_url(base_model: str, **query: Any) -> str:
    return _with_query(f"/models/{_model_path(base_model)}/dashboard", query)


def neuron_url(base_model: str, layer: int, index: int, **query: Any) -> str:
    return _with_query(f"/models/{_model_path(base_model)}/neurons/{layer}/{index}", query)


def _page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
    return templates.TemplateResponse(request, f"neurons/{name}", ctx, status_code=status_code)


def _error_page(request: Request, exc: AppError, title: str, **ctx: Any) -> Response:
    if request.headers.get("hx-request"):
        raise exc
    return _page(request, "error.html", status_code=exc.status, title=title, message=str(exc), **ctx)


# -- index ----------------------------------------------------------------------------------------------
def _group_captures(captures: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Base models → their captured checkpoints and the (seed, hook) views that have all three regimes."""
    unknown = "(unknown base model)"
    by_model: dict[str, dict[str, Any]] = {}
    for r in captures:
        name = r["base_model"] or unknown
        m = by_model.setdefault(name, {"name": name, "captures": [], "views": {}})
        m["captures"].append({**r, "short": str(r["checkpoint"])[:12]})
        m["views"].setdefault((r["seed"], r["hook"]), set()).add(r["regime"])
    out = []
    for name in sorted(by_model):
        m = by_model[name]
        views = []
        for (seed, hook), regimes in sorted(m["views"].items(), key=lambda kv: (kv[0][0], kv[0][1])):
            missing = sorted(set(REGIMES) - regimes)
            views.append({"seed": seed, "hook": hook, "complete": not missing, "missing": missing,
                          "url": dashboard_url(name, seed=seed, hook=hook) if not missing else None})
        m["views"] = views
        m["neuron0"] = neuron_url(name, 0, 0) if name != unknown else None
        out.append(m)
    return out


@router.get("/neurons", response_class=HTMLResponse)
def neurons_index(request: Request, store: StoreDep, db: DatabaseDep) -> Response:
    captures = [c.model_dump() for c in service.list_captures(store=store, db=db)]
    sets = [{**NeuronSetSummary.of(ns).model_dump(), "api": "/api/neuron-sets/" + quote(ns.name, safe="")}
            for ns in service.stored_sets(db=db)]
    return _page(request, "index.html", models=_group_captures(captures), sets=sets)


# -- dashboard ------------------------------------------------------------------------------------------
def _part_lists(base_model: str, masks: dict[OverlapPart, np.ndarray], hook: HookPoint,
                limit: int = 40) -> list[dict[str, Any]]:
    out = []
    q = {"hook": None if hook == DEFAULT_HOOK else hook}
    for part in (OverlapPart.helpful_specific, OverlapPart.harmless_specific, OverlapPart.shared):
        layers, idx = np.nonzero(masks[part])
        items = [{"layer": int(a), "index": int(b), "url": neuron_url(base_model, int(a), int(b), **q)}
                 for a, b in zip(layers[:limit], idx[:limit], strict=True)]
        out.append({"part": part, "label": PART_LABELS[part], "total": int(layers.size), "neurons": items})
    return out


def _captured_hooks(store: Any, db: Any, base_model: str, current: str) -> list[str]:
    """The hooks this model has a capture at (the current one too, so its page can say what is missing):
    a hook without a capture is not offered as if it had one."""
    have = {str(c.hook) for c in service.list_captures(store=store, db=db, base_model=base_model)}
    return [str(h) for h in HookPoint if str(h) in have or str(h) == current]


def _serialised(spec: dict[str, Any]) -> tuple[Markup, dict[str, Any]]:
    """A figure spec as the JSON its page embeds (escaped for a <script> block, as Jinja's `tojson`), and
    its `sample` (what the page says about the drawing)."""
    return Markup(htmlsafe_json_dumps(spec)), spec["sample"]


@router.get("/models/{base_model:path}/dashboard", response_class=HTMLResponse)
def dashboard(request: Request, store: StoreDep, db: DatabaseDep, base_model: str, p: str = "10",
              stat: str = Stat.A, seed: str = "0", shared: str = SharedMode.intersection, hook: str = DEFAULT_HOOK,
              scatter: str = ScatterMode.single, include_frozen: str | None = None) -> Response:
    raw = {"p": p, "stat": stat, "seed": seed, "shared": shared, "hook": hook, "scatter": scatter}
    if include_frozen is not None and include_frozen.strip():
        raw["include_frozen"] = include_frozen
    hooks = _captured_hooks(store, db, base_model, hook)
    form: dict[str, Any] = {"view": dict(raw), "stats": STAT_NAMES, "shared_modes": SHARED_MODE_NAMES,
                            "hooks": hooks, "uncaptured": [str(h) for h in HookPoint if str(h) not in hooks],
                            "queue_model": base_model, "scatter_modes": SCATTER_MODE_NAMES,
                            "action": f"/models/{_model_path(base_model)}/dashboard"}
    try:
        view = DashboardView.parse(**raw)
        form["view"].update(p=f"{view.p:g}", seed=view.seed)
        form["view"].pop("include_frozen", None)
        if view.include_frozen:
            form["view"]["include_frozen"] = "true"
        ov = service.compute_overlap(store=store, db=db, base_model=base_model, p=view.p, stat=view.stat,
                                     seed=view.seed, hook=view.hook, shared=view.shared,
                                     include_frozen=view.include_frozen)
        (xr, xs), (yr, ys), *_ = figures.scatter_axes(view.scatter, view.stat)
        x, y = (service.score_array(store=store, checkpoint=ov.summary.checkpoints[r], stat=view.stat, scope=s,
                                    hook=view.hook, info=ov.captures[r]) for r, s in ((xr, xs), (yr, ys)))
    except AppError as exc:
        return _error_page(request, exc, f"Neuron overlap · {base_model}", form=form)
    # The scatter (thousands of points) is built and serialised once per overlap and axes, then reused.
    scatter_key = ("scatter page", ov.key, view.scatter, figures.SCATTER_MAX_POINTS,
                   *(service.score_key(ov.captures[r], view.stat, s, view.hook) for r, s in ((xr, xs), (yr, ys))))
    scatter_json, scatter_sample = store.cache.get(
        scatter_key, lambda: _serialised(figures.scatter(x, y, ov.masks, ov.summary, view.scatter)),
        size=lambda v: len(v[0]) + 4096)
    specs = {"venn": figures.venn(ov.summary), "layers": figures.layer_heatmap(ov.summary)}
    hook_q = {"hook": view.hook} if view.hook != DEFAULT_HOOK else {}
    form["frozen_layers"] = ov.summary.frozen_layers
    return _page(request, "dashboard.html", **form, base_model=base_model, form=form,
                 frozen=_frozen_note(base_model, ov.summary.frozen_layers, form["view"]),
                 ov=ov.summary.model_dump(mode="json"), specs=specs, scatter_json=scatter_json,
                 scatter_sample=scatter_sample, parts=_part_lists(base_model, ov.masks, view.hook),
                 part_labels=PART_LABELS, neuron_base=f"/models/{_model_path(base_model)}/neurons/",
                 neuron_query=urlencode(hook_q),
                 api_url=f"/api/neurons/{_model_path(base_model)}/overlap?" + urlencode(
                     {"p": form["view"]["p"], "stat": view.stat, "seed": view.seed, "hook": view.hook,
                      "shared": view.shared, **({"include_frozen": "true"} if view.include_frozen else {})}),
                 permalink=dashboard_url(base_model, **form["view"]))


def _frozen_note(base_model: str, frozen: list[int], view: dict[str, Any]) -> dict[str, Any] | None:
    """What the dashboard says about layers frozen in training, and the link that switches them in or out."""
    if not frozen:
        return None
    included = view.get("include_frozen") == "true"
    other = {k: v for k, v in view.items() if k != "include_frozen"}
    return {"layers": frozen, "span": figures.layer_span(frozen), "included": included,
            "switch_url": dashboard_url(base_model, **other, **({} if included else {"include_frozen": "true"}))}


@router.post("/ui/neurons/queue-capture", response_class=HTMLResponse)
def queue_capture(request: Request, services: ServicesDep, base_model: Annotated[str, Form(max_length=256)],
                  hook: Annotated[HookPoint, Form()], seed: Annotated[int, Form(ge=0)] = 0) -> Response:
    """Queue the captures a view lacks at `hook` (one job per RM, the settings of its existing capture)."""
    params = service.missing_capture_params(store=services.store, db=services.db, base_model=base_model,
                                            seed=seed, hook=hook)
    jobs = [services.jobs.submit(JobKind.capture, p) for p in params]
    return templates.TemplateResponse(request, "neurons/_queued_captures.html", {"jobs": jobs, "hook": hook})


@router.post("/ui/neuron-sets", response_class=HTMLResponse)
def ui_save_part(store: StoreDep, db: DatabaseDep, name: Annotated[str, Form(min_length=1, max_length=256)],
                 base_model: Annotated[str, Form()], part: Annotated[OverlapPart, Form()],
                 p: Annotated[Percent, Form()] = 10.0, stat: Annotated[Stat, Form()] = Stat.A,
                 seed: Annotated[int, Form()] = 0, hook: Annotated[HookPoint, Form()] = DEFAULT_HOOK,
                 shared: Annotated[SharedMode, Form()] = SharedMode.intersection,
                 include_frozen: Annotated[bool, Form()] = False) -> Response:
    """The dashboard's "save set" form (htmx): store one overlap part, answer a one-line fragment."""
    body = NeuronSetCreate(name=name, base_model=base_model, part=part, p=p, stat=stat, seed=seed, hook=hook,
                           shared=shared, include_frozen=include_frozen)
    ns = service.create_set(store=store, db=db, body=body)
    api = "/api/neuron-sets/" + quote(ns.name, safe="")
    return HTMLResponse(templates.env.from_string(
        "<p class=\"saved-set\">Saved <b>{{ n.name }}</b>: {{ n.size }} neurons "
        "(<a href=\"{{ api }}\">JSON</a>)</p>").render(n=ns, api=api))


# -- one neuron -----------------------------------------------------------------------------------------
@router.get("/models/{model:path}/neurons/{layer:int}/{index:int}", response_class=HTMLResponse)
def neuron_page(request: Request, store: StoreDep, db: DatabaseDep, model: str, layer: int, index: int,
                stat: str = Stat.A, hook: str = DEFAULT_HOOK) -> Response:
    title = f"Neuron {layer}/{index} · {model}"
    try:
        view = NeuronView.parse(stat=stat, hook=hook)
        captures = service.base_model_captures(store=store, db=db, base_model=model)
        n_layers, n_neurons = service.base_model_shape(store=store, base_model=model, hook=view.hook,
                                                       captures=captures)
        if layer >= n_layers:
            raise NotFound(f"layer {layer} out of range: {model} has layers 0-{n_layers - 1}")
        if index >= n_neurons:
            raise NotFound(f"neuron {index} out of range: {model} has neurons 0-{n_neurons - 1} per layer")
    except AppError as exc:
        return _error_page(request, exc, title)
    stat, hook = view.stat, view.hook
    detail = service.neuron_detail(store=store, base_model=model, layer=layer, index=index, hook=hook,
                                   captures=captures)
    order = REGIME_ORDER  # objectives sort like the regimes of the same name
    detail["stats"].sort(key=lambda r: (order.get(r["regime"], 3), r["regime"] or "", r["checkpoint"],
                                        order.get(r["objective"], 3), r["side"] != Side.chosen))
    ranks = service.neuron_ranks(store=store, db=db, base_model=model, layer=layer, index=index, stat=stat,
                                 hook=hook, captures=captures)
    at_hook = [c for c in captures if c["hook"] == hook]
    frozen_in = [c for c in at_hook if layer in c.get("frozen_layers", ())]
    frozen = {"all": len(frozen_in) == len(at_hook),
              "rms": sorted({f"{c['regime']} RM (seed {c['seed']})" for c in frozen_in})} if frozen_in else None
    q = {"stat": stat if stat != Stat.A else None, "hook": hook if hook != DEFAULT_HOOK else None}
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
                 n_neurons=n_neurons, stat=stat, stats_names=STAT_NAMES, hook=hook,
                 hooks=_captured_hooks(store, db, model, hook),
                 rows=detail["stats"], ranks=ranks, frozen=frozen,
                 examples=[{"regime": k[0], "objective": k[1], "side": k[2], "entries": v}
                           for k, v in examples.items()],
                 spec=figures.neuron_stats(detail["stats"], stat), nav=nav,
                 action=f"/models/{_model_path(model)}/neurons/{layer}/{index}",
                 dashboard=dashboard_url(model, stat=stat, hook=hook if hook != DEFAULT_HOOK else None))

