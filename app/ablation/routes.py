"""Ablation API: live toggles (GET: a look, allowed through read-only links) and experiment results."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from app.ablation import service
from app.core.errors import NotFound
from app.core.services import Services, get_services

router = APIRouter(tags=["ablation"])


def live_pool(request: Request) -> Any:
    pool = getattr(request.app.state, "live_pool", None)
    if pool is None:
        from app.ablation.live import LivePool

        pool = request.app.state.live_pool = LivePool(python=request.app.state.services.settings.python)
    return pool


@router.get("/api/live/{checkpoint}/toggle")
def toggle(checkpoint: str, request: Request, neurons: str | None = None, set: str | None = None,
           part: str | None = None, p: float = 10.0, stat: str = "A", seed: int = 0, shared: str = "intersection",
           layer: int | None = None, mode: str = "zero", factor: float = 0.0, probe_limit: int = 64,
           path: str = "fast", services: Services = Depends(get_services)) -> dict[str, Any]:
    chosen = service.checked_toggle_neurons(services, checkpoint, neurons_json=neurons, set_name=set, part=part, p=p,
                                            stat=stat, seed=seed, shared=shared, layer=layer)
    return service.live_toggle(services, live_pool(request), checkpoint, chosen, mode, factor, probe_limit, path)


@router.get("/api/ablations")
def list_runs(checkpoint: str | None = None, services: Services = Depends(get_services)) -> list[dict[str, Any]]:
    return service.ablation_runs(services, checkpoint)


@router.get("/api/ablations/{result_key}")
def result(result_key: str, services: Services = Depends(get_services)) -> dict[str, Any]:
    out = service.results(services, result_key)
    if not out["rows"]:
        raise NotFound(f"no ablation result with key {result_key!r}")
    return out
