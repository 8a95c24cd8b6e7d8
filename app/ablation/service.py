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

from app.jobs.service import JobError
from app.neurons import service as neurons
from app.validation import check_checkpoint, load_checked_dataset, resolve_dataset
from workers.neurons import selection as sel
from workers.specs import AblateParams

if TYPE_CHECKING:
    from app.services import Services


def write_inputs(services: Services, arrays: dict[str, np.ndarray]) -> str:
    """Store arrays as inputs/<sha>.npz in the artifact store; return the path relative to its root."""
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in sorted(arrays.items())})  # type: ignore[arg-type]
    data = buf.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:24]
    rel = f"inputs/{digest}.npz"
    path = services.settings.resolved_artifact_dir / rel
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return rel


def _own_scores(services: Services, checkpoint: str, hook: str) -> dict[str, np.ndarray]:
    out = {"magnitude": neurons.scores(services, checkpoint, "A", "own", hook),
           "means": neurons.scores(services, checkpoint, "A", "all", hook)}
    with contextlib.suppress(JobError):  # no base model at capture: experiment A has no change curve
        out["change"] = neurons.scores(services, checkpoint, "C", "own", hook)
    return {k: np.nan_to_num(v) for k, v in out.items()}


def prepare_ablate(services: Services, params: AblateParams) -> str:
    ck = check_checkpoint(services, params.checkpoint)
    params.dataset = resolve_dataset(services, params.dataset)
    _, revision = load_checked_dataset(services, params.dataset)
    hook = str(params.extra.get("hook_point", "down_proj_input"))
    arrays: dict[str, np.ndarray] = {}
    if params.experiment == "single":
        if params.neuron_set is None and params.extra.get("set_name"):
            ns = neurons.get_set(services, str(params.extra["set_name"]))
            params.neuron_set = {str(k): v for k, v in ns.neurons.items()}
        if not params.neuron_set:
            raise JobError("a single ablation needs neuron_set {layer: [indices]} or extra.set_name", 400)
        if params.mode == "mean":
            arrays["means"] = _own_scores(services, ck.id, hook)["means"]
    else:
        arrays.update(_own_scores(services, ck.id, hook))
    if params.experiment == "C":
        if ck.regime != "mixed":
            raise JobError(f"experiment C ablates the mixed RM; checkpoint {ck.id} is {ck.regime}", 400)
        cks = neurons.regime_checkpoints(services, ck.base_model, ck.seed, hook)
        for regime in ("helpful", "harmless"):
            if regime not in cks:
                raise JobError(f"experiment C needs a captured {regime} RM of {ck.base_model} seed {ck.seed}", 404)
            arrays[f"{regime}_magnitude"] = np.nan_to_num(neurons.scores(services, cks[regime], "A", "own", hook))
        params.extra["helpful_checkpoint"] = cks["helpful"]
        params.extra["harmless_checkpoint"] = cks["harmless"]
    if arrays:
        params.extra["inputs"] = write_inputs(services, arrays)
    return revision


def mask_from_request(shape: tuple[int, int], neurons_by_layer: dict[str, list[int]]) -> np.ndarray:
    try:
        return sel.dict_to_mask({int(k): v for k, v in neurons_by_layer.items()}, shape)
    except ValueError as exc:
        raise JobError(str(exc), 400) from exc


def results(services: Services, result_key: str) -> dict[str, Any]:
    rows = services.store.query("SELECT * FROM ablation_results WHERE result_key = ? ORDER BY experiment,"
                                " condition, p, grp", [result_key])
    flips = services.store.query("SELECT * FROM ablation_flips WHERE result_key = ? ORDER BY condition, item_id"
                                 " LIMIT 2000", [result_key])
    return {"result_key": result_key, "rows": rows, "flips": flips}


def live_config(services: Services, checkpoint: str, probe_limit: int = 64, max_length: int = 128,
                hook: str = "down_proj_input") -> dict[str, Any]:
    ck = check_checkpoint(services, checkpoint)
    means = None
    with contextlib.suppress(JobError):  # not captured: zero/scale still work, mean mode says so
        means = np.nan_to_num(neurons.scores(services, ck.id, "A", "all", hook)).tolist()
    return {"artifact_root": str(services.settings.resolved_artifact_dir), "checkpoint": ck.id,
            "probe": {"source": "bundled", "split": "test", "limit": probe_limit}, "max_length": max_length,
            "means": means, "hook_point": hook, "device": services.settings.device}


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
            raise JobError(f"neurons must be JSON like {{\"3\": [1, 2]}}: {exc}", 400) from exc
    elif set_name:
        chosen = {str(k): list(v) for k, v in neurons.get_set(services, set_name).neurons.items()}
    elif part:
        ov = neurons.overlap(services, ck.base_model, p, stat, seed, hook, shared)  # type: ignore[arg-type]
        if part not in ov["masks"]:
            raise JobError(f"unknown part {part!r}; one of {sorted(ov['masks'])}", 400)
        chosen = {str(k): v for k, v in sel.mask_to_dict(ov["masks"][part]).items()}
    else:
        raise JobError("say which neurons: neurons={layer: [..]}, set=NAME or part=shared|helpful_specific|...", 400)
    if layer is not None:
        chosen = {k: v for k, v in chosen.items() if int(k) == layer}
    return chosen


def live_toggle(services: Services, pool: Any, checkpoint: str, chosen: dict[str, list[int]], mode: str = "zero",
                factor: float = 0.0, probe_limit: int = 64, path: str = "fast") -> dict[str, Any]:
    if mode not in ("zero", "mean", "scale"):
        raise JobError(f"unknown mode {mode!r}; one of zero, mean, scale", 400)
    if path not in ("fast", "full"):
        raise JobError("path must be fast or full", 400)
    if not 1 <= probe_limit <= 512:
        raise JobError("probe_limit must be within 1..512 pairs per objective", 400)
    config = live_config(services, checkpoint, probe_limit)
    if mode == "mean" and config["means"] is None:
        raise JobError("mean ablation needs this RM's capture (its per-neuron means); run a capture first", 400)
    worker = pool.get(f"{checkpoint}:{probe_limit}", config)
    ans = worker.toggle({"neurons": chosen, "mode": mode, "factor": factor, "path": path})
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
            raise JobError(f"unknown part {part!r}; one of {', '.join(TOGGLE_PARTS)}", 400)
        if not (math.isfinite(p) and 0 <= p <= 100):
            raise JobError(f"p must be a percentage within [0, 100], got {p}", 400)
        if stat not in TOGGLE_STATS:
            raise JobError(f"unknown statistic {stat!r}; one of A (magnitude), C (change), P (probability)", 400)
        if shared not in TOGGLE_SHARED:
            raise JobError(f"unknown shared mode {shared!r}; one of {', '.join(TOGGLE_SHARED)}", 400)
    shape = toggle_shape(services, ck.id, hook)
    if layer is not None and (layer < 0 or (shape is not None and layer >= shape[0])):
        top = f"0-{shape[0] - 1}" if shape else "from 0"
        raise JobError(f"layer {layer} out of range: {ck.base_model} has layers {top}", 404)
    chosen = resolve_toggle_neurons(services, ck.id, neurons_json=neurons_json, set_name=set_name, part=part, p=p,
                                    stat=stat, seed=seed, shared=shared, layer=layer, hook=hook)
    for k, idx in chosen.items():
        li = int(k)
        if li < 0 or (shape is not None and li >= shape[0]):
            top = f"0-{shape[0] - 1}" if shape else "from 0"
            raise JobError(f"layer {li} out of range: {ck.base_model} has layers {top}", 404)
        bad = [i for i in idx if i < 0 or (shape is not None and i >= shape[1])]
        if bad:
            top = f"0-{shape[1] - 1}" if shape else "from 0"
            raise JobError(f"neuron {bad[0]} of layer {li} out of range: neurons are {top}", 404)
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
    from app.db import Run

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

    from app.db import Checkpoint

    if not ids:
        return {}
    with services.db.session() as s:
        rows = s.scalars(select(Checkpoint).where(Checkpoint.id.in_(ids)))
        return {c.id: {"base_model": c.base_model, "regime": c.regime, "seed": c.seed, "preset": c.preset}
                for c in rows}
