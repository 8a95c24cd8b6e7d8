"""Response and form models of the reward-model lab (`/api/lab/...`, `/lab/...`).

Stored rows reuse the contract's row models (`workers.contract.results`), plus the `result_key` the API adds
at ingest. Regime and subset-type fields stay plain strings on the way out: a foreign checkpoint may carry a
regime outside the vocabulary and must still be shown, never turned into a 500.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.db import Job
from workers.contract.results import EvalSubsetRow, EvalTransferRow
from workers.contract.vocab import Regime


class Out(BaseModel):
    """Base of every lab response model."""

    model_config = ConfigDict(protected_namespaces=())


# -- checkpoints -------------------------------------------------------------------------------------------


class OverallAccuracy(Out):
    """A checkpoint's accuracy in one evaluation: per subset type, their mean (the headline: one number that
    weighs helpful and harmless alike), and the item-weighted overall (subset 'all', with its CI)."""

    result_key: str
    checkpoint: str
    accuracy: float | None = Field(None, description="item-weighted over every test item: favours the larger type")
    ci_lo: float | None
    ci_hi: float | None
    n_items: int | None
    by_type: dict[str, float] = Field(default_factory=dict, description="accuracy per subset type")
    macro_accuracy: float | None = Field(None, description="mean of the per-type accuracies (the headline)")


class CheckpointOut(Out):
    id: str
    base_model: str
    regime: str
    seed: int
    preset: str
    job_id: str | None
    metrics: dict[str, int | float] = Field(description="the headline numbers of the training run")
    created_at: str | None


class CheckpointListItem(CheckpointOut):
    test: OverallAccuracy | None = Field(description="overall accuracy of the newest evaluation covering it")


class CheckpointList(Out):
    checkpoints: list[CheckpointListItem]


class EvaluationRunOut(Out):
    result_key: str
    job_id: str | None
    checkpoints: list[str]
    split: str | None
    limit: int | None
    source: str | None
    created_at: str | None
    summary: dict[str, Any]


class CheckpointDetail(CheckpointOut):
    meta: dict[str, Any] = Field(description="the training job's manifest summary")
    evaluations: list[EvaluationRunOut]


class HistoryPoint(Out):
    step: int | None
    epoch: float | None
    train_loss: float | None
    train_acc: float | None
    eval_loss: float | None
    eval_acc: float | None


class History(Out):
    checkpoint: str
    rows: list[HistoryPoint]


# -- one evaluation ----------------------------------------------------------------------------------------


class SubsetRowOut(EvalSubsetRow):
    result_key: str


class TransferRowOut(EvalTransferRow):
    result_key: str


class SeedSummaryRow(Out):
    """Mean ± sample std over seeds, per regime and subset."""

    base_model: str | None
    regime: str | None
    subset: str
    subset_type: str | None
    n_seeds: int
    mean_accuracy: float | None
    std_accuracy: float | None
    ci_lo: float | None
    ci_hi: float | None
    length_longer: float | None
    length_shorter: float | None
    ece: float | None


class ReliabilityBin(Out):
    scope: str
    bin_lo: float | None
    bin_hi: float | None
    count: int | None
    mean_confidence: float | None
    accuracy: float | None


class EvaluationList(Out):
    evaluations: list[EvaluationRunOut]


class EvaluationDetail(EvaluationRunOut):
    subsets: list[SubsetRowOut]
    seed_summary: list[SeedSummaryRow]
    reliability: dict[str, list[ReliabilityBin]] = Field(description="bins per checkpoint id")
    transfer: list[TransferRowOut]


class FlipItem(Out):
    item_id: str
    subset: str | None
    correct_a: bool
    correct_b: bool
    margin_a: float | None
    margin_b: float | None


class FlipCounts(Out):
    n_flipped: int
    a_only: int = Field(description="items checkpoint a gets right and b wrong")
    b_only: int = Field(description="items checkpoint b gets right and a wrong")


class Flips(FlipCounts):
    result_key: str
    a: str
    b: str
    items: list[FlipItem]


# -- the three regimes side by side ------------------------------------------------------------------------


class RegimeAccuracy(Out):
    """One regime on one subset: mean over seeds with its sample std; the bootstrap CI for one seed."""

    n_seeds: int
    seeds: list[int]
    mean: float | None
    std: float | None
    ci_lo: float | None
    ci_hi: float | None
    n_items: int | None
    length_longer: float | None
    length_shorter: float | None


class SubsetComparison(Out):
    subset: str
    subset_type: str | None
    regimes: dict[str, RegimeAccuracy]


class TypeAccuracy(Out):
    mean: float | None
    std: float | None
    n_seeds: int
    n_subsets: int


class TypeComparison(Out):
    subset_type: str
    regimes: dict[str, TypeAccuracy]


class TransferComparison(Out):
    subset: str
    subset_type: str | None
    n_seeds: int
    n_items: int | None
    transferability: float | None
    transferability_std: float | None
    jaccard_helpful: float | None
    jaccard_helpful_std: float | None
    jaccard_harmless: float | None
    jaccard_harmless_std: float | None


class CheckpointReliability(Out):
    checkpoint: str
    regime: str
    seed: int
    bins: list[ReliabilityBin]


class Calibration(Out):
    checkpoint: str
    regime: str
    seed: int
    accuracy: float | None
    ece: float | None
    brier: float | None
    nll: float | None


class FlipBlock(Out):
    """Items whose verdict flips between the mixed RM and one single RM of the same seed."""

    seed: int
    single: str
    mixed_checkpoint: str
    single_checkpoint: str
    n_flipped: int
    mixed_right: int
    single_right: int
    rows: list[FlipItem]


class Comparison(Out):
    base_model: str
    seed: int | None
    result_key: str | None
    seeds: list[int]
    checkpoints: dict[str, list[CheckpointOut]] = Field(description="checkpoints per regime")
    evaluated: list[CheckpointOut]
    subsets: list[SubsetComparison] = []
    types: list[TypeComparison] = []
    transfer: list[TransferComparison] = []
    reliability: list[CheckpointReliability] = []
    calibration: list[Calibration] = []
    flips: list[FlipBlock] = []


# -- launch forms ------------------------------------------------------------------------------------------

ALL_REGIMES = "all"
"""The train form's choice that launches one job per regime."""


class LaunchedJob(Out):
    """One line of the launch answer: the queued (or cached) job, or why it was refused."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    regime: Regime | None
    job: Job | None
    cached: bool
    error: str | None
