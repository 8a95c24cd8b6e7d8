from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, File, Form, UploadFile

from app.core.services import Services, get_services
from app.datasets import service

router = APIRouter(prefix="/api/datasets", tags=["datasets"])


def _out(ds: Any) -> dict[str, Any]:
    return {"id": ds.id, "name": ds.name, "format": ds.format, "n_pairs": ds.n_pairs,
            "objectives": ds.objectives, "subsets": ds.subsets, "source": f"dataset:{ds.id}"}


@router.post("", status_code=201)
def upload(file: UploadFile = File(...), format: str = Form("auto"), name: str | None = Form(None),
           objective: str | None = Form(None), services: Services = Depends(get_services)) -> dict[str, Any]:
    return _out(service.store_upload(services, file.file, file.filename or "upload", format, name, objective))


@router.get("")
def list_all(services: Services = Depends(get_services)) -> list[dict[str, Any]]:
    return [_out(d) for d in service.list_datasets(services)]
