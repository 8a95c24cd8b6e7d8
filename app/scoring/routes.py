from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from app.core.errors import NotFound
from app.core.services import Services, get_services
from app.scoring import service

router = APIRouter(prefix="/api/results", tags=["results"])


@router.get("/{result_key}")
def result(result_key: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    manifest = services.store.manifest(result_key)
    if manifest is None:
        raise NotFound(f"no stored result with key {result_key!r}")
    return manifest


@router.get("/{result_key}/rewards")
def rewards(result_key: str, limit: int = 1000, offset: int = 0,
            services: Services = Depends(get_services)) -> dict[str, Any]:
    if not services.store.is_ingested(result_key):
        raise NotFound(f"no stored result with key {result_key!r}")
    return {"result_key": result_key, "summary": service.reward_summary(services, result_key),
            "rows": service.rewards(services, result_key, min(max(limit, 1), 100000), max(offset, 0))}
