"""Job parameters, one typed model per kind, and the spec a worker runs from.

A job is a `JobSpec`: its kind, its typed params, the result key, the artifact store's URL and the
store prefix to write under. That is everything a worker needs: it reads inputs by artifact URI
from the store and writes its progress, tables and manifest back there, so it may run on any machine
that reaches the store. No field here is a free-form dict or a local path.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SerializeAsAny,
    StrictInt,
    field_validator,
    model_validator,
)

from workers.contract.artifacts import ArtifactKey, ArtifactURI, Message, key_of
from workers.contract.vocab import (
    OBJECTIVES,
    AblationMode,
    BonMode,
    DatasetFormat,
    Device,
    Experiment,
    HookPoint,
    JobKind,
    Objective,
    Preset,
    Regime,
    Split,
)

P = TypeVar("P", bound="Params")

MAX_LAYERS, MAX_NEURONS = 4096, 1 << 20
"""Sanity bounds for neuron addresses (no model has more); a real model's shape is checked by the worker."""
MAX_SEED = 2**31 - 1
MAX_PAIRS_LIMIT = 10_000_000

ModelName = Annotated[str, Field(min_length=1, max_length=300)]
CheckpointId = Annotated[str, Field(min_length=1, max_length=64)]


def _finite(x: float) -> float:
    if not math.isfinite(x):
        raise ValueError("must be a finite number")
    return x


Finite = Annotated[float, AfterValidator(_finite)]


class Params(Message):
    """Base of every job's parameters. NaN and infinities are refused in every float field (422 at the API).

    `SERVER_FIELDS` are filled in by the API when it prepares the job; a request's values for them are dropped.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    SERVER_FIELDS: ClassVar[frozenset[str]] = frozenset()


class NeuronIndexSet(RootModel[dict[int, list[StrictInt]]]):
    """`{layer: [neuron indices]}`, the one model of a set of MLP neurons.

    Validated once: layers and indices non-negative and bounded, indices unique and sorted, empty
    layers dropped. JSON object keys are strings; they are read as integers.
    """

    @field_validator("root")
    @classmethod
    def _normalise(cls, v: dict[int, list[int]]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for layer, idx in sorted(v.items()):
            if not 0 <= layer < MAX_LAYERS:
                raise ValueError(f"layer {layer} out of range [0, {MAX_LAYERS})")
            bad = [i for i in idx if not 0 <= i < MAX_NEURONS]
            if bad:
                raise ValueError(f"neuron index {bad[0]} in layer {layer} out of range [0, {MAX_NEURONS})")
            if idx:
                out[layer] = sorted(set(idx))
        return out

    @property
    def layers(self) -> dict[int, list[int]]:
        return self.root

    def size(self) -> int:
        return sum(len(v) for v in self.root.values())

    def check_shape(self, n_layers: int, n_neurons: int) -> None:
        """ValueError naming the first neuron a model of this shape does not have."""
        for layer, idx in self.root.items():
            if layer >= n_layers:
                raise ValueError(f"layer {layer} out of range: the model has {n_layers} layers")
            if idx and idx[-1] >= n_neurons:
                raise ValueError(f"neuron {idx[-1]} out of range in layer {layer}: {n_neurons} neurons per layer")

    def as_json(self) -> dict[str, list[int]]:
        return {str(k): v for k, v in self.root.items()}


_HF_ID = re.compile(r"^[A-Za-z0-9_.-]{1,96}(/[A-Za-z0-9_.-]{1,96})+$")
_ROOT_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,255}$")


def check_root_path(root: str, path: str) -> tuple[str, str]:
    """A data-root reference as text: a root (its index or directory name) and a relative path in it.

    Only the syntax: no absolute path, no '..', '.', empty or hidden-by-backslash segment. The API
    resolves it inside the root (symlinks followed, then confined) before it opens anything.
    """
    if not _ROOT_NAME.match(root) or root.strip(".") == "":
        raise ValueError(f"bad data root {root[:100]!r}: its index (0, 1, ...) or directory name")
    parts = path.split("/")
    if (not path or len(path) > 1000 or path.startswith("/") or "\\" in path or "\0" in path
            or any(p in ("", ".", "..") for p in parts)):
        raise ValueError(f"bad path {path[:200]!r} in data root {root!r}: a relative path like 'dir/file.jsonl', "
                         "without '..'")
    return root, path


def check_source(source: str) -> str:
    """'bundled', 'hf:<id>', 'dataset:<id>' (an upload, resolved by the API), 'root:<root>/<path>' (a file in an
    operator's data root, imported by the API) or 'artifact:<key>'."""
    source = source.strip()
    if source == "bundled":
        return source
    if source.startswith("hf:"):
        if not _HF_ID.match(source[3:]) or any(not p.strip(".") for p in source[3:].split("/")):
            raise ValueError(f"bad Hugging Face dataset id {source[:200]!r}; expected 'hf:<owner>/<name>'")
        return source
    if source.startswith("dataset:"):
        if not source[8:].isalnum() or len(source) > 72:
            raise ValueError(f"bad dataset id {source[:200]!r}; expected 'dataset:<id>' of an uploaded dataset")
        return source
    if source.startswith("root:"):
        root, _, path = source[5:].partition("/")
        check_root_path(root, path)
        return source
    if source.startswith("artifact:"):
        key_of(source)
        return source
    raise ValueError(
        f"unsupported dataset source {source[:200]!r}: use 'bundled', 'hf:<owner>/<name>', upload the file "
        "(`tension datasets add FILE`, POST /api/datasets) and use 'dataset:<id>', or name a file in one of the "
        "server's data roots as 'root:<root>/<path>'; other paths on the server are not read")


class DatasetRef(Params):
    """Which preference pairs a job sees: a source, then split / objectives / subsets / a seeded limit."""

    source: Annotated[str, Field(max_length=1200), AfterValidator(check_source)] = Field(
        "bundled", description="'bundled', 'hf:<dataset id>', 'dataset:<uploaded id>', 'root:<data root>/<path>' "
                               "or 'artifact:<key>'")
    format: DatasetFormat = DatasetFormat.auto
    objective: Objective | None = Field(None, description="the objective of every pair whose record names none "
                                                          "(TRL files, canonical files without one)")
    split: Split = Split.test
    objectives: list[Objective] = Field(default_factory=lambda: list(OBJECTIVES), min_length=1, max_length=8)
    subsets: list[Annotated[str, Field(max_length=300)]] | None = Field(None, max_length=1000)
    limit: int | None = Field(None, ge=1, le=MAX_PAIRS_LIMIT, description="keep at most this many pairs per objective")
    seed: int = Field(0, ge=0, le=MAX_SEED)


_INPUTS_KEY = re.compile(r"^artifact:inputs/[0-9a-f]{8,64}\.npz$")


def _inputs_uri(uri: str) -> str:
    """A job's inputs are arrays the API wrote (`inputs/<sha>.npz`), never another artifact."""
    if not _INPUTS_KEY.match(uri):
        raise ValueError(f"not an inputs artifact: {uri[:200]!r} (expected 'artifact:inputs/<sha>.npz')")
    return uri


InputsURI = Annotated[ArtifactURI, AfterValidator(_inputs_uri)]


def _train_split() -> DatasetRef:
    return DatasetRef(split=Split.train)


class ScoreParams(Params):
    """Reward every chosen and rejected text of a dataset with one model."""

    model: ModelName = Field("minilm-l6", description="a bundled model name or a Hugging Face id")
    checkpoint: CheckpointId | None = Field(None, description="a trained checkpoint id (its base is `model`)")
    dataset: DatasetRef = Field(default_factory=DatasetRef)
    max_length: int = Field(128, ge=8, le=8192, description="tokens per text (left-truncated)")
    batch_size: int = Field(16, ge=1, le=1024)


class TrainParams(Params):
    """Train one reward model in one regime; unset optional fields come from the preset."""

    model: ModelName = Field("minilm-l6", description="a bundled model name or a Hugging Face id")
    regime: Regime = Regime.mixed
    preset: Preset = Preset.demo
    dataset: DatasetRef = Field(default_factory=_train_split)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    epochs: Finite | None = Field(None, gt=0, le=100)
    learning_rate: Finite | None = Field(None, gt=0, le=1)
    batch_size: int | None = Field(None, ge=1, le=1024)
    max_length: int | None = Field(None, ge=8, le=8192)
    freeze_layers: int | None = Field(None, ge=0, le=MAX_LAYERS)
    eval_fraction: Finite = Field(0.1, ge=0, lt=1, description="share of training pairs held out for eval loss")


class EvaluateParams(Params):
    """Accuracy per subset, transfer, calibration and margins of trained checkpoints."""

    checkpoints: list[CheckpointId] = Field(..., min_length=1, max_length=1000,
                                            description="checkpoint ids to evaluate")
    dataset: DatasetRef = Field(default_factory=DatasetRef)
    max_length: int = Field(128, ge=8, le=8192)
    batch_size: int = Field(16, ge=1, le=1024)
    n_bootstrap: int = Field(1000, ge=0, le=100_000, description="bootstrap resamples for CIs")
    bon_mode: BonMode = BonMode.aligned


class CaptureParams(Params):
    """Stream a checkpoint's data through it (and its base model) and keep per-neuron statistics."""

    checkpoint: CheckpointId = Field(..., description="a trained checkpoint id")
    base_model: ModelName | None = Field(None, description="model to compare against for C (default: the RM's base)")
    dataset: DatasetRef = Field(default_factory=_train_split)
    hook: HookPoint = HookPoint.down_proj_input
    max_length: int = Field(128, ge=8, le=8192)
    batch_size: int = Field(16, ge=1, le=1024)
    top_k_examples: int = Field(8, ge=0, le=100, description="top activating tokens kept per neuron")


class AblateParams(Params):
    """Experiments A-C of METHOD.md §4, or one neuron set, each beside layer-matched random controls.

    The API fills `inputs` (the neuron scores to select from, as an artifact) and, for C, the single-
    objective checkpoints; a client names a set by `neuron_set` or `set_name`.
    """

    SERVER_FIELDS: ClassVar[frozenset[str]] = frozenset({"inputs", "helpful_checkpoint", "harmless_checkpoint"})

    experiment: Experiment = Experiment.single
    checkpoint: CheckpointId = Field(..., description="the RM to ablate (experiment C: the mixed RM)")
    neuron_set: NeuronIndexSet | None = Field(None, description="experiment 'single': {layer: [neuron indices]}")
    set_name: str | None = Field(None, max_length=200, description="experiment 'single': a saved neuron set's name")
    hook: HookPoint = HookPoint.down_proj_input
    mode: AblationMode = AblationMode.zero
    scale: Finite = Field(0.0, ge=-1e6, le=1e6, description="factor for mode 'scale'")
    dataset: DatasetRef = Field(default_factory=DatasetRef)
    percents: list[Annotated[Finite, Field(ge=0, le=100)]] | None = Field(
        None, max_length=1000,
        description="A: the dose-response grid (default 0,2,…,30,100); B: [p] (default 10); C: default 5,10,20")
    random_seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED)]] = Field(default_factory=lambda: [0, 1, 2],
                                                                        max_length=1000)
    max_length: int = Field(128, ge=8, le=8192)
    batch_size: int = Field(16, ge=1, le=1024)
    limit_per_objective: int | None = Field(None, ge=1, le=MAX_PAIRS_LIMIT,
                                            description="probe pairs per objective (None: all)")
    inputs: InputsURI | None = Field(None, description="set by the API: .npz of neuron scores/means")
    helpful_checkpoint: CheckpointId | None = Field(None, description="set by the API for C: the helpful-only RM")
    harmless_checkpoint: CheckpointId | None = Field(None, description="set by the API for C: the harmless-only RM")
    include_frozen: bool = Field(False, description="A-C: also select from layers frozen in training (by default "
                                                    "their neurons, identical in every RM, are left out)")
    frozen_layers: list[Annotated[int, Field(ge=0, lt=MAX_LAYERS)]] | None = Field(
        None, max_length=MAX_LAYERS, description="always set by the API (a request's value is replaced): for A-C the "
                                                 "layers frozen in training of the checkpoints selected from "
                                                 "(None: none)")


PARAMS_BY_KIND: dict[JobKind, type[Params]] = {
    JobKind.score: ScoreParams,
    JobKind.train: TrainParams,
    JobKind.evaluate: EvaluateParams,
    JobKind.capture: CaptureParams,
    JobKind.ablate: AblateParams,
}


class JobSpec(BaseModel):
    """Everything a worker needs: no path of the API's machine, only the store's URL and keys in it."""

    job_id: str
    kind: JobKind
    params: SerializeAsAny[Params]
    result_key: str
    code_version: str = Field(..., description="hash of the worker code the result key was made for")
    store_url: str = Field(..., description="fsspec URL of the artifact store (a directory, s3://…, memory://…)")
    output: ArtifactKey = Field(..., description="store prefix for progress, manifest and result tables")
    device: Device = Device.auto

    @model_validator(mode="before")
    @classmethod
    def _typed_params(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("params"), dict):
            kind = JobKind(data["kind"])
            data = {**data, "params": PARAMS_BY_KIND[kind].model_validate(data["params"])}
        return data

    def model_post_init(self, __context: Any) -> None:
        expected = PARAMS_BY_KIND[self.kind]
        if type(self.params) is not expected:
            raise ValueError(f"{self.kind} job needs {expected.__name__}, got {type(self.params).__name__}")

    def typed(self, params_type: type[P]) -> P:
        """The params as the kind's model (the worker of a kind asks for its own)."""
        if not isinstance(self.params, params_type):
            raise TypeError(f"{self.kind} job carries {type(self.params).__name__}, not {params_type.__name__}")
        return self.params


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def result_key(kind: JobKind | str, params: dict[str, Any], data_revision: str, code_version: str) -> str:
    """Hash of everything that produced a result (kind, params, data, worker code): same inputs, same key."""
    payload = canonical_json({"kind": str(kind), "params": params, "data": data_revision, "code": code_version})
    return hashlib.sha256(payload.encode()).hexdigest()[:32]
