"""JSON routes of datasets: upload or import from a data root (validated on arrival), list, list the roots."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, UploadFile

from app.core.deps import DatabaseDep, SettingsDep
from app.datasets import roots, service
from app.datasets.schemas import DataRootOut, DatasetFromRoot, DatasetOut
from workers.contract.vocab import DatasetFormat, Objective

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


@router.post("", status_code=201)
def upload(db: DatabaseDep, settings: SettingsDep, file: UploadFile = File(...),
           format: DatasetFormat = Form(DatasetFormat.auto), name: str | None = Form(None, max_length=200),
           objective: Objective | None = Form(None, description="the objective of every pair, when the file "
                                                                  "does not say")) -> DatasetOut:
    return DatasetOut.of(service.store_upload(db=db, settings=settings, stream=file.file,
                                              filename=file.filename or "upload", fmt=format, name=name,
                                              objective=objective))


@router.post("/from-root", status_code=201)
def from_root(body: DatasetFromRoot, db: DatabaseDep, settings: SettingsDep) -> DatasetOut:
    """Import a file from a directory the operator lists in TENSION_DATA_ROOTS; stored exactly as an upload."""
    return DatasetOut.of(service.store_from_root(db=db, settings=settings, root=body.root, path=body.path,
                                                 fmt=body.format, name=body.name, objective=body.objective))


@router.get("/roots")
def list_roots(settings: SettingsDep) -> list[DataRootOut]:
    """The data roots and the dataset files each holds (the only server files a request can name)."""
    out = []
    for r in roots.data_roots(settings):
        files, truncated = roots.list_files(settings, r)
        out.append(DataRootOut(root=str(r.index), name=r.name, files=files, truncated=truncated))
    return out


@router.get("")
def list_all(db: DatabaseDep) -> list[DatasetOut]:
    return [DatasetOut.of(d) for d in service.list_datasets(db=db)]
