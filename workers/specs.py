"""THE contract between the control plane and the workers.

`app/` imports only this module from `workers/`. A job is a `JobSpec` written to a JSON file;
the worker entry point (`python -m workers SPEC_FILE`) runs it, streams progress to
`progress.json` in the job's output directory, and finishes by writing `manifest.json`
that lists the Parquet/JSON result tables the API ingests into DuckDB.
Nothing here imports torch, so the web process stays small.
"""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workers import CODE_VERSION


class JobKind(StrEnum):
    score = "score"
    train = "train"
    evaluate = "evaluate"
    capture = "capture"
    ablate = "ablate"


Objective = Literal["helpful", "harmless"]
Regime = Literal["helpful", "harmless", "mixed"]
OBJECTIVES: tuple[Objective, ...] = ("helpful", "harmless")
Device = Literal["auto", "cpu", "cuda"]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DatasetRef(_Params):
    """Where preference pairs come from: `bundled`, a file path, or a Hugging Face dataset id."""

    source: str = Field("bundled", description="'bundled', a path to a file, or 'hf:<dataset id>'")
    format: Literal["auto", "canonical", "hh-rlhf", "rm-bench", "rewardbench"] = "auto"
    split: Literal["train", "test", "all"] = "test"
    objectives: list[Objective] = Field(default_factory=lambda: list(OBJECTIVES))
    subsets: list[str] | None = None
    limit: int | None = Field(None, ge=1, description="Keep at most this many pairs per objective")
    seed: int = 0


class ScoreParams(_Params):
    """Reward every chosen and rejected text of a dataset with one model."""

    model: str = "minilm-l6"
    checkpoint: str | None = None
    dataset: DatasetRef = Field(default_factory=DatasetRef)
    max_length: int = Field(128, ge=8, le=8192)
    batch_size: int = Field(16, ge=1, le=1024)


class TrainParams(_Params):
    model: str = "minilm-l6"
    regime: Regime = "mixed"
    preset: Literal["demo", "paper", "custom"] = "demo"
    dataset: DatasetRef = Field(default_factory=lambda: DatasetRef(split="train"))
    seed: int = 0
    epochs: float | None = None
    learning_rate: float | None = None
    batch_size: int | None = None
    max_length: int | None = None
    freeze_layers: int | None = None
    eval_fraction: float = 0.1


class EvaluateParams(_Params):
    checkpoints: list[str] = Field(..., min_length=1, description="checkpoint ids to evaluate")
    dataset: DatasetRef = Field(default_factory=DatasetRef)
    max_length: int = 128
    batch_size: int = 16
    n_bootstrap: int = 1000
    bon_mode: Literal["pairs", "aligned", "full"] = "aligned"


class CaptureParams(_Params):
    checkpoint: str
    base_model: str | None = None
    dataset: DatasetRef = Field(default_factory=lambda: DatasetRef(split="train"))
    hook: Literal["down_proj_input", "act_output"] = "down_proj_input"
    max_length: int = 128
    batch_size: int = 16
    top_k_examples: int = Field(8, ge=0, le=100)


class AblateParams(_Params):
    experiment: Literal["single", "A", "B", "C"] = "single"
    checkpoint: str
    neuron_set: dict[str, list[int]] | None = Field(
        None, description="layer index (as string) -> neuron indices, for experiment 'single'"
    )
    mode: Literal["zero", "mean", "scale"] = "zero"
    scale: float = 0.0
    dataset: DatasetRef = Field(default_factory=DatasetRef)
    percents: list[float] | None = Field(
        None, description="A: the dose-response grid (default 0,2,…,30,100); B: [p] (default 10); C: default 5,10,20")
    random_seeds: list[int] = Field(default_factory=lambda: [0, 1, 2])
    max_length: int = 128
    batch_size: int = 16
    limit_per_objective: int | None = Field(None, ge=1, description="probe pairs per objective (None: all)")
    extra: dict[str, Any] = Field(default_factory=dict)


PARAMS_BY_KIND: dict[JobKind, type[_Params]] = {
    JobKind.score: ScoreParams,
    JobKind.train: TrainParams,
    JobKind.evaluate: EvaluateParams,
    JobKind.capture: CaptureParams,
    JobKind.ablate: AblateParams,
}


class JobSpec(BaseModel):
    """Everything a worker needs; paths come from here, never from local assumptions."""

    job_id: str
    kind: JobKind
    params: dict[str, Any]
    result_key: str
    output_dir: str = Field(..., description="where progress.json, manifest.json and tables go")
    artifact_root: str = Field(..., description="the artifact store root (checkpoints live under it)")
    device: Device = "auto"

    def typed_params(self) -> _Params:
        return PARAMS_BY_KIND[self.kind].model_validate(self.params)


class ResultTable(BaseModel):
    """One file of results, bound for one DuckDB table."""

    table: str
    path: str = Field(..., description="relative to the job's output_dir")
    rows: int


class ResultManifest(BaseModel):
    job_id: str
    kind: JobKind
    result_key: str
    tables: list[ResultTable] = Field(default_factory=list)
    summary: dict[str, Any] = Field(default_factory=dict)
    checkpoint: str | None = Field(None, description="checkpoint id produced by a training job")


class ProgressReport(BaseModel):
    fraction: float = 0.0
    message: str = ""
    heartbeat: float = 0.0
    metrics: dict[str, Any] = Field(default_factory=dict)


def checkpoint_dir(artifact_root: str | Path, checkpoint_id: str) -> Path:
    """Where a checkpoint id lives in the artifact store: the one convention both planes share."""
    return Path(artifact_root) / "checkpoints" / checkpoint_id


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def result_key(kind: JobKind | str, params: dict[str, Any], data_revision: str = "",
               code_version: str = CODE_VERSION) -> str:
    """Hash of everything that produced a result: same inputs, same key, cache hit."""
    payload = canonical_json(
        {"kind": str(kind), "params": params, "data": data_revision, "code": code_version}
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
