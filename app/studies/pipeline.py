"""The study's stages and the jobs each one runs: pure functions from the spec and earlier results.

train (regimes × seeds) → evaluate (every checkpoint at once) → capture (each RM) → experiments (A and B
for every RM, C for each mixed RM) → report. A stage's jobs are ordinary job requests, so the job
table's cache makes a rerun (a resumed study, or a second study sharing a stage) reuse finished work.
"""

from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from typing import Any

from app.studies.presets import STUDY_PRESETS
from app.studies.schemas import StudyCreate, StudyResults
from workers.contract.version import code_version
from workers.contract.vocab import REGIMES, Experiment, JobKind, Regime, Split

STAGES: tuple[str, ...] = ("train", "evaluate", "capture", "experiments", "report")
STAGE_TITLES = {
    "train": "Train the three regimes",
    "evaluate": "Evaluate every RM on the test split",
    "capture": "Capture MLP neuron statistics",
    "experiments": "Ablation experiments A, B, C",
    "report": "Report",
}
JOB_STAGES = STAGES[:-1]  # the report is read from stored results, it runs no job


@dataclass(frozen=True)
class PlannedJob:
    label: str
    kind: JobKind
    params: dict[str, Any]


def expand_spec(request: StudyCreate) -> dict[str, Any]:
    """The full definition of a study: its preset's values with the request's model and seeds."""
    preset = STUDY_PRESETS[request.preset]
    spec = preset.as_dict()
    spec["model"] = request.model or preset.model
    spec["seeds"] = sorted(set(request.seeds)) if request.seeds else list(preset.seeds)
    for key in ("dose_percents", "random_seeds", "seeds"):
        spec[key] = list(spec[key])
    return spec


def study_key(spec: dict[str, Any]) -> str:
    """sha256 (24 hex) of the expanded spec and the worker code version: a study's link never changes,
    and new code makes a new study rather than quietly mixing results."""
    blob = json.dumps({"spec": spec, "code": code_version()}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _dataset(split: Split, limit: int | None) -> dict[str, Any]:
    ref: dict[str, Any] = {"source": "bundled", "split": split}
    if limit is not None:
        ref["limit"] = limit
    return ref


def plan_stage(stage: str, spec: dict[str, Any], results: StudyResults) -> list[PlannedJob]:
    """The jobs of `stage`, given the results of the stages before it."""
    model, seeds, max_length = spec["model"], spec["seeds"], spec["max_length"]
    if stage == "train":
        return [PlannedJob(f"train/{regime}/{seed}", JobKind.train, {
            "model": model, "regime": regime, "preset": spec["train_preset"], "seed": seed,
            "dataset": _dataset(Split.train, spec["train_limit"]), **spec.get("train_overrides", {})})
            for seed in seeds for regime in REGIMES]
    cks = results.checkpoints
    if stage == "evaluate":
        return [PlannedJob("evaluate", JobKind.evaluate, {
            "checkpoints": [cks[r][str(s)] for s in seeds for r in REGIMES], "max_length": max_length,
            "dataset": _dataset(Split.test, spec["eval_limit"])})]
    if stage == "capture":
        return [PlannedJob(f"capture/{regime}/{seed}", JobKind.capture, {
            "checkpoint": cks[regime][str(seed)], "base_model": model, "max_length": max_length,
            "dataset": _dataset(Split.train, spec["capture_limit"])}) for seed in seeds for regime in REGIMES]
    if stage == "experiments":
        out = []
        for exp in (Experiment.A, Experiment.B, Experiment.C):
            for seed in seeds:
                for regime in (REGIMES if exp != Experiment.C else (Regime.mixed,)):
                    params: dict[str, Any] = {
                        "experiment": exp, "checkpoint": cks[regime][str(seed)], "max_length": max_length,
                        "random_seeds": spec["random_seeds"], "dataset": {"source": "bundled", "split": Split.test}}
                    if spec["ablate_limit"] is not None:
                        params["limit_per_objective"] = spec["ablate_limit"]
                    if exp == Experiment.A:
                        params["percents"] = spec["dose_percents"]
                    out.append(PlannedJob(f"{exp}/{regime}/{seed}", JobKind.ablate, params))
        return out
    return []


def results_of(spec: dict[str, Any], result_keys: dict[str, str]) -> StudyResults:
    """The study's results by role, from the result keys of its succeeded jobs (label -> key)."""
    res = StudyResults(model=spec["model"], seeds=spec["seeds"])
    for label, key in result_keys.items():
        head, _, rest = label.partition("/")
        if head == "train":
            regime, seed = rest.split("/")
            res.checkpoints.setdefault(regime, {})[seed] = key
        elif head == "evaluate":
            res.evaluation = key
        elif head == "capture":
            res.captures[rest] = key
        else:
            res.ablations[label] = key
    return res


def recompute_command(spec: dict[str, Any]) -> str:
    """The CLI command that recomputes this study (every finished job is reused from the cache)."""
    seeds = " ".join(f"--seed {s}" for s in spec["seeds"])
    return f"tension study --preset {spec['name']} --model {shlex.quote(spec['model'])} {seeds}"
