"""The tension dial: scale the overlap's sets from 0 to 2× and plot helpful against harmless Δ accuracy.

The study's "controllable alignment" question as a picture: turning the shared set (H ∩ R) down or up should
move both objectives together, a specific set mostly its own. Mode 'scale' multiplies each selected neuron's
activation by the factor (1 = unchanged, 0 = ablated, 2 = doubled). The first-order estimate of every set at
every slider position comes at once (cheap, from the warm worker; cached per view); the exact answer of the
current position streams in as live runs, one channel per set, so moving the slider supersedes only each set's
older run. Factor 1 is the unchanged RM: Δ = 0 exactly, nothing is run.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import Field

from app.ablation import figures, service
from app.ablation.live import LivePoolDep
from app.ablation.pages import POLL_WAIT_S, SHORT_LABELS
from app.ablation.runs import LiveRun, LiveRuns, LiveRunsDep, live_channel
from app.ablation.schemas import Blank, ToggleHow, ToggleWhich
from app.core.checks import check_checkpoint
from app.core.db import Checkpoint
from app.core.deps import ServicesDep
from app.core.errors import AppError, NotFound
from app.core.services import Services
from app.neurons.figures import json_safe
from app.web.templating import templates
from workers.contract.jobs import NeuronIndexSet
from workers.contract.live import LiveEstimateRequest, LiveRound
from workers.contract.vocab import AblationMode, Objective, OverlapPart, SharedMode

router = APIRouter(include_in_schema=False)

STEP = 0.25
FACTORS: tuple[float, ...] = tuple(STEP * i for i in range(9))
"""The slider's positions, 0 to 2: each set's estimated curve passes through all of them."""
IDENTITY = 1.0
DIAL_PARTS: tuple[OverlapPart, ...] = (OverlapPart.shared, OverlapPart.helpful_specific,
                                       OverlapPart.harmless_specific)
KEEP_ESTIMATES = 64
"""Views whose estimated curves are kept (a poll re-draws them every ≤ 2 s; the worker is asked once)."""
POLL_SLICE_S = 0.05
CAVEAT = ("Accuracy moves in steps of 1/n (n probe pairs per objective: {step:.3g} pp here). The estimate is "
          "first order in (factor − 1): least accurate for large changes, so the far ends, 0 (ablated) and 2 "
          "(doubled), are where it misses most.")

DialFactor = Annotated[float, Blank, Field(ge=0, le=2, multiple_of=STEP, allow_inf_nan=False,
                                           description="the slider: each selected activation × factor (0 to 2)")]


class DialView(ToggleWhich, ToggleHow):
    """`GET /ui/live/dial`: the dashboard's view (as the panel's), the RM and the slider's factor. The sets
    are always the shared and the two specific parts; the mode is always 'scale'."""

    base_model: str = Field(..., max_length=200)
    ck: Annotated[str | None, Blank] = Field(None, max_length=64)
    mode: Annotated[Literal[AblationMode.scale], Blank] = AblationMode.scale
    factor: DialFactor = IDENTITY


class DialPoll(DialView):
    """`GET /ui/live/dial/poll`: the same view, and the fragment's signature to wait past."""

    since: Annotated[int, Field(ge=-1, le=1_000_000_000)] = -1


@dataclass(frozen=True)
class DialTarget:
    """The RM the dial scales in, its three sets, and the key that names this view's runs and estimates."""

    checkpoint: Checkpoint
    sets: dict[str, NeuronIndexSet]
    key: str


# -- service --------------------------------------------------------------------------------------------
def view_params(v: DialView, ck: str) -> dict[str, str]:
    """The view as query parameters (the factor left out): what the dial's URLs carry."""
    out = {"base_model": v.base_model, "ck": ck, "p": f"{v.p:g}", "stat": str(v.stat), "seed": str(v.seed),
           "shared": str(v.shared), "hook": str(v.hook), "include_frozen": "true" if v.include_frozen else "",
           "probe_limit": str(v.probe_limit)}
    if v.layer is not None:
        out["layer"] = str(v.layer)
    return out


def dial_key(v: DialView, ck: str) -> str:
    """Stable across requests: the same RM and view is the same dial (its runs, its cached estimates)."""
    canonical = json.dumps(view_params(v, ck), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:24]


def dial_target(services: Services, v: DialView) -> DialTarget:
    """The view's RM (its mixed RM by default, as the panel's) and its three sets (404 outside the model)."""
    captured = service.captures(store=services.store, db=services.db, base_model=v.base_model, hook=v.hook)
    if not captured:
        raise NotFound(f"no capture of base model {v.base_model!r} at hook {str(v.hook)!r}")
    ck = v.ck or service.default_checkpoint(captured, v.seed)
    if ck not in {str(r["checkpoint"]) for r in captured}:
        raise NotFound(f"ck: {ck!r} is not a captured RM of {v.base_model!r} at hook {str(v.hook)!r}")
    checkpoint = check_checkpoint(services, str(ck))
    sets = {str(part): service.toggle_neurons(store=services.store, db=services.db, checkpoint=checkpoint,
                                              which=v.model_copy(update={"part": part, "neurons": None,
                                                                         "set_name": None}))
            for part in DIAL_PARTS}
    return DialTarget(checkpoint=checkpoint, sets=sets, key=dial_key(v, checkpoint.id))


def _how(v: DialView, factor: float) -> ToggleHow:
    return ToggleHow(mode=AblationMode.scale, factor=factor, probe_limit=v.probe_limit)


def estimate_curves(services: Services, pool: service.LivePoolLike, target: DialTarget,
                    v: DialView) -> dict[str, list[dict[str, float]]]:
    """Each set's estimated (Δ helpful, Δ harmless accuracy) at every slider position, from one warm worker.
    Factor 1 and an empty set are Δ = 0 exactly and not asked."""
    worker = service._live_worker(store=services.store, settings=services.settings, pool=pool,
                                  checkpoint=target.checkpoint, how=_how(v, IDENTITY), hook=v.hook)
    curves: dict[str, list[dict[str, float]]] = {}
    for part, neurons in target.sets.items():
        curve = []
        for f in FACTORS:
            if f == IDENTITY or not neurons.size():
                curve.append({"factor": f, **{str(o): 0.0 for o in Objective}})
                continue
            answer, _ = worker.estimate(LiveEstimateRequest(neurons=neurons, mode=AblationMode.scale, factor=f))
            curve.append({"factor": f, **{str(o): float(answer.objectives[str(o)].delta_accuracy)
                                          for o in Objective}})
        curves[part] = curve
    return curves


class EstimateCache:
    """Estimated curves by dial key, least recently used forgotten first."""

    def __init__(self, size: int = KEEP_ESTIMATES) -> None:
        self.size = size
        self._items: OrderedDict[str, dict[str, list[dict[str, float]]]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, make: Callable[[], dict[str, list[dict[str, float]]]]
            ) -> dict[str, list[dict[str, float]]]:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                return hit
        made = make()  # outside the lock: a cold worker may take seconds
        with self._lock:
            self._items[key] = made
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return made


_CACHE_LOCK = threading.Lock()


def estimate_cache(request: Request) -> EstimateCache:
    with _CACHE_LOCK:
        cache: EstimateCache | None = getattr(request.app.state, "dial_estimates", None)
        if cache is None:
            cache = request.app.state.dial_estimates = EstimateCache()
        return cache


def part_channel(request: Request, part: str) -> str:
    """One channel per set: a newer slider position supersedes only that set's older run."""
    return f"{live_channel(request)}:dial:{part}"


def dial_runs(request: Request, runs: LiveRuns, key: str) -> dict[str, list[LiveRun]]:
    """Each set's kept runs of this dial (oldest first); reading them keeps them alive."""
    return {str(part): runs.of_channel(part_channel(request, part), lambda r: r.meta.get("dial") == key)
            for part in DIAL_PARTS}


def _describe(part: str, v: DialView, factor: float) -> str:
    what = f"{SHORT_LABELS.get(part, part)} at top {v.p:g}% by {v.stat}, seed {v.seed}"
    if v.shared != SharedMode.intersection:
        what += f" ({v.shared} rule)"
    if v.include_frozen:
        what += ", layers frozen in training included"
    if v.layer is not None:
        what += f", layer {v.layer} only"
    return f"{what}, scaled × {factor:g} (tension dial)"


def start_points(request: Request, services: Services, pool: service.LivePoolLike, runs: LiveRuns,
                 target: DialTarget, v: DialView) -> list[LiveRun]:
    """Start the exact runs of the slider's position, one per non-empty set, unless that set already has this
    position exact or running (going back to a position costs nothing). Factor 1 starts nothing."""
    if v.factor == IDENTITY:
        return []
    known = dial_runs(request, runs, target.key)
    started = []
    for part, neurons in target.sets.items():
        if not neurons.size():
            continue
        if any(r.meta.get("factor") == v.factor and (not r.finished or _final(r) is not None) for r in known[part]):
            continue
        started.append(service.start_live_run(
            store=services.store, settings=services.settings, pool=pool, runs=runs, checkpoint=target.checkpoint,
            chosen=neurons, how=_how(v, v.factor), hook=v.hook, channel=part_channel(request, part), control=False,
            meta={"dial": target.key, "part": part, "factor": v.factor, "what": _describe(part, v, v.factor)}))
    return started


def _final(run: LiveRun) -> LiveRound | None:
    r = run.rounds.get("set")
    return r if r is not None and r.final else None


def signature(found: dict[str, list[LiveRun]]) -> int:
    """Changes whenever any of the dial's runs does (or one is added): what a poll waits past."""
    return sum(r.version + 1 for rs in found.values() for r in rs)


def _point(part: str, run: LiveRun) -> dict[str, Any] | None:
    """One exact (or running) point: Δ accuracy per objective with its 95% CI, and how many pairs are done."""
    with run.cond:
        r = run.rounds.get("set")
        state = run.state
    if r is None or (not r.final and state != "running"):
        return None  # nothing yet, or stopped before its last round (a partial answer is not a point)
    values = {}
    for o in Objective:
        v = r.objectives.get(str(o))
        if v is None or v.delta_accuracy is None:
            return None
        values[str(o)] = {"delta": v.delta_accuracy, "ci": v.delta_accuracy_ci, "n_done": v.n_done,
                          "n_total": v.n_total}
    return {"part": part, "label": SHORT_LABELS.get(part, part), "factor": float(run.meta["factor"]),
            "final": r.final, "round": r.round, "n_rounds": r.n_rounds, "state": state, **values}


def exact_points(found: dict[str, list[LiveRun]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]], int]:
    """(final points, running points, runs stopped before their last round): per set and factor the newest
    final answer, else the running one."""
    final: dict[tuple[str, float], dict[str, Any]] = {}
    running: dict[tuple[str, float], dict[str, Any]] = {}
    stopped = 0
    for part, rs in found.items():
        for run in rs:
            p = _point(part, run)
            if p is None:
                if run.finished:
                    stopped += 1
                continue
            (final if p["final"] else running)[(part, p["factor"])] = p
    running = {k: p for k, p in running.items() if k not in final}
    order = {str(part): i for i, part in enumerate(DIAL_PARTS)}

    def by(p: dict[str, Any]) -> tuple[int, float]:
        return order[p["part"]], p["factor"]
    return sorted(final.values(), key=by), sorted(running.values(), key=by), stopped


def wait_for_change(found: Callable[[], dict[str, list[LiveRun]]], since: int,
                    timeout: float) -> dict[str, list[LiveRun]]:
    """The dial's runs once their signature is past `since`, none runs, or `timeout` passed (a long poll:
    it sleeps on the running runs' conditions, a slice each)."""
    deadline = time.monotonic() + timeout
    while True:
        now = found()
        running = [r for rs in now.values() for r in rs if not r.finished]
        left = deadline - time.monotonic()
        if signature(now) != since or not running or left <= 0:
            return now
        for r in running:
            r.wait(r.version, min(POLL_SLICE_S, max(left, 0.0)))


def _pp(x: float) -> float:
    return 100.0 * x


def _ci_bars(points: list[dict[str, Any]], o: str) -> dict[str, Any]:
    up = [_pp(p[o]["ci"][1] - p[o]["delta"]) if p[o]["ci"] else 0.0 for p in points]
    down = [_pp(p[o]["delta"] - p[o]["ci"][0]) if p[o]["ci"] else 0.0 for p in points]
    return {"type": "data", "symmetric": False, "array": up, "arrayminus": down, "visible": True, "thickness": 1}


def dial_spec(curves: dict[str, list[dict[str, float]]], final: list[dict[str, Any]],
              running: list[dict[str, Any]], factor: float) -> dict[str, Any]:
    """The figure: x = Δ helpful, y = Δ harmless accuracy (pp); per set its estimated curve over the slider,
    its exact points with 95% CIs (faded while computing), and the slider's position ringed."""
    h, r = str(Objective.helpful), str(Objective.harmless)
    data: list[dict[str, Any]] = []
    for part in DIAL_PARTS:
        key, label = str(part), SHORT_LABELS.get(part, str(part))
        colour = figures.SET_COLOURS.get(part, figures.OTHER_COLOUR)
        curve = curves.get(key, [])
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": f"{label}: estimate", "legendgroup": key,
            "meta": {"part": key, "kind": "estimate"},
            "x": [_pp(c[h]) for c in curve], "y": [_pp(c[r]) for c in curve],
            "customdata": [f"×{c['factor']:g}" for c in curve], "line": {"color": colour, "dash": "dot"},
            "marker": {"color": colour, "size": 6},
            "hovertemplate": f"{label}<br>%{{customdata}} (first-order estimate)<br>Δ helpful %{{x:+.1f}} pp"
                             "<br>Δ harmless %{y:+.1f} pp<extra></extra>"})
        for kind, points, opacity in (("exact", final, 1.0), ("running", running, 0.35)):
            mine = [p for p in points if p["part"] == key]
            status = ["exact, all pairs" if p["final"] else f"computing {p['round']}/{p['n_rounds']} rounds"
                      for p in mine]
            data.append({
                "type": "scatter", "mode": "markers", "name": f"{label}: {kind}", "legendgroup": key,
                "meta": {"part": key, "kind": kind}, "showlegend": kind == "exact" or bool(mine),
                "x": [_pp(p[h]["delta"]) for p in mine], "y": [_pp(p[r]["delta"]) for p in mine],
                "customdata": [[f"×{p['factor']:g}", s] for p, s in zip(mine, status, strict=True)],
                "error_x": {**_ci_bars(mine, h), "color": colour}, "error_y": {**_ci_bars(mine, r), "color": colour},
                "marker": {"color": colour, "size": 12, "symbol": "diamond", "opacity": opacity,
                           "line": {"color": "#212529", "width": 1}},
                "hovertemplate": f"{label}<br>%{{customdata[0]}}: %{{customdata[1]}}<br>Δ helpful %{{x:+.1f}} pp"
                                 "<br>Δ harmless %{y:+.1f} pp (95% CI bars)<extra></extra>"})
    now = [(str(part), next((c for c in curves.get(str(part), []) if c["factor"] == factor), None))
           for part in DIAL_PARTS]
    data.append({
        "type": "scatter", "mode": "markers", "name": f"slider: ×{factor:g}", "meta": {"kind": "current"},
        "x": [_pp(c[h]) for _, c in now if c], "y": [_pp(c[r]) for _, c in now if c],
        "customdata": [SHORT_LABELS.get(part, part) for part, c in now if c],
        "marker": {"size": 20, "symbol": "circle-open", "color": "#212529", "line": {"width": 2}},
        "hovertemplate": f"%{{customdata}} at ×{factor:g} (estimate)<extra></extra>"})
    return {"data": data, "layout": {
        "margin": {"t": 30, "r": 10, "b": 50, "l": 60}, "hovermode": "closest",
        "xaxis": {"title": {"text": "Δ helpful accuracy (pp)"}, "zeroline": True, "zerolinecolor": "#adb5bd"},
        "yaxis": {"title": {"text": "Δ harmless accuracy (pp)"}, "zeroline": True, "zerolinecolor": "#adb5bd"},
        "legend": {"orientation": "h", "y": -0.2}}}


# -- routes ---------------------------------------------------------------------------------------------
def _render(request: Request, name: str, services: Services, pool: service.LivePoolLike, v: DialView,
            target: DialTarget, found: dict[str, list[LiveRun]]) -> Response:
    """The card or its figure fragment: estimated curves (cached per view), exact points so far, and a poll
    while any of the dial's runs runs."""
    try:
        sets = json.dumps({k: n.as_json() for k, n in target.sets.items()}, sort_keys=True)  # a re-capture moves them
        curves = estimate_cache(request).get(f"{target.key}:{hashlib.sha256(sets.encode()).hexdigest()[:16]}",
                                             lambda: estimate_curves(services, pool, target, v))
        estimate_error = None
    except AppError as exc:  # no estimate: the exact points still come
        curves, estimate_error = {}, exc.message
    final, running, stopped = exact_points(found)
    params = view_params(v, target.checkpoint.id)
    sig = signature(found)
    any_running = any(not r.finished for rs in found.values() for r in rs)
    sizes = {part: neurons.size() for part, neurons in target.sets.items()}
    ctx = {"key": target.key, "factor": v.factor, "identity": v.factor == IDENTITY, "checkpoint": target.checkpoint,
           "base_model": v.base_model, "params": params, "factors": FACTORS, "sizes": sizes,
           "nonempty": [part for part, n in sizes.items() if n],
           "labels": SHORT_LABELS, "parts": [str(p) for p in DIAL_PARTS], "final": final, "running": running,
           "stopped": stopped, "since": sig, "estimate_error": estimate_error, "probe_limit": v.probe_limit,
           "poll_url": "/ui/live/dial/poll?" + urlencode({**params, "factor": f"{v.factor:g}", "since": sig})
           if any_running else None,
           "spec": json_safe(dial_spec(curves, final, running, v.factor)),
           "caveat": CAVEAT.format(step=100.0 / v.probe_limit)}
    return templates.TemplateResponse(request, f"ablation/{name}", ctx)


@router.get("/ui/live/dial", response_class=HTMLResponse)
def dial_card(request: Request, v: Annotated[DialView, Query()], services: ServicesDep, pool: LivePoolDep,
              runs: LiveRunsDep) -> Response:
    """The dial's card: the slider, the estimated curves of the three sets at once and the exact points known
    for this view (a factor other than 1 starts its exact runs too)."""
    target = dial_target(services, v)
    start_points(request, services, pool, runs, target, v)
    return _render(request, "_dial.html", services, pool, v, target, dial_runs(request, runs, target.key))


@router.get("/ui/live/dial/points", response_class=HTMLResponse)
def dial_points(request: Request, v: Annotated[DialView, Query()], services: ServicesDep, pool: LivePoolDep,
                runs: LiveRunsDep) -> Response:
    """The slider moved: start the exact runs of its position and answer the figure fragment (it polls)."""
    target = dial_target(services, v)
    start_points(request, services, pool, runs, target, v)
    return _render(request, "_dial_points.html", services, pool, v, target, dial_runs(request, runs, target.key))


@router.get("/ui/live/dial/poll", response_class=HTMLResponse)
def dial_poll(request: Request, v: Annotated[DialPoll, Query()], services: ServicesDep, pool: LivePoolDep,
              runs: LiveRunsDep) -> Response:
    """The figure fragment once one of the dial's runs changed after `since` (a long poll of ≤ POLL_WAIT_S);
    it starts nothing."""
    target = dial_target(services, v)
    found = wait_for_change(lambda: dial_runs(request, runs, target.key), v.since, POLL_WAIT_S)
    return _render(request, "_dial_points.html", services, pool, v, target, found)
