"""HTML pages of studies: the front door, the study list, a study's stages and report, its exports."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.core.deps import ServicesDep, SettingsDep
from app.core.errors import NotFound
from app.core.services import Services
from app.core.settings import Settings
from app.studies import service
from app.studies.pipeline import recompute_command
from app.studies.presets import STUDY_PRESETS
from app.studies.report import build_report
from app.studies.schemas import StudyCreate, StudyOut, StudyPresetName
from app.web.templating import render

router = APIRouter(include_in_schema=False)
POLL_SECONDS = 2


def _report(services: Services, out: StudyOut) -> Any:
    """The report of what the study has produced so far (None before anything was evaluated)."""
    return None if out.results.evaluation is None else build_report(services, out.results)


EXPLORE_NEURONS = 8
"""Shared neurons linked from a study's page, as starting points."""


def _explore(services: Services, out: StudyOut) -> dict[str, Any] | None:
    """Starting points for exploring a study's neurons: the dashboard of its first seed and a few shared
    neurons (highest layers first, where the study expects most of them); None before the captures."""
    if len(out.results.captures) < 3:
        return None
    from app.core.errors import AppError
    from app.neurons.service import compute_overlap
    from workers.contract.vocab import OverlapPart

    seed = out.seeds[0]
    try:
        overlap = compute_overlap(store=services.store, db=services.db, base_model=out.model, seed=seed)
    except AppError:
        return None
    shared = overlap.masks[OverlapPart.shared]
    layers, indices = shared.nonzero()
    order = sorted(zip(layers.tolist(), indices.tolist(), strict=True), key=lambda li: (-li[0], li[1]))
    return {"seed": seed, "n_shared": int(shared.sum()), "neurons": order[:EXPLORE_NEURONS]}


def _study_page(request: Request, services: Services, settings: Settings, key: str, *, home: bool = False
                ) -> Response:
    out = service.describe(services, settings, service.get(services, key))
    return render(request, "studies/study.html", study=out, report=_report(services, out), home=home,
                  explore=_explore(services, out), study_key=out.key,
                  poll_seconds=POLL_SECONDS, recompute=recompute_command(out.spec),
                  preset=STUDY_PRESETS.get(out.preset))


@router.get("/", response_class=HTMLResponse)
def home(request: Request, services: ServicesDep, settings: SettingsDep) -> Response:
    """The front door: what the tool shows and one button, until a study exists; then its report."""
    latest = service.latest(services)
    if latest is not None:
        return _study_page(request, services, settings, latest.key, home=True)
    return render(request, "studies/home.html", presets=list(STUDY_PRESETS.values()))


@router.get("/studies", response_class=HTMLResponse)
def index(request: Request, services: ServicesDep, settings: SettingsDep) -> Response:
    studies = [service.describe(services, settings, s) for s in service.list_studies(services)]
    return render(request, "studies/index.html", studies=studies, presets=list(STUDY_PRESETS.values()))


@router.post("/ui/studies", response_class=HTMLResponse)
def start(request: Request, services: ServicesDep, preset: Annotated[StudyPresetName, Form()] = "demo",
          model: Annotated[str, Form(max_length=256)] = "") -> Response:
    """Start (or open, or resume) a study from a form, then go to its page."""
    study, _ = service.create(services, StudyCreate(preset=preset, model=model.strip() or None))
    return Response(status_code=204, headers={"HX-Redirect": f"/studies/{study.key}"})


@router.get("/studies/{key}", response_class=HTMLResponse)
def study_page(request: Request, key: str, services: ServicesDep, settings: SettingsDep) -> Response:
    return _study_page(request, services, settings, key)


@router.get("/studies/{key}/stages", response_class=HTMLResponse)
def stages(request: Request, key: str, services: ServicesDep, settings: SettingsDep, was: str = "") -> Response:
    """The stage list, polled while the study runs; a study that just finished reloads the page."""
    out = service.describe(services, settings, service.get(services, key))
    if was == "running" and out.status != "running":
        return Response(status_code=204, headers={"HX-Refresh": "true"})
    return render(request, "studies/_stages.html", study=out, poll_seconds=POLL_SECONDS)


@router.post("/ui/studies/{key}/resume", response_class=HTMLResponse)
def resume(request: Request, key: str, services: ServicesDep) -> Response:
    service.resume(services, key)
    return Response(status_code=204, headers={"HX-Refresh": "true"})


@router.post("/ui/studies/{key}/cancel", response_class=HTMLResponse)
def cancel(request: Request, key: str, services: ServicesDep, settings: SettingsDep) -> Response:
    service.cancel(services, key)
    return Response(status_code=204, headers={"HX-Refresh": "true"})


def _finished_report(services: Services, settings: Settings, key: str) -> tuple[StudyOut, Any]:
    out = service.describe(services, settings, service.get(services, key))
    report = _report(services, out)
    if report is None:
        raise NotFound(f"study {key} has no results to export yet (stage: {out.stage})")
    return out, report


@router.get("/studies/{key}/export.html")
def export_html(key: str, services: ServicesDep, settings: SettingsDep) -> Response:
    """The report as one self-contained HTML file: figures included, no network needed to open it."""
    from app.studies.export import report_html

    out, report = _finished_report(services, settings, key)
    body = report_html(report, title=f"RM Tension study {out.key} ({out.preset}, {out.model})",
                       recompute_command=recompute_command(out.spec))
    return Response(body, media_type="text/html; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="study-{out.key}.html"'})


@router.get("/studies/{key}/tables.zip")
def export_csv(key: str, services: ServicesDep, settings: SettingsDep) -> Response:
    """Every table of the report as CSV, one file each, in a zip."""
    from app.studies.export import tables_csv_zip

    out, report = _finished_report(services, settings, key)
    return Response(tables_csv_zip(report), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="study-{out.key}-tables.zip"'})


@router.get("/studies/{key}/report.tex")
def export_latex(key: str, services: ServicesDep, settings: SettingsDep) -> Response:
    """The main tables (accuracy, overlap, Δ, claims) as LaTeX (booktabs)."""
    from app.studies.export import report_latex

    out, report = _finished_report(services, settings, key)
    return Response(report_latex(report), media_type="text/x-tex; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="study-{out.key}.tex"'})
