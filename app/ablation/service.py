"""Ablations: turn a request into content-addressed worker inputs; answer live toggles; read results back.

Workers never open DuckDB, so the neuron scores an experiment selects from are computed here and
handed over as an `.npz` file named by its hash (the hash is part of the job's parameters, hence of
its result key: same scores, same key, cache hit).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import math
import shlex
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from pydantic import ValidationError
from sqlalchemy import select

from app.ablation import queries
from app.ablation.figures import ALL_ITEMS, RANDOM, SET_PARTS, SUBSET_PREFIX, mean_std, random_by_p
from app.ablation.live import new_request_id
from app.ablation.schemas import (
    AblationResult,
    AblationRunSummary,
    LiveEstimateOut,
    ToggleHow,
    ToggleWhich,
)
from app.core.checks import check_checkpoint, load_checked_dataset, resolve_dataset
from app.core.db import Checkpoint, Database, Run
from app.core.errors import AppError, Invalid, NotFound
from app.core.settings import Settings
from app.core.store import StatsStore
from app.neurons import service as neurons
from workers.contract.artifacts import artifact_uri
from workers.contract.jobs import AblateParams, DatasetRef, NeuronIndexSet
from workers.contract.live import (
    LiveEstimateAnswer,
    LiveEstimateRequest,
    LiveSessionConfig,
    LiveStreamRequest,
    default_probe,
)
from workers.contract.vocab import (
    SINGLE_REGIMES,
    AblationMode,
    Experiment,
    HookPoint,
    JobKind,
    LivePath,
    Objective,
    Regime,
    Scope,
    SelectionMethod,
    Split,
    Stat,
)
from workers.neurons import selection as sel

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from app.ablation.runs import LiveRun, LiveRuns
    from app.core.services import Services

MAX_LENGTH = 128
"""Tokens per text of the live worker and of a queued toggle's exact evaluation."""


class LiveWorkerLike(Protocol):
    @property
    def ready(self) -> bool: ...

    @property
    def startup_s(self) -> float | None: ...

    def stream(self, request: LiveStreamRequest, timeout: float = ...) -> Any: ...

    def cancel(self, rid: str) -> None: ...

    def wait_ready(self, timeout: float | None = None) -> Any: ...

    def wait_idle(self, timeout: float) -> bool: ...

    def estimate(self, request: LiveEstimateRequest, timeout: float = ...) -> tuple[LiveEstimateAnswer, float]: ...


class LivePoolLike(Protocol):
    """What a toggle needs of `app.ablation.live.LivePool`: a warm worker per (checkpoint, probe) key, its
    config built by `make_config` only when a worker has to start."""

    def get(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> LiveWorkerLike: ...

    def warm(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> LiveWorkerLike: ...


# -- job inputs ------------------------------------------------------------------------------------------
def write_inputs(*, settings: Settings, arrays: dict[str, np.ndarray]) -> str:
    """Store arrays as inputs/<sha>.npz in the artifact store; return its artifact URI."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in sorted(arrays.items())})  # type: ignore[arg-type]
    data = buf.getvalue()
    key = f"inputs/{hashlib.sha256(data).hexdigest()[:24]}.npz"
    store = settings.artifact_store_client()
    if not store.exists(key):
        store.write_bytes(key, data)
    return artifact_uri(key)


def _means(store: StatsStore, checkpoint: str, hook: HookPoint) -> np.ndarray:
    """Each neuron's mean activation over all objectives (mode 'mean' sets an ablated neuron to it)."""
    return np.nan_to_num(neurons.score_array(store=store, checkpoint=checkpoint, stat=Stat.A, scope=Scope.all,
                                             hook=hook))


def _own_scores(store: StatsStore, checkpoint: str, hook: HookPoint) -> dict[str, np.ndarray]:
    out = {SelectionMethod.magnitude.value: neurons.score_array(store=store, checkpoint=checkpoint, stat=Stat.A,
                                                                scope=Scope.own, hook=hook),
           "means": _means(store, checkpoint, hook)}
    with contextlib.suppress(AppError):  # no base model at capture: experiment A has no change curve
        out[SelectionMethod.change.value] = neurons.score_array(store=store, checkpoint=checkpoint, stat=Stat.C,
                                                                scope=Scope.own, hook=hook)
    return {k: np.nan_to_num(v) for k, v in out.items()}


def prepare_ablate(services: Services, params: AblateParams) -> str:
    """The `ablate` job's submission hook: check its inputs, write the scores it selects from.

    For A-C it records `frozen_layers`: the layers frozen in training of the checkpoints selected from (for
    C the union over the helpful, harmless and mixed RMs, as the overlap dashboard does). The worker leaves
    them out of every selection, p% being taken over the other layers' neurons, unless `include_frozen`."""
    ck = check_checkpoint(services, params.checkpoint)
    params.dataset = resolve_dataset(services, params.dataset)
    _, revision = load_checked_dataset(services, params.dataset)
    hook = params.hook
    arrays: dict[str, np.ndarray] = {}
    if params.experiment == Experiment.single:
        if params.neuron_set is None and params.set_name:
            ns = neurons.find_set(db=services.db, name=params.set_name)
            params.neuron_set = NeuronIndexSet.model_validate(ns.neurons)
        if not params.neuron_set or not params.neuron_set.size():
            raise Invalid("a single ablation needs neuron_set {layer: [indices]} or set_name")
        if params.mode == AblationMode.mean:
            arrays["means"] = _means(services.store, ck.id, hook)
    else:
        arrays.update(_own_scores(services.store, ck.id, hook))
    if params.experiment == Experiment.C:
        if ck.regime != Regime.mixed:
            raise Invalid(f"experiment C ablates the mixed RM; checkpoint {ck.id} is {ck.regime}")
        cks = neurons.find_regime_checkpoints(store=services.store, db=services.db, base_model=ck.base_model,
                                              seed=ck.seed, hook=hook)
        for regime in SINGLE_REGIMES:
            if regime not in cks:
                raise NotFound(f"experiment C needs a captured {regime} RM of {ck.base_model} seed {ck.seed}")
            arrays[f"{regime}_magnitude"] = np.nan_to_num(neurons.score_array(
                store=services.store, checkpoint=cks[regime], stat=Stat.A, scope=Scope.own, hook=hook))
        params.helpful_checkpoint = cks[Regime.helpful]
        params.harmless_checkpoint = cks[Regime.harmless]
    params.frozen_layers = None  # the API's to fill, whatever a request said
    if params.experiment != Experiment.single:
        selected_from = [ck.id, params.helpful_checkpoint or ck.id, params.harmless_checkpoint or ck.id]
        shape = capture_shape(store=services.store, checkpoint=ck.id, hook=hook)
        frozen = neurons.checkpoint_frozen_layers(db=services.db, checkpoints=selected_from,
                                                  n_layers=shape[0] if shape else None)
        params.frozen_layers = list(frozen) or None
    if arrays:
        params.inputs = write_inputs(settings=services.settings, arrays=arrays)
    return revision


def single_params(*, checkpoint: str, chosen: NeuronIndexSet, mode: AblationMode = AblationMode.zero,
                  factor: float = 0.0) -> AblateParams:
    """The exact full-test evaluation of one live toggle: experiment 'single' on the bundled test split."""
    return AblateParams(experiment=Experiment.single, checkpoint=checkpoint, neuron_set=chosen, mode=mode,
                        scale=factor, max_length=MAX_LENGTH, dataset=DatasetRef(source="bundled", split=Split.test))


def recompute_command(params: dict[str, Any]) -> str:
    """The `tension submit ablate '<params json>'` line that recomputes (or re-finds) a result."""
    return f"tension submit {JobKind.ablate} " + shlex.quote(json.dumps(params, sort_keys=True,
                                                                        separators=(", ", ": ")))


# -- live toggles ----------------------------------------------------------------------------------------
def capture_shape(*, store: StatsStore, checkpoint: str, hook: HookPoint) -> tuple[int, int] | None:
    """(n_layers, n_neurons) of a captured checkpoint; None when it was never captured at `hook`."""
    with contextlib.suppress(NotFound):
        info = neurons.capture_info(store=store, checkpoint=checkpoint, hook=hook)
        return int(info["n_layers"]), int(info["n_neurons"])
    return None


def _span(n: int | None) -> str:
    return f"0-{n - 1}" if n is not None else "from 0"


def _check_layer(layer: int, shape: tuple[int, int] | None, base_model: str) -> None:
    if layer < 0 or (shape is not None and layer >= shape[0]):
        raise NotFound(f"layer {layer} out of range: {base_model} has layers {_span(shape and shape[0])}")


def parse_neurons(text: str) -> NeuronIndexSet:
    """A toggle's `neurons` parameter: JSON `{layer: [indices]}`."""
    try:
        return NeuronIndexSet.model_validate(json.loads(text))
    except ValueError as exc:  # JSON syntax, or not a {layer: [indices]} object (ValidationError)
        detail = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise Invalid(f"neurons must be JSON like {{\"3\": [1, 2]}}: {detail}") from exc


def toggle_neurons(*, store: StatsStore, db: Database, checkpoint: Checkpoint, which: ToggleWhich) -> NeuronIndexSet:
    """The neurons a toggle names: directly, by a stored set, or by a part of the overlap dashboard, then
    only `layer`'s slice. Every layer and neuron is checked against the captured model (404 outside it),
    so a bad toggle never reaches the live worker."""
    shape = capture_shape(store=store, checkpoint=checkpoint.id, hook=which.hook)
    if which.layer is not None:
        _check_layer(which.layer, shape, checkpoint.base_model)
    if which.neurons:
        chosen = parse_neurons(which.neurons)
    elif which.set_name:
        chosen = NeuronIndexSet.model_validate(neurons.find_set(db=db, name=which.set_name).neurons)
    elif which.part:
        masks = neurons.compute_overlap(store=store, db=db, base_model=checkpoint.base_model, p=which.p,
                                        stat=which.stat, seed=which.seed, hook=which.hook, shared=which.shared,
                                        include_frozen=which.include_frozen).masks
        chosen = NeuronIndexSet.model_validate(sel.mask_to_dict(masks[which.part]))
    else:
        raise Invalid("say which neurons: neurons={layer: [..]}, set=NAME or part=shared|helpful_specific|...")
    if which.layer is not None:
        chosen = NeuronIndexSet.model_validate({which.layer: chosen.layers.get(which.layer, [])})
    for layer, idx in chosen.layers.items():
        _check_layer(layer, shape, checkpoint.base_model)
        if shape is not None and idx and idx[-1] >= shape[1]:
            bad = next(i for i in idx if i >= shape[1])
            raise NotFound(f"neuron {bad} of layer {layer} out of range: neurons are {_span(shape[1])}")
    return chosen


def live_config(*, settings: Settings, checkpoint: Checkpoint, probe_limit: int, means: np.ndarray | None,
                hook: HookPoint = HookPoint.down_proj_input) -> LiveSessionConfig:
    """What a live worker keeps warm: the RM, its probe pairs, and (when captured) its per-neuron means,
    written to the artifact store for the worker to read."""
    means_uri = None if means is None else write_inputs(settings=settings, arrays={"means": means})
    return LiveSessionConfig(store_url=settings.resolved_artifact_store, checkpoint=checkpoint.id,
                             probe=default_probe(probe_limit), max_length=MAX_LENGTH, means=means_uri, hook=hook,
                             device=settings.device)


def _worker_key_and_config(*, store: StatsStore, settings: Settings, checkpoint: Checkpoint, probe_limit: int,
                           hook: HookPoint) -> tuple[str, Callable[[], LiveSessionConfig]]:
    """A live worker's pool key (checkpoint, probe size, hook) and the config that starts it, with the RM's
    per-neuron means when captured (read only when a worker has to start, not on every toggle)."""
    def make_config() -> LiveSessionConfig:
        means = None
        with contextlib.suppress(AppError):  # not captured: zero/scale still work, mean mode says so
            means = _means(store, checkpoint.id, hook)
        return live_config(settings=settings, checkpoint=checkpoint, probe_limit=probe_limit, means=means, hook=hook)

    return f"{checkpoint.id}:{probe_limit}:{hook}", make_config


def _live_worker(*, store: StatsStore, settings: Settings, pool: LivePoolLike, checkpoint: Checkpoint,
                 how: ToggleHow, hook: HookPoint) -> LiveWorkerLike:
    """The warm worker of (checkpoint, probe size, hook), started with the RM's per-neuron means if captured."""
    if how.mode == AblationMode.mean:
        try:
            _means(store, checkpoint.id, hook)
        except AppError as exc:
            raise Invalid("mean ablation needs this RM's capture (its per-neuron means); run a capture "
                          "first") from exc
    key, make_config = _worker_key_and_config(store=store, settings=settings, checkpoint=checkpoint,
                                              probe_limit=how.probe_limit, hook=hook)
    return pool.get(key, make_config)


def start_live_run(*, store: StatsStore, settings: Settings, pool: LivePoolLike, runs: LiveRuns,
                   checkpoint: Checkpoint, chosen: NeuronIndexSet, how: ToggleHow, channel: str, meta: dict[str, Any],
                   hook: HookPoint = HookPoint.down_proj_input, path: LivePath = LivePath.fast,
                   control: bool = True, watched: bool = True) -> LiveRun:
    """Start a live run of switching `chosen` off: its estimate at once, its exact answer in rounds (then the
    layer-matched random control's, with `control`), superseding the channel's previous run."""
    worker = _live_worker(store=store, settings=settings, pool=pool, checkpoint=checkpoint, how=how, hook=hook)
    request = LiveStreamRequest(id=new_request_id(), neurons=chosen, mode=how.mode, factor=how.factor, path=path,
                                control=control)
    meta = {"checkpoint": checkpoint.id, "base_model": checkpoint.base_model, "regime": checkpoint.regime,
            "seed": checkpoint.seed, "n_neurons": chosen.size(), "neurons": chosen.as_json(),
            "mode": str(how.mode), "factor": float(how.factor), "probe_limit": how.probe_limit, **meta}
    return runs.start(worker=worker, request=request, channel=channel, meta=meta, watched=watched)


WARM_IDLE_WAIT_S = 60.0
"""How long warming the next RM waits for the previous worker's toggle in flight (then it starts anyway)."""


def warm_view(*, store: StatsStore, db: Database, settings: Settings, pool: LivePoolLike, base_model: str, seed: int,
              first: str | None, how: ToggleHow, hook: HookPoint) -> list[str]:
    """Warm the live workers of a view's helpful, harmless and mixed RMs of `seed`, the checkpoint `first`
    first: it is started now, the others in the background one at a time, each once the one before is ready
    and has finished the toggle it was asked for (two cores loading models while the user waits for an exact
    answer would slow the answer). Returns the checkpoints warmed, in order."""
    captured = captures(store=store, db=db, base_model=base_model, hook=hook)
    ids = [str(r["checkpoint"]) for r in captured if r["seed"] == seed][:3]
    if first in {str(r["checkpoint"]) for r in captured}:
        ids = [first] + [i for i in ids if i != first][:2]

    def warm(ck_id: str) -> LiveWorkerLike | None:
        with db.session() as sess:
            checkpoint = sess.get(Checkpoint, ck_id)
        if checkpoint is None:
            return None
        return pool.warm(*_worker_key_and_config(store=store, settings=settings, checkpoint=checkpoint,
                                                 probe_limit=how.probe_limit, hook=hook))

    def the_rest(before: LiveWorkerLike | None) -> None:
        """Best effort: a failure (the app shutting down and its stores closed) ends the warming, logged."""
        try:
            for ck_id in ids[1:]:
                if before is not None:
                    with contextlib.suppress(AppError):
                        before.wait_ready()
                        before.wait_idle(WARM_IDLE_WAIT_S)
                before = warm(ck_id)
        except Exception as exc:
            log.warning("warming the view's live workers stopped: %s", exc)

    if ids:
        threading.Thread(target=the_rest, args=(warm(ids[0]),), daemon=True, name="live-warm").start()
    return ids


def live_estimate(*, store: StatsStore, settings: Settings, pool: LivePoolLike, checkpoint: Checkpoint,
                  chosen: NeuronIndexSet, how: ToggleHow, hook: HookPoint = HookPoint.down_proj_input
                  ) -> LiveEstimateOut:
    """The first-order estimate of switching `chosen` off, from the same warm worker the exact toggle uses."""
    worker = _live_worker(store=store, settings=settings, pool=pool, checkpoint=checkpoint, how=how, hook=hook)
    answer, roundtrip_ms = worker.estimate(LiveEstimateRequest(neurons=chosen, mode=how.mode, factor=how.factor))
    return LiveEstimateOut(**dict(answer), roundtrip_ms=roundtrip_ms, n_neurons=chosen.size(),
                           neurons=chosen.as_json())


def captures(*, store: StatsStore, db: Database, base_model: str, hook: HookPoint) -> list[dict[str, Any]]:
    """The captured RMs of a base model at `hook`, by seed then regime, each with a label for the panels."""
    order: dict[str, int] = {r: i for i, r in enumerate(Regime)}
    rows = [c.model_dump() for c in neurons.list_captures(store=store, db=db, base_model=base_model)
            if c.hook == hook]
    rows.sort(key=lambda r: (r["seed"], order.get(r["regime"], len(order)), r["checkpoint"]))
    return [{**r, "label": f"{r['regime']} RM · seed {r['seed']} · {str(r['checkpoint'])[:12]}"} for r in rows]


def default_checkpoint(captured: list[dict[str, Any]], seed: int) -> str | None:
    """The panels' default target: the mixed RM of the view's seed, else any mixed RM, else the first."""
    for want in (lambda r: r["regime"] == Regime.mixed and r["seed"] == seed, lambda r: r["regime"] == Regime.mixed,
                 lambda r: True):
        for r in captured:
            if want(r):
                return str(r["checkpoint"])
    return None


# -- results ---------------------------------------------------------------------------------------------
def stored_result(*, store: StatsStore, result_key: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(rows, flipped items) of one result as stored; 404 when no result has this key."""
    rows = queries.result_rows(store, result_key=result_key)
    if not rows:
        raise NotFound(f"no ablation result with key {result_key!r}")
    return rows, queries.flip_rows(store, result_key=result_key)


def results(*, store: StatsStore, result_key: str) -> AblationResult:
    """Every row of one result and its flipped items; 404 when no result has this key."""
    rows, flips = stored_result(store=store, result_key=result_key)
    return AblationResult.model_validate({"result_key": result_key, "rows": rows, "flips": flips})


def ablation_runs(*, store: StatsStore, checkpoint: str | None = None) -> list[AblationRunSummary]:
    return [AblationRunSummary.model_validate(r) for r in queries.runs(store, checkpoint=checkpoint)]


def run_records(*, db: Database, result_keys: list[str]) -> dict[str, dict[str, Any]]:
    """The metadata row of each finished result (the job's normalised parameters, its job id)."""
    if not result_keys:
        return {}
    with db.session() as s:
        return {run.result_key: {"result_key": run.result_key, "kind": run.kind, "job_id": run.job_id,
                                 "params": dict(run.params or {}), "summary": dict(run.summary or {}),
                                 "created_at": run.created_at}
                for run in s.scalars(select(Run).where(Run.result_key.in_(result_keys)))}


def checkpoint_info(*, db: Database, ids: list[str]) -> dict[str, dict[str, Any]]:
    """base model, regime and seed of each checkpoint id (those the metadata database knows)."""
    if not ids:
        return {}
    with db.session() as s:
        rows = s.scalars(select(Checkpoint).where(Checkpoint.id.in_(ids)))
        return {c.id: {"base_model": c.base_model, "regime": c.regime, "seed": c.seed, "preset": c.preset}
                for c in rows}


def index_groups(*, store: StatsStore, db: Database, checkpoint: str | None = None) -> list[dict[str, Any]]:
    """Every stored ablation result, grouped by the RM it ablated (base model, seed, regime order)."""
    runs = queries.runs(store, checkpoint=checkpoint)
    info = checkpoint_info(db=db, ids=sorted({str(r["checkpoint"]) for r in runs}))
    records = run_records(db=db, result_keys=[str(r["result_key"]) for r in runs])
    groups: dict[str, dict[str, Any]] = {}
    for r in runs:
        ck = str(r["checkpoint"])
        ci = info.get(ck, {})
        g = groups.setdefault(ck, {"checkpoint": ck, "base_model": ci.get("base_model"),
                                   "regime": ci.get("regime") or r["regime"], "seed": ci.get("seed"), "results": []})
        rec = records.get(str(r["result_key"]), {})
        params = rec.get("params", {})
        g["results"].append({**r, "job_id": rec.get("job_id"), "created_at": rec.get("created_at"),
                             "percents": params.get("percents"), "dataset": params.get("dataset") or {},
                             "limit": params.get("limit_per_objective"),
                             "n_set": sum(len(v) for v in (params.get("neuron_set") or {}).values())})
    return sorted(groups.values(), key=lambda g: (str(g["base_model"]), g["seed"] or 0, str(g["regime"]),
                                                  g["checkpoint"]))


def random_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Experiment A's random band: per p, the mean ± std (ddof=1) over seeds of the accuracy."""
    out = []
    for p, rs in random_by_p(rows).items():
        accs = [float(r["acc"]) for r in rs if r["acc"] is not None]
        mean, std = mean_std(accs) if accs else (None, None)
        out.append({"p": p, "n": len(accs), "mean": mean, "std": std, "n_neurons": rs[0]["n_neurons"]})
    return out


def _is_subset(r: dict[str, Any]) -> bool:
    return str(r["grp"]).startswith(SUBSET_PREFIX)


def normalised_is_meaningful(row: dict[str, Any]) -> bool:
    """(acc − 50) / (acc₀ − 50) only means something when acc₀ is above chance by more than its 95% CI
    half-width (normal approximation over the row's items); near or below 50% it explodes or flips sign."""
    acc0, n = row.get("acc0"), row.get("n_items")
    if acc0 is None or not n or acc0 != acc0:
        return False
    half = 1.96 * math.sqrt(max(acc0 * (1 - acc0), 1e-12) / n)
    return bool(acc0 - 0.5 > half)


def experiment_view(rows: list[dict[str, Any]], experiment: str, run: dict[str, Any] | None) -> dict[str, Any]:
    """The tables one result page shows, by experiment (rows as stored)."""
    alls = [r for r in rows if r["grp"] == ALL_ITEMS]
    if experiment == Experiment.A:
        return {"random": random_summary(rows), "methods": sorted({r["condition"] for r in alls} - {RANDOM}),
                "score_rows": sorted(({**r, "normalised_ok": normalised_is_meaningful(r)} for r in alls
                                      if r["condition"] != RANDOM), key=lambda r: (r["condition"], float(r["p"]))),
                "random_rows": sorted((r for r in alls if r["condition"] == RANDOM),
                                      key=lambda r: (float(r["p"]), r["seed"] if r["seed"] is not None else -1))}
    if experiment == Experiment.B:
        return {"overall": [r for r in rows if not _is_subset(r)],
                "tables": [(t.value, [r for r in rows if _is_subset(r) and r["group_type"] == t]) for t in Objective],
                "untyped": [r for r in rows if _is_subset(r) and r["group_type"] is None], "p": rows[0]["p"]}
    if experiment == Experiment.C:
        order: dict[str, int] = {name: i for i, name in enumerate(SET_PARTS)}
        by_set: dict[tuple[float, str], dict[str, Any]] = {}
        for r in rows:
            key = (float(r["p"]), str(r["condition"]))
            by_set.setdefault(key, {"p": key[0], "set": key[1], "groups": {}})["groups"][str(r["grp"])] = r
        return {"c_rows": [by_set[k] for k in sorted(by_set, key=lambda k: (k[0], order.get(k[1], 9), k[1]))],
                "c_subsets": sorted({str(r["grp"]) for r in rows if _is_subset(r)})}
    neuron_set = (run or {}).get("params", {}).get("neuron_set") or {}
    return {"neuron_set": neuron_set, "n_set": sum(len(v) for v in neuron_set.values())}

