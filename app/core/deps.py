"""FastAPI dependencies as `Annotated` aliases: a route asks for what it needs, already checked.

`CheckpointDep` answers 404 itself, so no route body looks a checkpoint up or picks a status code.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Path, Request

from app.core.checks import check_checkpoint
from app.core.db import Checkpoint, Database
from app.core.services import Services
from app.core.settings import Settings
from app.core.store import StatsStore


def get_services(request: Request) -> Services:
    return request.app.state.services  # type: ignore[no-any-return]


ServicesDep = Annotated[Services, Depends(get_services)]


def get_settings_dep(services: ServicesDep) -> Settings:
    return services.settings


def get_db(services: ServicesDep) -> Database:
    return services.db


def get_store(services: ServicesDep) -> StatsStore:
    return services.store


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
DatabaseDep = Annotated[Database, Depends(get_db)]
StoreDep = Annotated[StatsStore, Depends(get_store)]


def get_checkpoint(services: ServicesDep,
                   checkpoint: Annotated[str, Path(max_length=64, description="checkpoint id")]) -> Checkpoint:
    return check_checkpoint(services, checkpoint)


CheckpointDep = Annotated[Checkpoint, Depends(get_checkpoint)]
"""A `{checkpoint}` path parameter resolved to its row; an unknown id is a 404."""
