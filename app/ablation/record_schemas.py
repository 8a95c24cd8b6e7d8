"""Models of recorded live toggles (`live_toggles`) and of the agreement of their estimate with the exact shift.

A live toggle answers twice: a first-order ESTIMATE at once, then the EXACT shift, computed in rounds of probe
pairs. `ToggleRecordIn` is what the live path records once a toggle is finished (or cancelled, or superseded
by the next toggle); `AgreementOut` is what `/api/live/agreement` and the agreement page show.
Δ accuracies are fractions of pairs (0.01 = one percentage point), Δ margins are in reward units.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from app.core.types import UtcDateTime
from workers.contract.jobs import MAX_LAYERS, Finite
from workers.contract.live import MAX_PROBE_PAIRS
from workers.contract.vocab import AblationMode, Objective, Word


class ToggleState(Word):
    """How a recorded toggle ended: its exact rounds all ran, it was cancelled, or the next toggle replaced it."""

    done = "done"
    cancelled = "cancelled"
    superseded = "superseded"


class SizeBucket(Word):
    """Set sizes the agreement is broken down by (the estimate is additive over neurons: larger sets stray more)."""

    lt10 = "<10"
    lt100 = "10-99"
    lt1000 = "100-999"
    ge1000 = "≥1000"


class LayerSpan(Word):
    """Whether a set lies in one layer or spans several (later layers then see earlier ones' change)."""

    one = "1 layer"
    several = "several layers"


MAX_WHAT = 1000
"""Longest description of a set that is kept."""
MAX_MS = 1e9
Hex32 = Annotated[str, Field(min_length=32, max_length=32, pattern=r"^[0-9a-f]{32}$")]
Fraction = Annotated[Finite, Field(ge=-1.0, le=1.0)]
Milliseconds = Annotated[Finite, Field(ge=0, le=MAX_MS)]


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, protected_namespaces=())


class EstimateShift(_Record):
    """The first-order estimate of one objective's shift."""

    delta_margin: Finite = Field(..., description="estimated Δ mean margin (chosen − rejected reward)")
    delta_accuracy: Fraction = Field(..., description="estimated Δ accuracy (fraction of pairs)")


def _interval(value: Any) -> Any:
    if value is not None and (not isinstance(value, list | tuple) or len(value) != 2):
        raise ValueError("an interval is [lo, hi]")
    return value


Interval = Annotated[tuple[Finite, Finite] | None, BeforeValidator(_interval)]


class ExactShift(_Record):
    """The exact shift of one objective on the pairs computed so far (all of them once the toggle is done)."""

    delta_margin: Finite = Field(..., description="exact Δ mean margin (chosen − rejected reward)")
    delta_accuracy: Fraction = Field(..., description="exact Δ accuracy (fraction of pairs)")
    delta_margin_ci: Interval = Field(None, description="[lo, hi] 95% interval of Δ mean margin")
    delta_accuracy_ci: Interval = Field(None, description="[lo, hi] 95% interval of Δ accuracy")
    n_pairs_done: int = Field(..., ge=0, le=MAX_PROBE_PAIRS, description="probe pairs computed exactly")
    n_pairs: int = Field(..., ge=0, le=MAX_PROBE_PAIRS, description="probe pairs of the objective")


class ToggleTimings(_Record):
    """Milliseconds, each None when that step did not happen."""

    estimate_ms: Milliseconds | None = Field(None, description="until the estimate was shown")
    first_round_ms: Milliseconds | None = Field(None, description="until the first exact round was shown")
    exact_ms: Milliseconds | None = Field(None, description="until the last exact round was shown")
    total_ms: Milliseconds | None = Field(None, description="the whole toggle, control set included")
    startup_ms: Milliseconds | None = Field(None, description="starting a live worker, when this toggle paid for it")


def _layer_keys(value: Any) -> Any:
    """{layer: count} with integer or string layer keys (JSON has only string keys)."""
    return {str(k): v for k, v in value.items()} if isinstance(value, dict) else value


class _ToggleRecord(_Record):
    """The fields of a recorded toggle."""

    id: Hex32 = Field(..., description="the toggle's id (32 hex); recording the same id again changes nothing")
    checkpoint: str = Field(..., min_length=1, max_length=64, description="checkpoint id")
    base_model: str = Field(..., min_length=1, max_length=256)
    regime: str | None = Field(None, max_length=16)
    what: str = Field(..., max_length=MAX_WHAT, description="the set in words, e.g. 'shared H ∩ R at top 10% by A, "
                                                            "seed 0' (shown escaped: it may hold dataset text)")
    set_key: str = Field(..., min_length=1, max_length=64, pattern=r"^[0-9a-f]+$",
                         description="hash of the canonical set, mode and factor (hex)")
    n_neurons: int = Field(..., ge=0)
    layers: Annotated[dict[str, Annotated[int, Field(ge=0)]], BeforeValidator(_layer_keys)] = Field(
        default_factory=dict, description="{layer: neurons in it}")
    mode: AblationMode
    factor: Finite = 0.0
    probe_limit: int = Field(..., ge=1, le=MAX_PROBE_PAIRS, description="probe pairs per objective")
    state: ToggleState
    estimate: dict[Objective, EstimateShift] = Field(default_factory=dict)
    exact: dict[Objective, ExactShift] | None = Field(None, description="None when no exact round finished")
    control_exact: dict[Objective, ExactShift] | None = Field(None, description="the exact shift of a layer-matched "
                                                                                "random set of the same size")
    timings: ToggleTimings = Field(default_factory=ToggleTimings)

    @field_validator("layers")
    @classmethod
    def _layers_are_layer_indices(cls, value: dict[str, int]) -> dict[str, int]:
        for k in value:
            if not k.isdigit() or int(k) >= MAX_LAYERS:
                raise ValueError(f"layer {k[:20]!r} is not a layer index")
        return value


class ToggleRecordIn(_ToggleRecord):
    """One finished live toggle, as the live path records it."""

    created_by: str | None = Field(None, max_length=64, description="who toggled (default: the current actor, "
                                                                     "which a background thread may not have)")


class ToggleRecordOut(_ToggleRecord):
    """A recorded toggle, with who recorded it and when."""

    created_by: str
    created_at: UtcDateTime


class AgreementStats(BaseModel):
    """Agreement of estimated and exact shifts over a group of points (one point per set and objective)."""

    n_sets: int = Field(..., description="distinct recorded toggles")
    n_points: int = Field(..., description="(toggle, objective) pairs compared")
    spearman_margin: float | None = Field(None, description="rank correlation of estimated and exact Δ margin "
                                                             "(None under 3 points or when either is constant)")
    spearman_accuracy: float | None = Field(None, description="the same for Δ accuracy")
    mae_margin: float | None = Field(None, description="mean |estimate − exact| of Δ margin")
    mae_accuracy: float | None = Field(None, description="mean |estimate − exact| of Δ accuracy (fraction)")
    mean_abs_exact_margin: float | None = Field(None, description="mean |exact Δ margin|: the scale of the MAE")
    mean_abs_exact_accuracy: float | None = Field(None, description="mean |exact Δ accuracy| (fraction)")


class AgreementRow(AgreementStats):
    """One line of the agreement table: a group of points and how well the estimate did on it."""

    group: str = Field(..., description="'all', an objective, a size bucket or a layer span")
    kind: str = Field(..., description="overall, objective, size or layers")


class AgreementPoint(BaseModel):
    """One (toggle, objective): what the calibration plots show."""

    id: str
    checkpoint: str
    what: str
    objective: Objective
    n_neurons: int
    n_layers: int
    estimate_margin: float
    exact_margin: float
    estimate_accuracy: float
    exact_accuracy: float
    exact_margin_ci: tuple[float, float] | None = None
    exact_accuracy_ci: tuple[float, float] | None = None


class AgreementWorst(BaseModel):
    """A set whose estimate strayed most from its exact shift (its worst objective)."""

    id: str
    checkpoint: str
    regime: str | None
    what: str
    n_neurons: int
    layers: dict[str, int]
    mode: AblationMode
    factor: float
    objective: Objective
    estimate_margin: float
    exact_margin: float
    error_margin: float = Field(..., description="estimate − exact Δ margin")
    control_margin: float | None = Field(None, description="exact Δ margin of the layer-matched random control")
    created_at: UtcDateTime


class AgreementOut(BaseModel):
    """How well the first-order estimate of live toggles predicted their exact shift, over every finished set."""

    checkpoint: str | None = Field(None, description="the checkpoint filter, if any")
    n_recorded: int = Field(..., description="toggles recorded (every state)")
    excluded: dict[str, int] = Field(default_factory=dict, description="toggles left out, by reason: cancelled, "
                                                                       "superseded, no exact answer, empty set")
    truncated: bool = Field(False, description="only the newest toggles were read (see `limit`)")
    limit: int
    overall: AgreementRow
    by_objective: list[AgreementRow]
    by_size: list[AgreementRow]
    by_layers: list[AgreementRow]
    worst: list[AgreementWorst] = Field(default_factory=list, description="largest |estimate − exact| Δ margin, "
                                                                          "one line per set")
    points: list[AgreementPoint] = Field(default_factory=list)
    checkpoints: list[str] = Field(default_factory=list, description="checkpoints that have recorded toggles")
