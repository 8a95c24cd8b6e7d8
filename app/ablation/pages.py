"""Ablation pages and htmx partials: live toggles on the dashboard and neuron pages, result pages.

A toggle is a GET (allowed through read-only share links): `/ui/live/{checkpoint}?part=...` starts a live
run (`app.ablation.runs`) and answers a partial with its first-order estimate; the partial then long-polls
`/ui/live/runs/{id}` while the exact rounds, and then the random control's, stream in. The toggle's state
is pushed into the page URL (`HX-Push-Url`, built from the page's own URL), so reloading or sharing the
page reproduces the toggle; the panels carry
`hx-history="false"`, so htmx takes no snapshot of the (large) page for its history cache on a toggle.
Queueing the exact full-test evaluation is a POST (refused through share links). Figures are dict specs
embedded as JSON.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.ablation import figures, service
from app.ablation.live import LivePool, LivePoolDep
from app.ablation.runs import LiveRun, LiveRuns, LiveRunsDep, live_channel
from app.ablation.schemas import (
    ESTIMATE_CAVEAT,
    DashboardPanelView,
    LiveFormView,
    LiveView,
    NeuronPanelView,
    QueueForm,
    ToggleWhich,
    WarmView,
)
from app.core.checks import check_checkpoint
from app.core.db import Checkpoint
from app.core.deps import CheckpointDep, DatabaseDep, ServicesDep, StoreDep
from app.core.errors import Invalid, NotFound
from app.core.services import Services
from app.neurons import service as neurons
from app.neurons.figures import json_safe
from app.neurons.pages import dashboard_url, neuron_url
from app.web.templating import render, templates
from workers.contract.jobs import NeuronIndexSet
from workers.contract.live import DEFAULT_PROBE_PAIRS
from workers.contract.vocab import AblationMode, Experiment, HookPoint, JobKind, OverlapPart, SharedMode

router = APIRouter(include_in_schema=False)

# Query keys that carry a toggle's state in a page URL (the page's own keys, such as p or stat, stay as they are).
TOGGLE_KEYS = ("ck", "part", "set", "layer", "mode", "factor", "probe_limit")
PART_LABELS: dict[str, str] = {
    OverlapPart.helpful: "H: helpful RM's top p%", OverlapPart.harmless: "R: harmless RM's top p%",
    OverlapPart.mixed: "M: mixed RM's top p%", OverlapPart.helpful_specific: "helpful-specific H \\ R",
    OverlapPart.harmless_specific: "harmless-specific R \\ H", OverlapPart.shared: "shared (H ∩ R)"}
SHORT_LABELS: dict[str, str] = {
    OverlapPart.helpful: "H (helpful RM's set)", OverlapPart.harmless: "R (harmless RM's set)",
    OverlapPart.mixed: "M (mixed RM's set)", OverlapPart.helpful_specific: "helpful-specific H \\ R",
    OverlapPart.harmless_specific: "harmless-specific R \\ H", OverlapPart.shared: "shared H ∩ R"}
NEURONS_SHOWN = 24
"""How many neurons a set shows as links before it says "+k more"."""
MODES: dict[str, str] = {AblationMode.zero: "zero (set to 0)", AblationMode.mean: "mean (set to its mean activation)",
                         AblationMode.scale: "scale (multiply)"}


def _page(request: Request, name: str, status_code: int = 200, **ctx: Any) -> Response:
    return templates.TemplateResponse(request, f"ablation/{name}", ctx, status_code=status_code)


def _g(x: float) -> str:
    """A number as the forms show and send it (10, not 10.0)."""
    return f"{x:g}"


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


def neuron_list(base_model: str | None, layers: Mapping[int, Sequence[int]],
                limit: int = NEURONS_SHOWN) -> dict[str, Any]:
    """A neuron set as the pages show it: its first `limit` neurons as `layer·index` links to their neuron
    pages (plain text where the base model is unknown), and how many more there are."""
    every = [(int(layer), int(i)) for layer, idx in sorted(layers.items()) for i in idx]
    links = [{"layer": layer, "index": i, "url": neuron_url(base_model, layer, i) if base_model else None}
             for layer, i in every[:limit]]
    return {"links": links, "more": len(every) - len(links), "total": len(every)}


def _captures(services: Services, base_model: str, hook: HookPoint) -> list[dict[str, Any]]:
    captured = service.captures(store=services.store, db=services.db, base_model=base_model, hook=hook)
    if not captured:
        raise NotFound(f"no capture of base model {base_model!r} at hook {str(hook)!r}")
    return captured


# -- live toggle panels -------------------------------------------------------------------------------
@router.get("/ui/ablation/panel", response_class=HTMLResponse)
def dashboard_panel(request: Request, v: Annotated[DashboardPanelView, Query()], services: ServicesDep) -> Response:
    """The dashboard's toggle panel: target RM, what to switch off (a part of the overlap or a named set,
    optionally one layer's slice), how; with the toggle state from the page URL it computes at once."""
    captured = _captures(services, v.base_model, v.hook)
    ck = v.ck or service.default_checkpoint(captured, v.seed)
    part = v.part or ("" if v.set_name else OverlapPart.shared)
    view = {"p": _g(v.p), "stat": v.stat, "seed": v.seed, "shared": v.shared, "hook": v.hook,
            "include_frozen": "true" if v.include_frozen else ""}
    toggle = {**view, "part": part, "set": v.set_name or "", "layer": "" if v.layer is None else str(v.layer),
              "mode": v.mode, "factor": _g(v.factor), "probe_limit": v.probe_limit}
    return _page(request, "_dashboard_panel.html", base_model=v.base_model, captures=captured, ck=ck, view=view,
                 toggle=toggle, sets=[ns.name for ns in neurons.stored_sets(db=services.db, base_model=v.base_model)],
                 n_layers=max(int(r["n_layers"]) for r in captured), part_labels=PART_LABELS, modes=MODES,
                 autorun=f"/ui/live/{ck}?" + urlencode(toggle),
                 warm_url="/ui/live/warm?" + urlencode({"base_model": v.base_model, "seed": v.seed, "ck": ck,
                                                        "hook": v.hook, "probe_limit": v.probe_limit}))


@router.get("/ui/ablation/neuron-panel", response_class=HTMLResponse)
def neuron_panel(request: Request, v: Annotated[NeuronPanelView, Query()], services: ServicesDep) -> Response:
    """The neuron page's toggle: switch this one neuron off in any captured RM of the base model."""
    captured = _captures(services, v.model, v.hook)
    ck = v.ck or service.default_checkpoint(captured, 0)
    neurons_json = json.dumps({str(v.layer): [v.index]})
    toggle = {"neurons": neurons_json, "mode": v.mode, "factor": _g(v.factor), "probe_limit": v.probe_limit}
    seed = next((int(r["seed"]) for r in captured if str(r["checkpoint"]) == ck), 0)
    return _page(request, "_neuron_panel.html", model=v.model, layer=v.layer, index=v.index, hook=v.hook,
                 captures=captured, ck=ck, neurons_json=neurons_json, toggle=toggle, modes=MODES,
                 autorun=f"/ui/live/{ck}?" + urlencode(toggle) if v.ck else None,
                 warm_url="/ui/live/warm?" + urlencode({"base_model": v.model, "seed": seed, "ck": ck, "hook": v.hook,
                                                        "probe_limit": v.probe_limit}))


def _describe(v: LiveView) -> tuple[str, str]:
    """What a toggle switches off, in words, and its layer scope (neurons named directly: the page shows
    them as links between the two)."""
    if v.neurons:
        what = "neurons"
    elif v.set_name:
        what = f"named set “{v.set_name}”"
    else:
        part = v.part or ""
        what = f"{SHORT_LABELS.get(part, part)} at top {v.p:g}% by {v.stat}, seed {v.seed}"
        if part in figures.SET_PARTS and v.shared != SharedMode.intersection:
            what += f" ({v.shared} rule)"
        if v.include_frozen:
            what += ", layers frozen in training included"
    return what, (f", layer {v.layer} only" if v.layer is not None else "")


FIRST_WAIT_S = 1.5
"""How long a toggle's first answer waits for the estimate (milliseconds once the worker has its estimator)."""
POLL_WAIT_S = 2.0
"""How long one poll of a running run waits for its next change (a long poll: no busy polling)."""


def _series(run: LiveRun) -> list[dict[str, Any]]:
    """The figure's and table's rows: estimate, exact so far, control (exact when streamed, else estimated)."""
    out: list[dict[str, Any]] = []
    if run.estimate is not None:
        out.append({"kind": "estimate", "label": "first-order estimate",
                    "values": {o: e.model_dump() for o, e in run.estimate.objectives.items()}})
    exact = run.rounds.get("set")
    if exact is not None:
        done = "" if exact.final else f" ({exact.round}/{exact.n_rounds} rounds)"
        out.append({"kind": "exact", "label": "exact" + done,
                    "values": {o: r.model_dump() for o, r in exact.objectives.items()}})
    control = run.rounds.get("control")
    if control is not None:
        done = "" if control.final else f" ({control.round}/{control.n_rounds} rounds)"
        out.append({"kind": "control", "label": "random control, exact" + done,
                    "values": {o: r.model_dump() for o, r in control.objectives.items()}})
    elif run.estimate is not None and run.estimate.control is not None:
        out.append({"kind": "control", "label": "random control, estimate",
                    "values": {o: e.model_dump() for o, e in run.estimate.control.items()}})
    return out


def run_view(run: LiveRun) -> dict[str, Any]:
    """What the run fragment shows, as plain data (also the figure's input)."""
    with run.cond:
        series = _series(run)
        objectives = sorted({o for s in series for o in s["values"]})
        exact = run.rounds.get("set")
        answer = exact.answer.model_dump(mode="json") if exact is not None and exact.answer is not None else None
        return {"id": run.id, "state": run.state, "version": run.version, "meta": run.meta, "series": series,
                "objectives": objectives, "exact": exact, "control": run.rounds.get("control"),
                "answer": answer, "estimate": run.estimate, "estimate_error": run.estimate_error,
                "error": run.error, "timings": run.timings(), "rounds_computed": run.rounds_computed,
                "worker_was_ready": run.worker_was_ready}


def _render_run(request: Request, run: LiveRun) -> Response:
    view = run_view(run)
    meta = view["meta"]
    shown = json_safe(view["answer"]) if view["answer"] else None
    return _page(request, "_run.html", run=view, spec=json_safe(figures.run_spec(view)), answer=shown,
                 shift_spec=json_safe(figures.shift_spec(shown)) if shown else None,
                 neuron_list=neuron_list(meta["base_model"], {int(k): v for k, v in meta["neurons"].items()}),
                 caveat=ESTIMATE_CAVEAT, neurons_json=json.dumps(meta["neurons"], separators=(",", ":")))


def _live(request: Request, services: Services, pool: LivePool, runs: LiveRuns, checkpoint: Checkpoint,
          v: LiveView) -> Response:
    chosen = service.toggle_neurons(store=services.store, db=services.db, checkpoint=checkpoint, which=v)
    what, scope = _describe(v)
    run = service.start_live_run(store=services.store, settings=services.settings, pool=pool, runs=runs,
                                 checkpoint=checkpoint, chosen=chosen, how=v, hook=v.hook,
                                 channel=live_channel(request),
                                 meta={"what": what, "scope": scope, "named": bool(v.neurons),
                                       "per_layer": [(layer, len(idx)) for layer, idx in chosen.layers.items()]})
    run.wait_estimate(FIRST_WAIT_S)
    resp = _render_run(request, run)
    if v.push:
        toggle = {"ck": checkpoint.id, "part": None if (v.set_name or v.neurons) else v.part, "set": v.set_name,
                  "layer": v.layer, "mode": None if v.mode == AblationMode.zero else v.mode,
                  "factor": _g(v.factor) if v.mode == AblationMode.scale else None,
                  "probe_limit": None if v.probe_limit == DEFAULT_PROBE_PAIRS else v.probe_limit}
        url = _push_url(request, toggle)
        if url:
            resp.headers["HX-Push-Url"] = url
    return resp


@router.get("/ui/live/warm", response_class=HTMLResponse)
def live_warm(request: Request, v: Annotated[WarmView, Query()], services: ServicesDep, pool: LivePoolDep) -> Response:
    """Warm the view's three RMs in the background (the selected one first, then one at a time) and say so."""
    warmed = service.warm_view(store=services.store, db=services.db, settings=services.settings, pool=pool,
                               base_model=v.base_model, seed=v.seed, first=v.ck, how=v, hook=v.hook)
    status = {s["key"].split(":")[0]: s for s in pool.status()}
    return _page(request, "_warm.html", warmed=warmed, status=status)


@router.get("/ui/live/runs/{run_id}", response_class=HTMLResponse)
def live_run(request: Request, run_id: Annotated[str, Path(max_length=64, pattern=r"^[0-9a-f]{1,64}$")],
             runs: LiveRunsDep, since: Annotated[int, Query(ge=-1, le=1_000_000)] = -1) -> Response:
    """A run's fragment once it changed after version `since` (a long poll of at most POLL_WAIT_S)."""
    run = runs.get(run_id, channel=live_channel(request))
    run.wait(since, POLL_WAIT_S)
    run.touch()
    return _render_run(request, run)


@router.get("/ui/live/estimate", response_class=HTMLResponse)
def live_estimate(request: Request, v: Annotated[LiveFormView, Query()], services: ServicesDep,
                  pool: LivePoolDep) -> Response:
    """The first-order estimate of the panel's toggle (app.js asks for it beside the exact answer)."""
    checkpoint = check_checkpoint(services, v.ck)
    chosen = service.toggle_neurons(store=services.store, db=services.db, checkpoint=checkpoint, which=v)
    est = service.live_estimate(store=services.store, settings=services.settings, pool=pool, checkpoint=checkpoint,
                                chosen=chosen, how=v, hook=v.hook)
    return _page(request, "_estimate.html", est=est)


@router.get("/ui/live/{checkpoint}", response_class=HTMLResponse)
def live_partial(request: Request, checkpoint: CheckpointDep, v: Annotated[LiveView, Query()],
                 services: ServicesDep, pool: LivePoolDep, runs: LiveRunsDep) -> Response:
    """One toggle, as a partial: its estimate at once, then its exact rounds as the partial polls itself."""
    return _live(request, services, pool, runs, checkpoint, v)


@router.get("/ui/live", response_class=HTMLResponse)
def live_form(request: Request, v: Annotated[LiveFormView, Query()], services: ServicesDep,
              pool: LivePoolDep, runs: LiveRunsDep) -> Response:
    """The same as /ui/live/{checkpoint}, with the checkpoint as a form field (the panels' target select)."""
    return _live(request, services, pool, runs, check_checkpoint(services, v.ck), v)


@router.post("/ui/ablation/queue", response_class=HTMLResponse)
def queue_full(request: Request, form: Annotated[QueueForm, Form()], services: ServicesDep) -> Response:
    """Queue the exact evaluation of a toggle on the whole bundled test split (an `ablate` job, experiment
    'single', with layer-matched random controls); answer the job's live progress fragment."""
    checkpoint = check_checkpoint(services, form.checkpoint)
    chosen = service.toggle_neurons(store=services.store, db=services.db, checkpoint=checkpoint,
                                    which=ToggleWhich(neurons=form.neurons))
    if not chosen.size():
        raise Invalid("nothing to ablate: the toggle selects no neurons")
    params = service.single_params(checkpoint=checkpoint.id, chosen=chosen, mode=form.mode, factor=form.factor)
    job, cached = services.jobs.submit(JobKind.ablate, params)
    return render(request, "jobs/_status.html", job=job, cached=cached)


# -- result pages -------------------------------------------------------------------------------------
@router.get("/ablations", response_class=HTMLResponse)
def ablations_index(request: Request, store: StoreDep, db: DatabaseDep,
                    checkpoint: Annotated[str | None, Query(max_length=64)] = None) -> Response:
    """Every stored ablation result, grouped by the RM it ablated."""
    return _page(request, "index.html", groups=service.index_groups(store=store, db=db, checkpoint=checkpoint),
                 checkpoint=checkpoint)


def _group_label(grp: str) -> str:
    return grp.split(":", 1)[1] if ":" in grp else grp


@router.get("/ablations/{result_key}", response_class=HTMLResponse)
def ablation_page(request: Request, result_key: str, store: StoreDep, db: DatabaseDep) -> Response:
    """One result: its experiment's figure and tables, the flipped items, the command that recomputes it."""
    try:
        rows, flips = service.stored_result(store=store, result_key=result_key)
    except NotFound as exc:
        return _page(request, "error.html", status_code=exc.status, title="Ablation result", message=exc.message)
    experiment = str(rows[0]["experiment"])
    ck = str(rows[0]["checkpoint"])
    ck_info = service.checkpoint_info(db=db, ids=[ck]).get(ck, {})
    run = service.run_records(db=db, result_keys=[result_key]).get(result_key)
    base = ck_info.get("base_model")
    ctx: dict[str, Any] = {"result_key": result_key, "experiment": experiment, "rows": rows, "flips": flips,
                           "checkpoint": ck, "ck": ck_info, "regime": ck_info.get("regime") or rows[0]["regime"],
                           "run": run, "command": service.recompute_command(run["params"]) if run else None,
                           "label": _group_label, "set_labels": figures.SET_LABELS, "specs": {},
                           **service.experiment_view(rows, experiment, run)}
    if base:
        ctx["dashboard"] = dashboard_url(base, seed=ck_info.get("seed"))
    if experiment == Experiment.A:
        ctx["specs"]["dose"] = json_safe(figures.dose_spec(rows))
    elif experiment == Experiment.B:
        ctx["specs"]["subsets"] = json_safe(figures.subsets_spec(rows))
    elif experiment == Experiment.C:
        ctx["specs"]["sets"] = json_safe(figures.sets_spec(rows))
    else:
        ctx["neuron_list"] = neuron_list(base, NeuronIndexSet.model_validate(ctx["neuron_set"]).layers, limit=60)
    return _page(request, "result.html", **ctx)
