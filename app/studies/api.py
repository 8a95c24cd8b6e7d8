"""JSON routes of studies: start (or resume) one, read one, list them, cancel one."""

from __future__ import annotations

from fastapi import APIRouter, Path, Response

from app.core.deps import ServicesDep, SettingsDep
from app.studies import service
from app.studies.presets import STUDY_PRESETS
from app.studies.schemas import StudyCreate, StudyOut, StudyPresetOut

router = APIRouter(tags=["studies"])
StudyKey = Path(..., min_length=1, max_length=64, pattern=r"^[0-9a-f]+$", description="the study's key")


@router.post("/api/studies", status_code=201, responses={200: {
    "model": StudyOut, "description": "the study existed already (and resumed if it had failed or been cancelled)"}})
def create(body: StudyCreate, services: ServicesDep, settings: SettingsDep, response: Response) -> StudyOut:
    """Start the study a preset defines (201); the same study again answers 200 with its record, and a
    failed or cancelled one resumes, reusing every finished job."""
    study, existed = service.create(services, body)
    if existed:
        response.status_code = 200
    return service.describe(services, settings, study)


@router.get("/api/studies")
def list_studies(services: ServicesDep, settings: SettingsDep) -> list[StudyOut]:
    """Every study, newest first."""
    return [service.describe(services, settings, s) for s in service.list_studies(services)]


@router.get("/api/studies/presets")
def presets() -> list[StudyPresetOut]:
    """What each preset runs, and how long it is expected to take on what hardware."""
    return [StudyPresetOut(**p.as_dict()) for p in STUDY_PRESETS.values()]


@router.get("/api/studies/{key}")
def read(services: ServicesDep, settings: SettingsDep, key: str = StudyKey) -> StudyOut:
    """A study: its stages, their jobs and progress, and its results by role."""
    return service.describe(services, settings, service.get(services, key))


@router.post("/api/studies/{key}/resume")
def resume(services: ServicesDep, settings: SettingsDep, key: str = StudyKey) -> StudyOut:
    """Run a failed or cancelled study again, reusing its finished jobs (a running one is left as it is)."""
    return service.describe(services, settings, service.resume(services, key))


@router.post("/api/studies/{key}/cancel")
def cancel(services: ServicesDep, settings: SettingsDep, key: str = StudyKey) -> StudyOut:
    """Stop a running study and the unfinished jobs of its current stage (409 if it is not running)."""
    return service.describe(services, settings, service.cancel(services, key))
