"""Settings from the environment (prefix TENSION_): embedded default, or PostgreSQL + Ray."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENSION_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("var"), description="root of the embedded default's files")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/meta.db")
    duckdb_path: Path | None = Field(None, description="neuron-statistics store; default <data_dir>/stats.duckdb")
    artifact_dir: Path | None = Field(None, description="checkpoints and job results; default <data_dir>/artifacts")
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    concurrency: int = Field(1, ge=1, le=64)
    host: str = "127.0.0.1"
    port: int = 8000
    device: Literal["auto", "cpu", "cuda"] = "auto"
    public_base_url: str | None = Field(None, description="base URL used in share links")
    heartbeat_timeout_s: float = 120.0
    python: str | None = Field(None, description="interpreter for worker processes; default this one")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'meta.db').resolve()}"

    @property
    def resolved_duckdb_path(self) -> Path:
        return (self.duckdb_path or self.data_dir / "stats.duckdb").resolve()

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_artifact_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_duckdb_path.parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
