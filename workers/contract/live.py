"""The live-toggle protocol: typed messages between the API and a warm live-ablation worker.

The worker (`python -m workers.live`) reads one `LiveSessionConfig` line, answers `LiveReady` (or
`LiveError`), then answers each `LiveToggleRequest` line with a `LiveAnswer` and each `LiveEstimateRequest`
(marked `"estimate": true`) with a `LiveEstimateAnswer` (or `LiveError`). Every line is one of these models as
JSON; nothing else is on the wire.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from workers.contract.artifacts import ArtifactURI, Message
from workers.contract.jobs import CheckpointId, DatasetRef, Finite, NeuronIndexSet
from workers.contract.vocab import AblationMode, Device, HookPoint, LivePath, Split

DEFAULT_PROBE_PAIRS = 64
MAX_PROBE_PAIRS = 512


def default_probe(limit: int = DEFAULT_PROBE_PAIRS) -> DatasetRef:
    """The probe set of live toggles: the bundled test split, `limit` pairs per objective."""
    return DatasetRef(source="bundled", split=Split.test, limit=limit)


class LiveSessionConfig(Message):
    """First line: which RM to keep warm, on which probe pairs."""

    model_config = ConfigDict(allow_inf_nan=False)

    store_url: str = Field(..., description="fsspec URL of the artifact store holding the checkpoint")
    checkpoint: CheckpointId
    probe: DatasetRef = Field(default_factory=default_probe)
    max_length: int = Field(128, ge=8, le=8192)
    means: ArtifactURI | None = Field(None, description=".npz with array 'means' [layers, neurons] for mode 'mean'")
    hook: HookPoint = HookPoint.down_proj_input
    device: Device = Device.auto


class LiveToggleRequest(Message):
    model_config = ConfigDict(allow_inf_nan=False)

    neurons: NeuronIndexSet
    mode: AblationMode = AblationMode.zero
    factor: Finite = 0.0
    path: LivePath = LivePath.fast


class LiveEstimateRequest(Message):
    """The first-order estimate of a toggle instead of its exact answer (milliseconds once the session's
    estimator is built; see workers/ablation/estimate.py)."""

    model_config = ConfigDict(allow_inf_nan=False)

    estimate: Literal[True] = True
    neurons: NeuronIndexSet
    mode: AblationMode = AblationMode.zero
    factor: Finite = 0.0


class LiveEstimateObjective(Message):
    n_pairs: int
    baseline_accuracy: float
    baseline_mean_margin: float
    delta_margin: float = Field(..., description="estimated Δ mean margin (chosen − rejected reward)")
    delta_accuracy: float = Field(..., description="estimated Δ accuracy (fraction of pairs)")


class LiveEstimateAnswer(Message):
    estimate: Literal[True] = True
    objectives: dict[str, LiveEstimateObjective]
    seconds: float = Field(..., description="time to answer, the estimator's build included when it ran")
    build_s: float = Field(..., description="how long building the session's estimator took (once)")
    built_now: bool = Field(..., description="whether this request paid for the build")


class LiveSummary(Message):
    mean_chosen: float
    mean_rejected: float
    mean_margin: float
    accuracy: float


class LiveDelta(Message):
    chosen: float
    rejected: float
    margin: float
    accuracy: float


class LiveFlips(Message):
    to_wrong: int
    to_right: int


class LiveObjectiveAnswer(Message):
    n_pairs: int
    baseline: LiveSummary
    ablated: LiveSummary
    delta: LiveDelta
    flips: LiveFlips


class LiveAblationInfo(Message):
    key: str
    mode: AblationMode
    hook_point: HookPoint
    n_neurons: int
    layers: dict[str, int]
    factor: float | None = None


class LiveTiming(Message):
    seconds: float
    n_ablations_in_call: int
    path: str = Field(..., description="cached_prefix, full, answer_cache or identity")
    first_layer: int | None
    recomputed_layers: int


class LiveAnswer(Message):
    ablation: LiveAblationInfo
    objectives: dict[str, LiveObjectiveAnswer]
    timing: LiveTiming


class LiveReady(Message):
    """The session's answer to its config: what it holds and how long set-up took."""

    ready: bool = True
    model: str
    family: str | None
    fast_path: bool
    n_layers: int
    n_neurons: int
    n_texts: int
    n_tokens: int
    n_batches: int
    objectives: dict[str, int]
    prefix_cache_layers: list[int]
    prefix_cache_mb: float
    answer_cache_entries: int
    setup_s: float
    fallback_reason: str | None
    numerics_gap: float | None


class LiveError(Message):
    error: str
