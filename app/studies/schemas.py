"""Request and response models of studies (`/api/studies`, `/studies/...`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.types import UtcDateTime
from workers.contract.jobs import MAX_SEED, ModelName

StudyPresetName = Literal["smoke", "demo", "paper"]
StudyStatus = Literal["running", "succeeded", "failed", "cancelled"]


class StudyCreate(BaseModel):
    """Start (or find) a study: a preset, optionally another model and other seeds."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    preset: StudyPresetName = "demo"
    model: ModelName | None = Field(None, description="a bundled model name or a Hugging Face id (default: preset's)")
    seeds: list[Annotated[int, Field(ge=0, le=MAX_SEED, strict=True)]] | None = Field(None, min_length=1, max_length=10,
                                    description="training seeds (default: the preset's)")


class StudyResults(BaseModel):
    """What a study has produced so far, by role: the report reads everything through this."""

    model_config = ConfigDict(protected_namespaces=())

    model: str
    seeds: list[int]
    checkpoints: dict[str, dict[str, str]] = Field(default_factory=dict, description="regime -> seed -> checkpoint id")
    evaluation: str | None = Field(None, description="result key of the evaluation of every checkpoint")
    captures: dict[str, str] = Field(default_factory=dict, description="'regime/seed' -> capture result key")
    ablations: dict[str, str] = Field(default_factory=dict, description="'experiment/regime/seed' -> ablate result key")


class StageOut(BaseModel):
    """One stage of the pipeline and the jobs it ran."""

    name: str
    title: str
    status: Literal["waiting", "running", "succeeded", "failed", "cancelled"]
    progress: float
    jobs: list[dict[str, Any]] = Field(default_factory=list, description="label, job id, status, progress, message")
    wall_s: float | None = None


class StudyOut(BaseModel):
    """A study: its key (a hash of everything that defines it, the code included), stages and results."""

    model_config = ConfigDict(protected_namespaces=())

    key: str
    preset: str
    model: str
    seeds: list[int]
    status: StudyStatus
    stage: str
    error: str | None
    spec: dict[str, Any]
    stages: list[StageOut]
    results: StudyResults
    created_by: str
    created_at: UtcDateTime
    finished_at: UtcDateTime | None
    wall_s: float | None = Field(None, description="from creation to the end of the last stage (or now)")
    url: str



class StudyPresetOut(BaseModel):
    """A study preset's values (app/studies/presets.py)."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    description: str
    model: str
    train_preset: str
    seeds: list[int]
    train_limit: int | None
    eval_limit: int | None
    capture_limit: int | None
    ablate_limit: int | None
    max_length: int
    dose_percents: list[float]
    random_seeds: list[int]
    expected_minutes: float
    hardware: str
    train_overrides: dict[str, Any]
