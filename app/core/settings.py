"""Settings from the environment (prefix TENSION_): embedded default, or PostgreSQL + Ray."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.contract.vocab import Device, ExecutorName
from workers.storage import ArtifactStore


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TENSION_", env_file=".env", extra="ignore")

    data_dir: Path = Field(Path("var"), description="root of the embedded default's files")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<data_dir>/meta.db")
    duckdb_path: Path | None = Field(None, description="neuron-statistics store; default <data_dir>/stats.duckdb")
    artifact_dir: Path | None = Field(None, description="checkpoints and job results; default <data_dir>/artifacts")
    artifact_store: str | None = Field(
        None, description="fsspec URL of the artifact store workers read and write (default: artifact_dir)")
    executor: ExecutorName = ExecutorName.local
    ray_address: str | None = None
    concurrency: int = Field(1, ge=1, le=64)
    host: str = "127.0.0.1"
    port: int = 8000
    device: Device = Device.auto
    public_base_url: str | None = Field(None, description="base URL used in share links")
    heartbeat_timeout_s: float = 120.0
    python: str | None = Field(None, description="interpreter for worker processes; default this one")

    @field_validator("executor")
    @classmethod
    def _implemented(cls, v: ExecutorName) -> ExecutorName:
        if v != ExecutorName.local:
            raise ValueError(f"executor {v.value!r} is not implemented yet; use 'local'")
        return v

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'meta.db').resolve()}"

    @property
    def resolved_duckdb_path(self) -> Path:
        return (self.duckdb_path or self.data_dir / "stats.duckdb").resolve()

    @property
    def resolved_artifact_dir(self) -> Path:
        return (self.artifact_dir or self.data_dir / "artifacts").resolve()

    @property
    def resolved_artifact_store(self) -> str:
        return self.artifact_store or self.resolved_artifact_dir.as_uri()

    def artifact_store_client(self) -> ArtifactStore:
        return ArtifactStore(self.resolved_artifact_store)

    @property
    def log_dir(self) -> Path:
        """Where the local executor keeps worker logs (the API's machine, not the artifact store)."""
        return (self.data_dir / "logs").resolve()

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_artifact_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_duckdb_path.parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
