"""HTML pages of datasets: the list with the upload form, and the upload partial."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from app.core.deps import DatabaseDep, SettingsDep
from app.datasets import service
from app.web.templating import render
from workers.contract.vocab import DatasetFormat

router = APIRouter(include_in_schema=False)


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, db: DatabaseDep) -> Response:
    return render(request, "datasets/index.html", datasets=service.list_datasets(db=db), formats=list(DatasetFormat),
                  **service.bundled_summary())


@router.post("/ui/datasets", response_class=HTMLResponse)
def upload(request: Request, db: DatabaseDep, settings: SettingsDep, file: UploadFile = File(...),
           format: DatasetFormat = Form(DatasetFormat.auto)) -> Response:
    ds = service.store_upload(db=db, settings=settings, stream=file.file, filename=file.filename or "upload",
                              fmt=format)
    return render(request, "datasets/_stored.html", d=ds)
