"""Request, response and view-parameter models of the ablation domain.

A live toggle is described by query parameters (GET: a look, allowed through read-only share links).
The pages' forms send empty fields for "not set" (e.g. `layer=` for all layers): a blank value means
the field's default. Domain words are vocab enums, so a bad value is a 422 naming the parameter.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticUseDefault

from workers.contract.jobs import MAX_LAYERS, MAX_NEURONS, MAX_SEED
from workers.contract.live import DEFAULT_PROBE_PAIRS, MAX_PROBE_PAIRS, LiveAnswer, LiveEstimateAnswer, LiveRound
from workers.contract.results import AblationFlipRow, AblationResultRow
from workers.contract.vocab import AblationMode, HookPoint, LivePath, OverlapPart, SharedMode, Stat
from workers.data.safe_json import check_depth


def _blank_is_default(value: Any) -> Any:
    if isinstance(value, str) and not value.strip():
        raise PydanticUseDefault()
    return value


def _shallow_json(value: str | None) -> str | None:
    """A neuron set as JSON text: refused here when nested too deep for the decoder (never a RecursionError)."""
    if value is not None:
        check_depth(value)
    return value


Blank = BeforeValidator(_blank_is_default)
MAX_NEURONS_QUERY = 4000
"""Longest `neurons` query value: percent-encoded it stays inside the server's 16 KiB request head."""
NeuronsJSON = AfterValidator(_shallow_json)
Layer = Annotated[int, Field(ge=0, lt=MAX_LAYERS, description="layer index")]
SliceLayer = Annotated[int, Field(gt=-MAX_LAYERS, lt=MAX_LAYERS, description="layer index (checked against the "
                                                                            "captured model: 404 outside it)")]
NeuronIndex = Annotated[int, Field(ge=0, lt=MAX_NEURONS, description="neuron index within its layer")]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]
Percent = Annotated[float, Blank, Field(ge=0, le=100, allow_inf_nan=False, description="top p% of all MLP neurons")]
Factor = Annotated[float, Blank, Field(ge=-1e6, le=1e6, allow_inf_nan=False, description="factor for mode 'scale'")]
ProbeLimit = Annotated[int, Blank, Field(ge=1, le=MAX_PROBE_PAIRS, description="probe pairs per objective")]
CheckpointId = Annotated[str, Field(min_length=1, max_length=64, description="checkpoint id")]


class _Query(BaseModel):
    model_config = ConfigDict(populate_by_name=True, allow_inf_nan=False)


class ToggleHow(_Query):
    """How the chosen neurons are switched off, and on how many probe pairs."""

    mode: Annotated[AblationMode, Blank] = AblationMode.zero
    factor: Factor = 0.0
    probe_limit: ProbeLimit = DEFAULT_PROBE_PAIRS


class ToggleWhich(_Query):
    """Which neurons: named directly, by a stored set, or by a part of the overlap dashboard (whose view
    is p, stat, seed, shared, hook, include_frozen: a part leaves out layers frozen in training unless
    include_frozen); `layer` keeps only that layer's slice."""

    neurons: Annotated[str | None, NeuronsJSON] = Field(
        None, max_length=MAX_NEURONS_QUERY, description='JSON {layer: [indices]}, e.g. {"3": [1, 2]}; larger sets '
                                                         "by name (set=) or as a part of the overlap (part=)")
    set_name: Annotated[str | None, Blank] = Field(None, alias="set", max_length=200, description="a neuron set")
    part: Annotated[OverlapPart | None, Blank] = None
    p: Percent = 10.0
    stat: Annotated[Stat, Blank] = Stat.A
    seed: Annotated[Seed, Blank] = 0
    shared: Annotated[SharedMode, Blank] = SharedMode.intersection
    layer: Annotated[SliceLayer | None, Blank] = None
    hook: Annotated[HookPoint, Blank] = HookPoint.down_proj_input
    include_frozen: Annotated[bool, Blank] = Field(False, description="a part: also select from layers frozen "
                                                                      "in training (left out by default)")


class ToggleQuery(ToggleWhich, ToggleHow):
    """`GET /api/live/{checkpoint}/toggle`."""

    path: Annotated[LivePath, Blank] = LivePath.fast


class LiveView(ToggleWhich, ToggleHow):
    """`GET /ui/live/{checkpoint}`: one toggle as a partial; `push` puts its state into the page URL."""

    push: Annotated[bool, Blank] = False


class LiveFormView(LiveView):
    """`GET /ui/live`: the same, with the checkpoint as a form field (the panels' target select)."""

    ck: CheckpointId


class DashboardPanelView(ToggleWhich, ToggleHow):
    """`GET /ui/ablation/panel`: the dashboard's view (p, stat, seed, shared, hook) and any toggle state."""

    base_model: str = Field(..., max_length=200)
    ck: Annotated[str | None, Blank] = Field(None, max_length=64)


class WarmView(ToggleHow):
    """`GET /ui/live/warm`: the dashboard's model, seed and selected RM, whose live workers to start."""

    base_model: str = Field(..., max_length=200)
    seed: Annotated[Seed, Blank] = 0
    hook: Annotated[HookPoint, Blank] = HookPoint.down_proj_input
    ck: Annotated[str | None, Blank] = Field(None, max_length=64)


class NeuronPanelView(ToggleHow):
    """`GET /ui/ablation/neuron-panel`: one neuron of a base model, and any toggle state."""

    model: str = Field(..., max_length=200)
    layer: Layer
    index: NeuronIndex
    hook: Annotated[HookPoint, Blank] = HookPoint.down_proj_input
    ck: Annotated[str | None, Blank] = Field(None, max_length=64)


class QueueForm(BaseModel):
    """`POST /ui/ablation/queue`: the exact full-test evaluation of a toggle."""

    model_config = ConfigDict(allow_inf_nan=False)

    checkpoint: CheckpointId
    neurons: Annotated[str, NeuronsJSON] = Field(..., max_length=100_000, description='JSON {layer: [indices]}')
    mode: Annotated[AblationMode, Blank] = AblationMode.zero
    factor: Factor = 0.0


ESTIMATE_CAVEAT = ("first-order estimate (activation × gradient of the margin, summed over the set): ranks sets "
                   "well, is least accurate for the strongest neurons and is coarse for accuracy; see "
                   "bench/results/estimate.md")


class LiveToggleAnswer(LiveAnswer):
    """A live worker's answer with what the API adds: the round trip it measured and the neurons toggled."""

    roundtrip_ms: float
    n_neurons: int
    neurons: dict[str, list[int]] = Field(..., description="{layer: [indices]} switched off")


class LiveEstimateOut(LiveEstimateAnswer):
    """A first-order estimate of a toggle (not the exact answer), with what the API adds."""

    roundtrip_ms: float
    n_neurons: int
    neurons: dict[str, list[int]] = Field(..., description="{layer: [indices]} the estimate is for")
    caveat: str = Field(ESTIMATE_CAVEAT, description="what the estimate is and where it fails")


class LiveRunOut(BaseModel):
    """A live run as it stands: its estimate (set and random control), the latest exact round of the set
    and of its control (a running Δ with 95% bootstrap CIs until `final`), and timings in ms since the
    request reached the API (every wait included: worker start-up, queue, estimator build)."""

    id: str
    state: str = Field(..., description="running | done | cancelled | superseded | abandoned | failed")
    version: int = Field(..., description="changes whenever the run does; poll with ?since=<version>")
    checkpoint: str
    n_neurons: int
    neurons: dict[str, list[int]]
    mode: str
    factor: float
    estimate: LiveEstimateAnswer | None
    estimate_caveat: str = ESTIMATE_CAVEAT
    exact: LiveRound | None = Field(None, description="the set's latest round")
    control: LiveRound | None = Field(None, description="the layer-matched random control's latest round")
    rounds_computed: int | None = Field(None, description="rounds of exact work the worker ran (set and control), "
                                                          "known once the run ended")
    ended: bool = Field(False, description="the worker confirmed the end (a stopped run's state changes at "
                                           "once; its worker stops before its next batch)")
    timings: dict[str, float | None]
    worker_was_ready: bool
    error: str | None = None
    estimate_error: str | None = None


class LiveSessionOut(BaseModel):
    """One warm live worker."""

    key: str = Field(..., description="checkpoint:probe pairs:hook")
    ready: bool
    startup_s: float | None = Field(None, description="spawn to ready (model load and prefix states)")
    rss_mb: float
    model: str | None


class AblationRunSummary(BaseModel):
    """One stored ablation result in the list."""

    result_key: str
    checkpoint: str
    regime: str | None
    experiment: str
    n_rows: int


class StoredAblationRow(AblationResultRow):
    result_key: str


class StoredFlipRow(AblationFlipRow):
    result_key: str


class AblationResult(BaseModel):
    """Every row of one ablation result and the items whose verdict it flipped."""

    result_key: str
    rows: list[StoredAblationRow]
    flips: list[StoredFlipRow]
