"""Pydantic shapes of datasets at the HTTP edge."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from workers.contract.vocab import DatasetFormat, Objective


class DatasetOut(BaseModel):
    id: str = Field(..., description="content revision of the file")
    name: str
    format: DatasetFormat
    n_pairs: int
    objectives: list[Objective]
    subsets: list[str]
    source: str = Field(..., description="how a job's `dataset.source` names it: 'dataset:<id>'")
    created_by: str = Field("local", description="who stored it first")

    @classmethod
    def of(cls, ds: Any) -> DatasetOut:
        return cls(id=ds.id, name=ds.name, format=ds.format, n_pairs=ds.n_pairs, objectives=ds.objectives,
                   subsets=ds.subsets, source=f"dataset:{ds.id}", created_by=ds.created_by or "local")


class DataRootOut(BaseModel):
    """One directory an operator allows datasets to be imported from, and the dataset files in it."""

    root: str = Field(..., description="its index in TENSION_DATA_ROOTS: what `root` names in an import")
    name: str = Field(..., description="the directory's name (also accepted as `root` when unique)")
    files: list[str] = Field(..., description="relative paths of the dataset files it holds")
    truncated: bool = Field(..., description="true when more files exist than are listed")


class DatasetFromRoot(BaseModel):
    """`POST /api/datasets/from-root`: import a file of a data root as if it had been uploaded."""

    model_config = ConfigDict(extra="forbid")

    root: str = Field(..., min_length=1, max_length=255, description="a data root's index or directory name")
    path: str = Field(..., min_length=1, max_length=1000, description="relative path of the file in the root")
    format: DatasetFormat = DatasetFormat.auto
    name: str | None = Field(None, max_length=200, description="a name for the list (default: root/path)")
    objective: Objective | None = Field(None, description="the objective of every pair, when the file does not say")
