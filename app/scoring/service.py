"""Scoring jobs: validation at submission, and the launch form's params."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from app.core.checks import check_checkpoint, check_model, load_checked_dataset, resolve_dataset
from app.core.db import Checkpoint, Database
from app.core.errors import Invalid
from workers.contract.jobs import ScoreParams
from workers.contract.vocab import Split

if TYPE_CHECKING:
    from app.core.services import Services


def prepare_score(services: Services, params: ScoreParams) -> str:
    """Check a score job's inputs and resolve its dataset; returns the data revision of its result key."""
    params.model = check_model(params.model, roots=services.settings.data_roots)
    ck_rev = ""
    if params.checkpoint:
        ck_rev = check_checkpoint(services, params.checkpoint).id
    params.dataset = resolve_dataset(services, params.dataset)
    _, revision = load_checked_dataset(services, params.dataset)
    return f"{revision}:{ck_rev}"


def form_params(*, model: str, checkpoint: str, source: str, split: Split, limit: str,
                max_length: int) -> dict[str, Any]:
    """The launch form's fields as score params, validated by the job service (an empty limit: every pair)."""
    dataset: dict[str, Any] = {"source": source, "split": split}
    if limit.strip():
        try:
            dataset["limit"] = int(limit)
        except ValueError as exc:
            raise Invalid(f"pairs per objective must be a whole number, got {limit!r}") from exc
    return {"model": model, "checkpoint": checkpoint or None, "dataset": dataset, "max_length": max_length}


def recent_checkpoints(*, db: Database) -> list[Checkpoint]:
    """Every checkpoint, newest first (the launch form's choices)."""
    with db.session() as s:
        return list(s.scalars(select(Checkpoint).order_by(Checkpoint.created_at.desc())))
