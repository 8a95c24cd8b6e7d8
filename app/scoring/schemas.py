"""Pydantic shapes of scoring results at the HTTP edge."""

from __future__ import annotations

from pydantic import BaseModel

from workers.contract.vocab import Objective, Side


class RewardOut(BaseModel):
    """One scored text."""

    pair_id: str
    item_id: str | None
    objective: Objective | None
    subset: str | None
    split: str | None
    side: Side
    n_tokens: int | None
    reward: float


class RewardSummaryOut(BaseModel):
    """One objective and subset of a scoring result."""

    objective: Objective | None
    subset: str | None
    n_pairs: int
    accuracy: float
    mean_chosen: float | None
    mean_rejected: float | None


class RewardsOut(BaseModel):
    result_key: str
    summary: list[RewardSummaryOut]
    rows: list[RewardOut]
