"""HTML pages of datasets: the list with the upload and data-root forms, and the stored-dataset partial."""

from __future__ import annotations

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from app.core.deps import DatabaseDep, SettingsDep
from app.core.errors import Invalid
from app.datasets import roots, service
from app.web.templating import render
from workers.contract.vocab import DatasetFormat, Objective

router = APIRouter(include_in_schema=False)


def _objective(value: str) -> Objective | None:
    """The form's objective: '' (as the file says) or one of the objectives."""
    if not value:
        return None
    if value not in list(Objective):
        raise Invalid(f"objective: choose one of {', '.join(Objective)}")
    return Objective(value)


@router.get("/datasets", response_class=HTMLResponse)
def datasets_page(request: Request, db: DatabaseDep, settings: SettingsDep) -> Response:
    data_roots = []
    for r in roots.data_roots(settings):
        files, truncated = roots.list_files(settings, r)
        data_roots.append({"root": str(r.index), "name": r.name, "files": files, "truncated": truncated})
    return render(request, "datasets/index.html", datasets=service.list_datasets(db=db), formats=list(DatasetFormat),
                  objectives=list(Objective), data_roots=data_roots, **service.bundled_summary())


@router.post("/ui/datasets", response_class=HTMLResponse)
def upload(request: Request, db: DatabaseDep, settings: SettingsDep, file: UploadFile = File(...),
           format: DatasetFormat = Form(DatasetFormat.auto), objective: str = Form("", max_length=16)) -> Response:
    ds = service.store_upload(db=db, settings=settings, stream=file.file, filename=file.filename or "upload",
                              fmt=format, objective=_objective(objective))
    return render(request, "datasets/_stored.html", d=ds)


@router.post("/ui/datasets/from-root", response_class=HTMLResponse)
def from_root(request: Request, db: DatabaseDep, settings: SettingsDep,
              file: str = Form(..., max_length=1300, description="'<root>/<relative path>'"),
              format: DatasetFormat = Form(DatasetFormat.auto), objective: str = Form("", max_length=16)) -> Response:
    root, _, path = file.partition("/")
    if not path:
        raise Invalid("file: choose a file of a data root")
    ds = service.store_from_root(db=db, settings=settings, root=root, path=path, fmt=format,
                                 objective=_objective(objective))
    return render(request, "datasets/_stored.html", d=ds)
