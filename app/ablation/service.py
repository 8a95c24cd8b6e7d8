"""Ablations: turn a request into content-addressed worker inputs; read experiment results back.

Workers never open DuckDB, so the neuron scores an experiment selects from are computed here and
handed over as an `.npz` file named by its hash (the hash is part of the job's parameters, hence of
its result key: same scores, same key, cache hit).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
from typing import TYPE_CHECKING, Any

import numpy as np

from app.core.checks import check_checkpoint, load_checked_dataset, resolve_dataset
from app.core.errors import AppError, Invalid, NotFound
from app.neurons import service as neurons
from workers.contract.artifacts import artifact_uri
from workers.contract.jobs import AblateParams, NeuronIndexSet
from workers.contract.live import LiveSessionConfig, LiveToggleRequest, default_probe
from workers.contract.vocab import SINGLE_REGIMES, AblationMode, Experiment, HookPoint, LivePath, Regime
from workers.neurons import selection as sel

if TYPE_CHECKING:
    from app.core.services import Services


def write_inputs(services: Services, arrays: dict[str, np.ndarray]) -> str:
    """Store arrays as inputs/<sha>.npz in the artifact store; return its artifact URI."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in sorted(arrays.items())})  # type: ignore[arg-type]
    data = buf.getvalue()
    key = f"inputs/{hashlib.sha256(data).hexdigest()[:24]}.npz"
    store = services.settings.artifact_store_client()
    if not store.exists(key):
        store.write_bytes(key, data)
    return artifact_uri(key)


def _own_scores(services: Services, checkpoint: str, hook: str) -> dict[str, np.ndarray]:
    out = {"magnitude": neurons.scores(services, checkpoint, "A", "own", hook),
           "means": neurons.scores(services, checkpoint, "A", "all", hook)}
    with contextlib.suppress(AppError):  # no base model at capture: experiment A has no change curve
        out["change"] = neurons.scores(services, checkpoint, "C", "own", hook)
    return {k: np.nan_to_num(v) for k, v in out.items()}


def prepare_ablate(services: Services, params: AblateParams) -> str:
    ck = check_checkpoint(services, params.checkpoint)
    params.dataset = resolve_dataset(services, params.dataset)
    _, revision = load_checked_dataset(services, params.dataset)
    hook = params.hook
    arrays: dict[str, np.ndarray] = {}
    if params.experiment == Experiment.single:
        if params.neuron_set is None and params.set_name:
            ns = neurons.get_set(services, params.set_name)
            params.neuron_set = NeuronIndexSet.model_validate(ns.neurons)
        if not params.neuron_set or not params.neuron_set.size():
            raise Invalid("a single ablation needs neuron_set {layer: [indices]} or set_name")
        if params.mode == AblationMode.mean:
            arrays["means"] = _own_scores(services, ck.id, hook)["means"]
    else:
        arrays.update(_own_scores(services, ck.id, hook))
    if params.experiment == Experiment.C:
        if ck.regime != Regime.mixed:
            raise Invalid(f"experiment C ablates the mixed RM; checkpoint {ck.id} is {ck.regime}")
        cks = neurons.regime_checkpoints(services, ck.base_model, ck.seed, hook)
        for regime in SINGLE_REGIMES:
            if regime not in cks:
                raise NotFound(f"experiment C needs a captured {regime} RM of {ck.base_model} seed {ck.seed}")
            arrays[f"{regime}_magnitude"] = np.nan_to_num(neurons.scores(services, cks[regime], "A", "own", hook))
        params.helpful_checkpoint = cks[Regime.helpful]
        params.harmless_checkpoint = cks[Regime.harmless]
    if arrays:
        params.inputs = write_inputs(services, arrays)
    return revision


def mask_from_request(shape: tuple[int, int], neurons_by_layer: dict[str, list[int]]) -> np.ndarray:
    try:
        return sel.dict_to_mask({int(k): v for k, v in neurons_by_layer.items()}, shape)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc


def results(services: Services, result_key: str) -> dict[str, Any]:
    rows = services.store.query("SELECT * FROM ablation_results WHERE result_key = ? ORDER BY experiment,"
                                " condition, p, grp", [result_key])
    flips = services.store.query("SELECT * FROM ablation_flips WHERE result_key = ? ORDER BY condition, item_id"
                                 " LIMIT 2000", [result_key])
    return {"result_key": result_key, "rows": rows, "flips": flips}


def live_config(services: Services, checkpoint: str, probe_limit: int = 64, max_length: int = 128,
                hook: str = HookPoint.down_proj_input) -> LiveSessionConfig:
    ck = check_checkpoint(services, checkpoint)
    means = None
    with contextlib.suppress(AppError):  # not captured: zero/scale still work, mean mode says so
        means = write_inputs(services, {"means": np.nan_to_num(neurons.scores(services, ck.id, "A", "all", hook))})
    return LiveSessionConfig(store_url=services.settings.resolved_artifact_store, checkpoint=ck.id,
                             probe=default_probe(probe_limit), max_length=max_length, means=means,
                             hook=HookPoint(hook), device=services.settings.device)


def resolve_toggle_neurons(services: Services, checkpoint: str, *, neurons_json: str | None = None,
                           set_name: str | None = None, part: str | None = None, p: float = 10.0,
                           stat: str = "A", seed: int = 0, shared: str = "intersection",
                           layer: int | None = None, hook: str = "down_proj_input") -> dict[str, list[int]]:
    """A toggle names its neurons directly, by a stored set, or by a part of the overlap dashboard;
    `layer` keeps only that layer's slice."""
    import json

    ck = check_checkpoint(services, checkpoint)
    if neurons_json:
        try:
            raw = json.loads(neurons_json)
            chosen = {str(int(k)): sorted({int(i) for i in v}) for k, v in raw.items()}
        except (ValueError, TypeError, AttributeError) as exc:
            raise Invalid(f"neurons must be JSON like {{\"3\": [1, 2]}}: {exc}") from exc
    elif set_name:
        chosen = {str(k): list(v) for k, v in neurons.get_set(services, set_name).neurons.items()}
    elif part:
        ov = neurons.overlap(services, ck.base_model, p, stat, seed, hook, shared)  # type: ignore[arg-type]
        if part not in ov["masks"]:
            raise Invalid(f"unknown part {part!r}; one of {sorted(ov['masks'])}")
        chosen = {str(k): v for k, v in sel.mask_to_dict(ov["masks"][part]).items()}
    else:
        raise Invalid("say which neurons: neurons={layer: [..]}, set=NAME or part=shared|helpful_specific|...")
    if layer is not None:
        chosen = {k: v for k, v in chosen.items() if int(k) == layer}
    return chosen


def live_toggle(services: Services, pool: Any, checkpoint: str, chosen: dict[str, list[int]], mode: str = "zero",
                factor: float = 0.0, probe_limit: int = 64, path: str = "fast") -> dict[str, Any]:
    if mode not in ("zero", "mean", "scale"):
        raise Invalid(f"unknown mode {mode!r}; one of zero, mean, scale")
    if path not in ("fast", "full"):
        raise Invalid("path must be fast or full")
    if not 1 <= probe_limit <= 512:
        raise Invalid("probe_limit must be within 1..512 pairs per objective")
    config = live_config(services, checkpoint, probe_limit)
    if mode == "mean" and config.means is None:
        raise Invalid("mean ablation needs this RM's capture (its per-neuron means); run a capture first")
    worker = pool.get(f"{checkpoint}:{probe_limit}", config)
    timed = worker.toggle(LiveToggleRequest(neurons=NeuronIndexSet.model_validate(chosen), mode=AblationMode(mode),
                                            factor=factor, path=LivePath(path)))
    ans = timed.answer.model_dump(mode="json")
    if ans["ablation"].get("factor") is None:
        ans["ablation"].pop("factor")
    ans["roundtrip_ms"] = timed.roundtrip_ms
    ans["n_neurons"] = sum(len(v) for v in chosen.values())
    ans["neurons"] = chosen
    return ans


def ablation_runs(services: Services, checkpoint: str | None = None) -> list[dict[str, Any]]:
    sql = ("SELECT result_key, checkpoint, any_value(regime) AS regime, any_value(experiment) AS experiment,"
           " count(*) AS n_rows FROM ablation_results")
    args: list[Any] = []
    if checkpoint:
        sql += " WHERE checkpoint = ?"
        args.append(checkpoint)
    return services.store.query(sql + " GROUP BY result_key, checkpoint ORDER BY regime, experiment", args)


# -- helpers for the ablation pages (app/ablation/pages.py) ------------------------------------------------
TOGGLE_PARTS = ("helpful", "harmless", "mixed", "helpful_specific", "harmless_specific", "shared")
TOGGLE_STATS = ("A", "C", "P")
TOGGLE_SHARED = ("intersection", "per_layer")


def toggle_shape(services: Services, checkpoint: str, hook: str = "down_proj_input") -> tuple[int, int] | None:
    """(n_layers, n_neurons) of a captured checkpoint; None when it was never captured at `hook`."""
    for r in neurons.captured_checkpoints(services):
        if r["checkpoint"] == checkpoint and r["hook"] == hook:
            return int(r["n_layers"]), int(r["n_neurons"])
    return None


def checked_toggle_neurons(services: Services, checkpoint: str, *, neurons_json: str | None = None,
                           set_name: str | None = None, part: str | None = None, p: float = 10.0,
                           stat: str = "A", seed: int = 0, shared: str = "intersection", layer: int | None = None,
                           hook: str = "down_proj_input") -> dict[str, list[int]]:
    """`resolve_toggle_neurons` with every argument checked first (400 for a bad value, 404 for a layer or
    neuron outside the model), so a bad toggle never reaches the live worker."""
    import math

    ck = check_checkpoint(services, checkpoint)
    if part and not (neurons_json or set_name):
        if part not in TOGGLE_PARTS:
            raise Invalid(f"unknown part {part!r}; one of {', '.join(TOGGLE_PARTS)}")
        if not (math.isfinite(p) and 0 <= p <= 100):
            raise Invalid(f"p must be a percentage within [0, 100], got {p}")
        if stat not in TOGGLE_STATS:
            raise Invalid(f"unknown statistic {stat!r}; one of A (magnitude), C (change), P (probability)")
        if shared not in TOGGLE_SHARED:
            raise Invalid(f"unknown shared mode {shared!r}; one of {', '.join(TOGGLE_SHARED)}")
    shape = toggle_shape(services, ck.id, hook)
    if layer is not None and (layer < 0 or (shape is not None and layer >= shape[0])):
        top = f"0-{shape[0] - 1}" if shape else "from 0"
        raise NotFound(f"layer {layer} out of range: {ck.base_model} has layers {top}")
    chosen = resolve_toggle_neurons(services, ck.id, neurons_json=neurons_json, set_name=set_name, part=part, p=p,
                                    stat=stat, seed=seed, shared=shared, layer=layer, hook=hook)
    for k, idx in chosen.items():
        li = int(k)
        if li < 0 or (shape is not None and li >= shape[0]):
            top = f"0-{shape[0] - 1}" if shape else "from 0"
            raise NotFound(f"layer {li} out of range: {ck.base_model} has layers {top}")
        bad = [i for i in idx if i < 0 or (shape is not None and i >= shape[1])]
        if bad:
            top = f"0-{shape[1] - 1}" if shape else "from 0"
            raise NotFound(f"neuron {bad[0]} of layer {li} out of range: neurons are {top}")
    return chosen


def single_params(checkpoint: str, chosen: dict[str, list[int]], mode: str = "zero", factor: float = 0.0,
                  max_length: int = 128) -> dict[str, Any]:
    """The exact full-test evaluation of one live toggle: experiment 'single' on the bundled test split."""
    return {"experiment": "single", "checkpoint": checkpoint,
            "neuron_set": {str(k): sorted(int(i) for i in v) for k, v in chosen.items() if v},
            "mode": mode, "scale": factor, "max_length": max_length,
            "dataset": {"source": "bundled", "split": "test"}}


def run_record(services: Services, result_key: str) -> dict[str, Any] | None:
    """The metadata row of a finished result (the job's normalised parameters, its job id)."""
    from app.core.db import Run

    with services.db.session() as s:
        run = s.get(Run, result_key)
        if run is None:
            return None
        return {"result_key": run.result_key, "kind": run.kind, "job_id": run.job_id, "params": dict(run.params or {}),
                "summary": dict(run.summary or {}), "created_at": run.created_at}


def recompute_command(params: dict[str, Any]) -> str:
    """The `tension submit ablate '<params json>'` line that recomputes (or re-finds) a result."""
    import json
    import shlex

    return "tension submit ablate " + shlex.quote(json.dumps(params, sort_keys=True, separators=(", ", ": ")))


def checkpoint_info(services: Services, ids: list[str]) -> dict[str, dict[str, Any]]:
    """base model, regime and seed of each checkpoint id (those the metadata database knows)."""
    from sqlalchemy import select

    from app.core.db import Checkpoint

    if not ids:
        return {}
    with services.db.session() as s:
        rows = s.scalars(select(Checkpoint).where(Checkpoint.id.in_(ids)))
        return {c.id: {"base_model": c.base_model, "regime": c.regime, "seed": c.seed, "preset": c.preset}
                for c in rows}
