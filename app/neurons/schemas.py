"""Pydantic shapes of the neuron domain at the HTTP edge: requests, responses and page view parameters.

Domain words are the contract's vocabulary enums, so an unknown statistic, hook, scope, regime, shared
mode or overlap part is a 422 naming the parameter. Floats that may be undefined (a Jaccard of two
empty sets, the threshold of an empty selection) are NaN in numpy and null in JSON.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from app.core.errors import Invalid
from workers.contract.vocab import HookPoint, OverlapPart, Regime, Scope, SharedMode, Stat

if TYPE_CHECKING:
    from app.core.db import NeuronSet


def _number(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return float(v.strip())
        except ValueError:
            raise ValueError(f"p must be a number, got {v!r}") from None
    return v


def _percent(v: Any) -> Any:
    v = _number(v)
    if isinstance(v, int | float) and not isinstance(v, bool) and not (math.isfinite(v) and 0 <= v <= 100):
        raise ValueError(f"p must be a percentage within [0, 100], got {v}")
    return v


def _finite_or_none(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


Percent = Annotated[float, BeforeValidator(_percent)]
"""A percentage p in [0, 100]; a text that is not a number or a value outside is refused naming p."""
MaybeFloat = Annotated[float | None, BeforeValidator(_finite_or_none)]
"""A float that may be undefined: NaN and ±inf become null."""

FROZEN_DESCRIPTION = ("layers frozen in training (the embeddings too): their neurons are the same in every RM "
                      "trained from this base model")
STAT_NAMES: dict[Stat, str] = {Stat.A: "magnitude (mean activation)",
                               Stat.C: "change (mean squared change from the base model)",
                               Stat.P: "probability (fraction of tokens > 0)"}
SHARED_MODE_NAMES: dict[SharedMode, str] = {SharedMode.intersection: "shared = H ∩ R",
                                            SharedMode.per_layer: "study's per-layer rule (parity)"}


class ScatterMode(StrEnum):
    """Which scores the dashboard's scatter plots against each other (a view word, not a domain word)."""

    single = "single"
    mixed = "mixed"


SCATTER_MODE_NAMES: dict[ScatterMode, str] = {
    ScatterMode.single: "helpful RM's score vs harmless RM's score (each on its own objective's data)",
    ScatterMode.mixed: "mixed RM's score on helpful data vs on harmless data"}


class SetOp(StrEnum):
    """Set algebra over stored neuron sets."""

    union = "union"
    intersection = "intersection"
    difference = "difference"


# -- view parameters (pages parse their query into these; errors become error pages) --------------------
class _View(BaseModel):
    model_config = ConfigDict(extra="ignore")

    @classmethod
    def parse(cls, **query: Any) -> Self:
        """The view of a page's query, or Invalid naming each bad parameter."""
        try:
            return cls(**query)
        except ValidationError as exc:
            parts = [f"{'.'.join(str(x) for x in e['loc'])}: {str(e['msg']).removeprefix('Value error, ')}"
                     for e in exc.errors()]
            raise Invalid("; ".join(parts)) from None


class DashboardView(_View):
    """The overlap dashboard's view: everything in its URL."""

    p: Percent = 10.0
    stat: Stat = Stat.A
    seed: int = 0
    shared: SharedMode = SharedMode.intersection
    hook: HookPoint = HookPoint.down_proj_input
    scatter: ScatterMode = ScatterMode.single
    include_frozen: bool = False


class NeuronView(_View):
    """The neuron page's view."""

    stat: Stat = Stat.A
    hook: HookPoint = HookPoint.down_proj_input


# -- responses ------------------------------------------------------------------------------------------
class CaptureOut(BaseModel):
    """One captured checkpoint at one hook."""

    checkpoint: str
    base_model: str | None
    regime: str | None
    hook: str | None
    n_layers: int
    n_neurons: int
    result_key: str | None
    seed: int
    frozen_layers: list[int] = Field(default_factory=list, description=FROZEN_DESCRIPTION)


class ScoresOut(BaseModel):
    """Scores S of one RM: [layers][neurons], or one layer's list when `layer` was asked for."""

    base_model: str
    checkpoint: str
    regime: str | None
    stat: Stat
    scope: Scope
    hook: HookPoint
    shape: list[int]
    layer: int | None = None
    scores: list[list[MaybeFloat]] | list[MaybeFloat]
    frozen_layers: list[int] = Field(default_factory=list, description=FROZEN_DESCRIPTION + " (this checkpoint)")


class SelectionOut(BaseModel):
    """One RM's top-p% selection: the count p% asks for, the count selected (ties included), θ."""

    requested: int
    selected: int
    tied: bool
    threshold: MaybeFloat


class JaccardOut(BaseModel):
    helpful_harmless: MaybeFloat
    mixed_helpful: MaybeFloat
    mixed_harmless: MaybeFloat


class SignificanceOut(BaseModel):
    """|H ∩ R| against two random sets of the same sizes (one-sided hypergeometric test)."""

    observed: int
    expected: MaybeFloat
    p_value: MaybeFloat


class LayerFractionsOut(BaseModel):
    """Share of a set in the early, middle and late thirds of depth (null for an empty set)."""

    early: MaybeFloat
    middle: MaybeFloat
    late: MaybeFloat


class VennOut(BaseModel):
    """Exclusive regions of H, R and M."""

    H_only: int
    R_only: int
    M_only: int
    HR_only: int
    HM_only: int
    RM_only: int
    HRM: int


class OverlapOut(BaseModel):
    """H, R, M top-p% sets of one base model and seed and how they overlap (no raw masks)."""

    base_model: str
    p: float
    stat: Stat
    seed: int
    hook: HookPoint
    shared_mode: SharedMode
    checkpoints: dict[Regime, str]
    selection: dict[Regime, SelectionOut]
    jaccard: JaccardOut
    three_way: MaybeFloat
    significance: SignificanceOut
    layer_fractions: dict[Regime, LayerFractionsOut]
    layer_counts: dict[OverlapPart, list[int]]
    sizes: dict[OverlapPart, int]
    venn: VennOut
    n_layers: int
    n_neurons: int
    frozen_layers: list[int] = Field(default_factory=list,
                                     description=FROZEN_DESCRIPTION + " (in any of the three RMs); left out of "
                                                                      "selection unless include_frozen")
    include_frozen: bool = Field(False, description="whether the frozen layers' neurons were selectable")
    n_selectable: int = Field(..., description="neurons each top-p% is taken over: all of them, or those of the "
                                               "layers not left out")


class NeuronSetSummary(BaseModel):
    """A stored neuron set without its neurons (listings)."""

    id: str
    name: str
    base_model: str
    size: int
    formula: dict[str, Any] = Field(description="how the set was defined (top_p, overlap_part or set algebra)"
                                                " and its shape")
    shape: list[int] | None
    created_at: str | None

    @classmethod
    def of(cls, ns: NeuronSet) -> Self:
        return cls(id=ns.id, name=ns.name, base_model=ns.base_model, size=ns.size, formula=ns.formula,
                   shape=ns.formula.get("shape"), created_at=ns.created_at.isoformat() if ns.created_at else None,
                   **cls._extra(ns))

    @classmethod
    def _extra(cls, ns: NeuronSet) -> dict[str, Any]:
        return {}


class NeuronSetOut(NeuronSetSummary):
    """A stored neuron set with its neurons, `{layer: [indices]}` (layer keys are strings in JSON)."""

    neurons: dict[str, list[int]]

    @classmethod
    def _extra(cls, ns: NeuronSet) -> dict[str, Any]:
        return {"neurons": {str(k): v for k, v in sorted(ns.neurons.items(), key=lambda kv: int(kv[0]))}}


# -- requests -------------------------------------------------------------------------------------------
class NeuronSetCreate(BaseModel):
    """Either a top-p% formula on one checkpoint, or one part of a base model's H/R/M overlap."""

    name: str = Field(..., min_length=1, max_length=256)
    checkpoint: str | None = None
    scope: Scope = Scope.own
    base_model: str | None = None
    part: OverlapPart | None = None
    p: Percent = 10.0
    stat: Stat = Stat.A
    seed: int = 0
    hook: HookPoint = HookPoint.down_proj_input
    shared: SharedMode = SharedMode.intersection
    include_frozen: bool = Field(False, description="also select from layers frozen in training (left out by "
                                                    "default)")


class NeuronSetCombine(BaseModel):
    name: str = Field(..., min_length=1, max_length=256)
    op: SetOp
    args: list[str] = Field(..., min_length=1)
