from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.jobs.service import JobError
from app.scoring import service
from app.services import Services, get_services

router = APIRouter(prefix="/api/results", tags=["results"])


@router.get("/{result_key}")
def result(result_key: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    manifest = services.store.manifest(result_key)
    if manifest is None:
        raise JobError(f"no stored result with key {result_key!r}", 404)
    return manifest


@router.get("/{result_key}/rewards")
def rewards(result_key: str, limit: int = 1000, offset: int = 0,
            services: Services = Depends(get_services)) -> dict[str, Any]:
    if not services.store.is_ingested(result_key):
        raise JobError(f"no stored result with key {result_key!r}", 404)
    return {"result_key": result_key, "summary": service.reward_summary(services, result_key),
            "rows": service.rewards(services, result_key, min(max(limit, 1), 100000), max(offset, 0))}
