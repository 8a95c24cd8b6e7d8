"""One row model per DuckDB result table: the worker writes these columns, the API reads them.

`tests/contract/test_results_schema.py` holds each model against its table in `migrations/duckdb/`
(names, order, types, nullability), so a column cannot be added on one side only. `result_key` is
not a field: the API adds it at ingest.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict


class ResultRow(BaseModel):
    """Base of every result row. `TABLE` names its DuckDB table."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    TABLE: ClassVar[str]

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        return tuple(cls.model_fields)

    @classmethod
    def rows(cls, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validate records into this table's columns, in order (unknown keys are an error)."""
        return [cls.model_validate(r).model_dump() for r in records]


class RewardRow(ResultRow):
    TABLE: ClassVar[str] = "rewards"
    model: str | None
    checkpoint: str | None
    pair_id: str
    item_id: str | None
    objective: str | None
    subset: str | None
    split: str | None
    side: str
    n_chars: int | None
    n_tokens: int | None
    reward: float


class TrainingHistoryRow(ResultRow):
    TABLE: ClassVar[str] = "training_history"
    checkpoint: str | None
    step: int | None
    epoch: float | None
    train_loss: float | None
    train_acc: float | None
    eval_loss: float | None
    eval_acc: float | None


class EvalItemRow(ResultRow):
    TABLE: ClassVar[str] = "eval_items"
    checkpoint: str
    base_model: str | None
    regime: str | None
    seed: int | None
    item_id: str
    objective: str | None
    subset: str | None
    correct: bool
    margin: float | None


class EvalSubsetRow(ResultRow):
    TABLE: ClassVar[str] = "eval_subsets"
    checkpoint: str
    base_model: str | None
    regime: str | None
    seed: int | None
    subset: str
    subset_type: str | None
    n_items: int | None
    accuracy: float | None
    ci_lo: float | None
    ci_hi: float | None
    mean_margin_correct: float | None
    length_longer: float | None
    length_shorter: float | None
    ece: float | None
    brier: float | None
    nll: float | None


class EvalReliabilityRow(ResultRow):
    TABLE: ClassVar[str] = "eval_reliability"
    checkpoint: str
    scope: str
    bin_lo: float | None
    bin_hi: float | None
    count: int | None
    mean_confidence: float | None
    accuracy: float | None


class EvalTransferRow(ResultRow):
    TABLE: ClassVar[str] = "eval_transfer"
    base_model: str | None
    seed: int | None
    subset: str
    subset_type: str | None
    n_items: int | None
    transferability: float | None
    jaccard_helpful: float | None
    jaccard_harmless: float | None


class NeuronStatRow(ResultRow):
    TABLE: ClassVar[str] = "neuron_stats"
    checkpoint: str
    base_model: str | None
    regime: str | None
    hook: str | None
    objective: str
    side: str
    layer: int
    neuron: int
    mean: float | None
    mean_sq_change: float | None
    frac_pos: float | None
    var: float | None
    max: float | None
    n_tokens: int | None


class NeuronExampleRow(ResultRow):
    TABLE: ClassVar[str] = "neuron_examples"
    checkpoint: str
    objective: str
    side: str
    layer: int
    neuron: int
    rank: int
    pair_id: str | None
    token_pos: int | None
    value: float | None
    text_before: str | None
    token: str | None
    text_after: str | None


class AblationResultRow(ResultRow):
    TABLE: ClassVar[str] = "ablation_results"
    checkpoint: str
    regime: str | None
    experiment: str
    condition: str
    p: float | None
    seed: int | None
    grp: str
    group_type: str | None
    n_items: int | None
    n_neurons: int | None
    n_requested: int | None
    tied: bool | None
    acc0: float | None
    acc: float | None
    delta: float | None
    ci_lo: float | None
    ci_hi: float | None
    drop: float | None
    normalised: float | None
    delta_per_neuron: float | None
    mean_margin_delta: float | None
    n_flipped: int | None
    random_delta_mean: float | None
    random_delta_std: float | None
    excess: float | None
    excess_ci_lo: float | None
    excess_ci_hi: float | None
    random_delta_per_neuron: float | None
    transfer0: float | None
    transfer: float | None
    transfer_delta: float | None
    random_transfer_mean: float | None
    frac_early: float | None
    frac_middle: float | None
    frac_late: float | None


class AblationFlipRow(ResultRow):
    TABLE: ClassVar[str] = "ablation_flips"
    checkpoint: str
    experiment: str
    condition: str
    p: float | None
    item_id: str
    subset: str | None
    objective: str | None
    before: bool | None
    after: bool | None
    margin_before: float | None
    margin_after: float | None


ROW_MODELS: tuple[type[ResultRow], ...] = (
    RewardRow, TrainingHistoryRow, EvalItemRow, EvalSubsetRow, EvalReliabilityRow, EvalTransferRow,
    NeuronStatRow, NeuronExampleRow, AblationResultRow, AblationFlipRow,
)
ROW_MODEL_BY_TABLE: dict[str, type[ResultRow]] = {m.TABLE: m for m in ROW_MODELS}
