"""JSON routes of uploaded datasets: upload (validated on arrival), list."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, UploadFile

from app.core.deps import DatabaseDep, SettingsDep
from app.datasets import service
from app.datasets.schemas import DatasetOut
from workers.contract.vocab import DatasetFormat, Objective

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


@router.post("", status_code=201)
def upload(db: DatabaseDep, settings: SettingsDep, file: UploadFile = File(...),
           format: DatasetFormat = Form(DatasetFormat.auto), name: str | None = Form(None),
           objective: Objective | None = Form(None, description="the objective of every pair, when the file "
                                                                  "does not say")) -> DatasetOut:
    return DatasetOut.of(service.store_upload(db=db, settings=settings, stream=file.file,
                                              filename=file.filename or "upload", fmt=format, name=name,
                                              objective=objective))


@router.get("")
def list_all(db: DatabaseDep) -> list[DatasetOut]:
    return [DatasetOut.of(d) for d in service.list_datasets(db=db)]
