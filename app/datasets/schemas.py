"""Pydantic shapes of uploaded datasets at the HTTP edge."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from workers.contract.vocab import DatasetFormat, Objective


class DatasetOut(BaseModel):
    id: str = Field(..., description="content revision of the file")
    name: str
    format: DatasetFormat
    n_pairs: int
    objectives: list[Objective]
    subsets: list[str]
    source: str = Field(..., description="how a job's `dataset.source` names it: 'dataset:<id>'")

    @classmethod
    def of(cls, ds: Any) -> DatasetOut:
        return cls(id=ds.id, name=ds.name, format=ds.format, n_pairs=ds.n_pairs, objectives=ds.objectives,
                   subsets=ds.subsets, source=f"dataset:{ds.id}")
