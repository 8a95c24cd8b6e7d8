"""Settings from the environment (prefix TENSION_): embedded default, or PostgreSQL + Ray."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

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
    ray_address: str = Field("http://127.0.0.1:8265",
                             description="the Ray dashboard's HTTP address (Jobs API) when the executor is ray")
    ray_python: str | None = Field(None, description="interpreter on the Ray nodes; default this one (with "
                                                     "ray_ship_code off, the project's code must be at the same "
                                                     "path on every node)")
    ray_resources: dict[str, dict[str, float]] = Field(
        default_factory=dict, description='per job kind, the Ray resources one job asks for, e.g. '
                                          '{"capture": {"GPU": 1}, "*": {"CPU": 1}}; they override the default '
                                          '(CPU 1, memory from the model\'s size, GPU 1 when the cluster has GPUs)')
    ray_token: SecretStr | None = Field(
        None, description="Ray's auth token (RAY_AUTH_TOKEN of the cluster) sent as a bearer token to the "
                          "dashboard; never shown or logged")
    ray_ship_code: bool = Field(True, description="upload the `workers` package with each Ray job (runtime_env "
                                                  "py_modules), so nodes need only the dependencies; off: the code "
                                                  "must be at the same path on every node")
    ray_gpus: Literal["auto", "on", "off"] = Field(
        "auto", description="ask for a GPU per job: auto when a node of the cluster has one; on: always; off: never")
    ray_dashboard_url: str | None = Field(
        None, description="the Ray dashboard's URL as people's browsers reach it; a job's page links its Ray job "
                          "there (no link when unset)")
    concurrency: int = Field(1, ge=1, le=64)
    host: str = "127.0.0.1"
    port: int = 8000
    device: Device = Device.auto
    public_base_url: str | None = Field(
        None, description="the URL people reach this server at; every absolute URL (share links) is built from it, "
                          "never from the Host header (default: http://<host>:<port>)")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Host / Origin names accepted (default: the bound address, localhost, "
                                          "127.0.0.1 and the public URL's host)")
    auth: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: a login is needed unless bound to loopback with no users; on: always; "
                            "off: never (refused unless bound to loopback)")
    secret_key: str | None = Field(
        None, description="signs session and CSRF cookies; default: a random key kept in <data_dir>/secret_key")
    session_max_age_s: int = Field(14 * 24 * 3600, ge=60)
    share_ttl_days: float = Field(30.0, gt=0, le=3650, description="default lifetime of a share link")
    share_toggles_per_minute: int = Field(30, ge=1, le=10_000,
                                          description="live toggles allowed through one share link a minute")
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, description="directories an operator allows as dataset sources ('root:<n>/<file>'); "
                                          "nothing else on disk is reachable from a request")
    max_upload_bytes: int = Field(512 * 1024 * 1024, ge=1024, description="largest upload, as sent")
    max_decompressed_bytes: int = Field(1024 * 1024 * 1024, ge=1024,
                                        description="largest dataset once decompressed (gzip bombs stop here)")
    max_pairs: int = Field(1_000_000, ge=1, description="most preference pairs in one dataset")
    heartbeat_timeout_s: float = 120.0
    python: str | None = Field(None, description="interpreter for worker processes; default this one")
    live_max_sessions: int = Field(3, ge=1, le=64, description="warm live-ablation workers kept at most (LRU)")
    live_memory_mb: float = Field(6000.0, ge=100, description="resident memory of all warm live-ablation workers "
                                                               "together; past it the least recently used closes")
    serve_url: str = Field("http://127.0.0.1:8001",
                           description="Ray Serve's HTTP proxy as the API reaches it (executor ray: live sessions "
                                       "are Serve deployments); its port is the one Serve is started on")
    serve_gpu_fraction: float = Field(0.0, ge=0, le=8, description="GPUs one live-session replica asks for "
                                                                    "(a fraction shares a GPU; 0: none)")
    serve_num_cpus: float = Field(1.0, gt=0, le=64, description="CPUs one live-session replica asks for (its "
                                                                "torch threads: the floor, at least one)")
    serve_idle_s: float = Field(600.0, ge=1, description="a live-session replica with no request for this long "
                                                         "is scaled to zero (the next toggle starts it again)")

    @field_validator("executor")
    @classmethod
    def _implemented(cls, v: ExecutorName) -> ExecutorName:
        if v not in (ExecutorName.local, ExecutorName.ray):
            raise ValueError(f"executor {v.value!r} is not implemented yet; use 'local' or 'ray'")
        return v

    @field_validator("allowed_hosts", "data_roots", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        """Environment values may be comma-separated as well as JSON lists."""
        if isinstance(v, str) and not v.lstrip().startswith("["):
            return [x.strip() for x in v.split(",") if x.strip()]
        return v

    @property
    def public_url(self) -> str:
        """The base of every absolute URL this server hands out."""
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        host = "localhost" if self.host in ("0.0.0.0", "::", "127.0.0.1") else self.host
        return f"http://{host}:{self.port}"

    @property
    def resolved_allowed_hosts(self) -> list[str]:
        """Host names (no port) a request's Host and Origin may carry."""
        from urllib.parse import urlsplit

        hosts = list(self.allowed_hosts) or [self.host, "localhost", "127.0.0.1"]
        public = urlsplit(self.public_url).hostname
        if public:
            hosts.append(public)
        return sorted({h for h in hosts if h not in ("0.0.0.0", "::")})

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1")

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

    def resolved_secret_key(self) -> str:
        """The key that signs session and CSRF cookies: configured, or made once and kept (mode 600)."""
        if self.secret_key:
            return self.secret_key
        path = self.data_dir / "secret_key"
        if not path.exists():
            import os
            import secrets

            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(secrets.token_urlsafe(48))
        return path.read_text().strip()

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_artifact_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.resolved_duckdb_path.parent.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
