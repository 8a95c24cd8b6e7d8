"""Ablation job: experiments A-C (or one set) on an RM's probe items, each beside layer-matched random sets."""

from __future__ import annotations

from typing import Any

import numpy as np

from workers.ablation.experiments import PERCENTS_A, Probe, experiment_a, experiment_b, experiment_c, run_with_controls
from workers.contract.artifacts import ResultManifest, ResultTable
from workers.contract.jobs import AblateParams
from workers.contract.results import AblationFlipRow, AblationResultRow
from workers.contract.vocab import SINGLE_REGIMES, AblationMode, Experiment, objectives_of
from workers.jobs.io import JobIO
from workers.progress import Progress

RESULT_COLUMNS = AblationResultRow.columns()
FLIP_COLUMNS = AblationFlipRow.columns()


def _row(raw: dict[str, Any], experiment: str, condition: str) -> dict[str, Any]:
    out = {k: raw.get(k) for k in RESULT_COLUMNS}
    out.update(experiment=experiment, condition=condition, grp=raw.get("group"))
    fr = raw.get("layer_fractions") or {}
    out.update(frac_early=fr.get("early"), frac_middle=fr.get("middle"), frac_late=fr.get("late"))
    for k, v in list(out.items()):
        if isinstance(v, float) and not np.isfinite(v):
            out[k] = None
    return out


def run(job: JobIO, progress: Progress) -> ResultManifest:
    from workers.ablation.engine import Ablation, model_shape
    from workers.ablation.experiments import live_scorer
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts

    params = job.spec.typed(AblateParams)
    device = job.spec.device
    meta = job.checkpoint_meta(params.checkpoint)
    ref = params.dataset
    if params.experiment == Experiment.A:  # the study: accuracy on each RM's own test set
        ref = ref.model_copy(update={"objectives": list(objectives_of(meta["regime"]))})
    if params.limit_per_objective:
        ref = ref.model_copy(update={"limit": params.limit_per_objective})
    pairs = job.pairs(ref)
    inputs = job.arrays(params.inputs)
    progress.update(0.02, f"loading {meta['regime']} RM", force=True)
    loaded = load_reward_model(meta["base_model"], checkpoint_dir=str(job.checkpoint_dir(params.checkpoint)),
                               device=device)
    probe = Probe.from_pairs(pairs)
    progress.update(0.05, f"recording the unablated model on {len(probe.texts)} texts", force=True)
    inner = live_scorer(loaded, probe, max_length=params.max_length)
    calls = {"n": 0, "passes": 0}
    expected = _expected_passes(params)

    def scorer(ablations: Any) -> Any:
        out = inner(ablations)
        calls["n"] += 1
        calls["passes"] += len(ablations)
        progress.update(0.08 + 0.9 * min(1.0, calls["passes"] / expected),
                        f"{calls['passes']} ablated passes of ~{expected}", passes=calls["passes"])
        return out

    opts: dict[str, Any] = {"mode": params.mode, "factor": params.scale}
    if params.mode == AblationMode.mean:
        opts["means"] = inputs["means"]
    seeds = params.random_seeds
    # Layers frozen in training hold the same neurons in every RM: left out of A-C's selections unless asked.
    exclude = [] if params.include_frozen else sorted(set(params.frozen_layers or []))
    rows: list[dict[str, Any]] = []
    flips: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"experiment": params.experiment, "regime": meta["regime"], "n_items": probe.n_items,
                               "frozen_layers": list(params.frozen_layers or []), "excluded_layers": exclude}
    if params.experiment == Experiment.A:
        scores: dict[str, Any] = {k: inputs[k] for k in ("magnitude", "change") if k in inputs}
        raw = experiment_a(probe, scorer, scores, percents=params.percents or PERCENTS_A, seeds=seeds,
                           exclude_layers=exclude, **opts)
        rows = [_row(r, "A", r["selection"]) for r in raw]
    elif params.experiment == Experiment.B:
        p = (params.percents or [10.0])[0]
        out = experiment_b(probe, scorer, inputs["magnitude"], p=p, seeds=seeds, exclude_layers=exclude, **opts)
        rows = [_row(r, "B", "magnitude") for r in out["rows"]]
        flips = [{**f, "condition": "magnitude", "p": p} for f in out["flips"]]
    elif params.experiment == Experiment.C:
        singles: dict[str, Any] = {}
        single_checkpoints = {"helpful": params.helpful_checkpoint, "harmless": params.harmless_checkpoint}
        for regime in SINGLE_REGIMES:
            ck = single_checkpoints[regime]
            if ck is None:
                raise ValueError(f"experiment C needs the {regime}-only checkpoint ({regime}_checkpoint)")
            progress.update(0.06, f"scoring the probe with the {regime} RM (for transferability)", force=True)
            rm = load_reward_model(meta["base_model"], checkpoint_dir=str(job.checkpoint_dir(ck)), device=device)
            singles[regime] = probe.correct(score_texts(rm, probe.texts, max_length=params.max_length))
            del rm
        out = experiment_c(probe, scorer, inputs["helpful_magnitude"], inputs["harmless_magnitude"],
                           single_rm_correct=singles, percents=params.percents or (5.0, 10.0, 20.0), seeds=seeds,
                           exclude_layers=exclude, **opts)
        rows = [_row(r, "C", r["set"]) for r in out["rows"]]
        flips = [{**{k: v for k, v in f.items() if k != "set"}, "condition": f["set"]} for f in out["flips"]]
        summary["neuron_sets"] = {k: sum(len(v) for v in d.values()) for k, d in out["neuron_sets"].items()}
    else:
        shape = model_shape(loaded)
        abl = Ablation(params.neuron_set.layers if params.neuron_set else {}, **opts)
        abl.validate(*shape)
        out = run_with_controls(probe, scorer, abl, shape, seeds=seeds)
        rows = [_row({**r, "p": None}, "single", abl.key()[:12]) for r in out["rows"]]
        flips = [{**f, "condition": abl.key()[:12], "p": None} for f in out["flips"]]
    common = {"checkpoint": params.checkpoint, "regime": meta["regime"]}
    for r in rows:
        r.update(common)
    for f in flips:
        f.update(checkpoint=params.checkpoint, experiment=params.experiment)
    flips = [{k: f.get(k) for k in FLIP_COLUMNS} for f in flips]
    tables: list[ResultTable] = []
    if rows:
        tables.append(job.write_table(AblationResultRow, rows))
    if flips:
        tables.append(job.write_table(AblationFlipRow, flips))
    summary["passes"] = calls["passes"]
    summary["headline"] = [{k: r[k] for k in ("condition", "p", "grp", "delta", "ci_lo", "ci_hi", "random_delta_mean")}
                           for r in rows if r["grp"] in ("all", "objective:helpful", "objective:harmless")][:60]
    return job.manifest(tables, summary)


def _expected_passes(params: AblateParams) -> int:
    n_seeds = max(1, len(params.random_seeds))
    if params.experiment == Experiment.A:
        n_p = len(params.percents or PERCENTS_A)
        return 1 + n_p * (n_seeds + 2 * (1 + n_seeds))
    if params.experiment == Experiment.C:
        return 1 + len(params.percents or (5, 10, 20)) * 3 * (1 + n_seeds)
    return 2 + n_seeds
