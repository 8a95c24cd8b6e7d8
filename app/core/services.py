"""The process-wide services container: built once in the app's lifespan, reached via `request.app`."""

from __future__ import annotations

from dataclasses import dataclass

from app.core.db import Database
from app.core.migrate import upgrade_metadata
from app.core.settings import Settings
from app.core.store import StatsStore
from app.jobs.executor import make_executor
from app.jobs.service import JobContext, JobService


@dataclass
class Services:
    settings: Settings
    db: Database
    store: StatsStore
    jobs: JobService
    metadata_revision: str

    @classmethod
    def build(cls, settings: Settings) -> Services:
        settings.ensure_dirs()
        revision = upgrade_metadata(settings.resolved_database_url)
        db = Database(settings.resolved_database_url)
        store = StatsStore(settings.resolved_duckdb_path)
        ctx = JobContext(db=db, store=store, executor=make_executor(settings),
                         artifacts=settings.artifact_store_client(), log_dir=settings.log_dir,
                         concurrency=settings.concurrency,
                         device=settings.device, heartbeat_timeout_s=settings.heartbeat_timeout_s)
        services = cls(settings, db, store, JobService(ctx), revision)
        from app.domains import register_job_kinds

        register_job_kinds(services)
        return services

    def close(self) -> None:
        self.jobs.stop(terminate_running=False)
        self.store.close()
        self.db.dispose()

