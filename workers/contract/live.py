"""The live-toggle protocol: typed messages between the API and a warm live-ablation worker.

The worker (`python -m workers.live`) reads one `LiveSessionConfig` line and answers `LiveReady` once its
session is set up (or `LiveError` without an id). Then, in any order and concurrently:

* `LiveEstimateRequest` (`"estimate": true`) → `LiveEstimateAnswer`, answered at once from the estimator table
  (loaded from the artifact store when an earlier session built it, even before the model is loaded; else
  built right after set-up, and the request waits for it);
* `LiveStreamRequest` (`"stream": true`) → one `LiveRound` per round of probe pairs (a running Δ with its
  CI), for the set and then its layer-matched random control, then `LiveStreamEnd`;
* `LiveCancel` (`"cancel": id`) → the stream with that id stops before its next batch and ends with
  `LiveStreamEnd(end="cancelled")`;
* `LiveToggleRequest` → `LiveAnswer` (the whole exact answer at once).

Requests carry an `id` that their answers (and errors) echo. Exact work runs one request at a time, in
arrival order, on the worker's compute thread; estimates and cancels are answered by the reading thread so
they never wait behind it. Every line is one of these models as JSON; nothing else is on the wire.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import ConfigDict, Field

from workers.contract.artifacts import ArtifactURI, Message
from workers.contract.jobs import CheckpointId, DatasetRef, Finite, NeuronIndexSet
from workers.contract.vocab import AblationMode, Device, HookPoint, LivePath, Split

DEFAULT_PROBE_PAIRS = 64
MAX_PROBE_PAIRS = 512
ROUND_PAIRS = 8
"""Probe pairs per objective in one streamed round: with two objectives, 32 texts, about 0.3 s of exact work
for an all-layer MiniLM set on 2 CPU cores."""

RequestId = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$",
                                 description="chosen by the caller, echoed by every answer")]


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

    id: RequestId | None = None
    neurons: NeuronIndexSet
    mode: AblationMode = AblationMode.zero
    factor: Finite = 0.0
    path: LivePath = LivePath.fast


class LiveEstimateRequest(Message):
    """The first-order estimate of a toggle instead of its exact answer (milliseconds once the session's
    estimator is built; see workers/ablation/estimate.py)."""

    model_config = ConfigDict(allow_inf_nan=False)

    estimate: Literal[True] = True
    id: RequestId | None = None
    neurons: NeuronIndexSet
    mode: AblationMode = AblationMode.zero
    factor: Finite = 0.0
    control: bool = Field(False, description="also estimate the set's layer-matched random control")


class LiveStreamRequest(Message):
    """The exact answer of a toggle, streamed round by round, then (with `control`) the same for its
    layer-matched random control (same size per layer, seeded by the set, disjoint from it)."""

    model_config = ConfigDict(allow_inf_nan=False)

    stream: Literal[True] = True
    id: RequestId
    neurons: NeuronIndexSet
    mode: AblationMode = AblationMode.zero
    factor: Finite = 0.0
    path: LivePath = LivePath.fast
    control: bool = True


class LiveCancel(Message):
    cancel: RequestId


class LiveEstimateObjective(Message):
    n_pairs: int
    baseline_accuracy: float
    baseline_mean_margin: float
    delta_margin: float = Field(..., description="estimated Δ mean margin (chosen − rejected reward)")
    delta_accuracy: float = Field(..., description="estimated Δ accuracy (fraction of pairs)")


class LiveEstimateAnswer(Message):
    estimate: Literal[True] = True
    id: str | None = None
    objectives: dict[str, LiveEstimateObjective]
    control: dict[str, LiveEstimateObjective] | None = Field(None, description="the layer-matched random control's")
    control_neurons: NeuronIndexSet | None = None
    cached: bool = Field(False, description="the estimator table came from the artifact store (built earlier)")
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
    id: str | None = None
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
    estimator_cached: bool = Field(False, description="the estimator table was found in the artifact store")


class LiveRunning(Message):
    """The exact Δ over the pairs done so far (bootstrap CI over those pairs; None before two are done)."""

    n_done: int
    n_total: int
    delta_margin: float | None
    delta_margin_ci: list[float] | None
    delta_accuracy: float | None
    delta_accuracy_ci: list[float] | None
    flips_to_wrong: int
    flips_to_right: int


class LiveRound(Message):
    id: str
    phase: Literal["set", "control"]
    round: int
    n_rounds: int
    seconds: float = Field(..., description="since the worker took the request up (its queue wait excluded)")
    queued_s: float = Field(..., description="how long the request waited behind earlier exact work")
    objectives: dict[str, LiveRunning]
    final: bool
    path: str
    answer: LiveAnswer | None = Field(None, description="on a phase's final round: the whole exact answer")
    control_neurons: NeuronIndexSet | None = None


class LiveStreamEnd(Message):
    id: str
    end: Literal["done", "cancelled"]
    rounds_computed: int = Field(..., description="rounds of exact work this request actually ran (both phases)")
    seconds: float


class LiveError(Message):
    id: str | None = None
    error: str
