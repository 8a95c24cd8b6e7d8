"""Metadata database (SQLite by default, PostgreSQL at scale): models, datasets, runs, jobs, sets, shares, toggles."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, DateTime, Float, Integer, String, Text, create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


CURRENT_ACTOR: ContextVar[str] = ContextVar("tension_actor", default="local")
"""Who is acting in this request (a user name, `local` for the one-person loopback mode, `cli` for the CLI).

Set once per request by the access middleware; rows that record a creator take it as their default, so no
service has to thread a user through its signature.
"""


def current_actor() -> str:
    return CURRENT_ACTOR.get()


def _creator() -> Mapped[str]:
    return mapped_column(String(64), default=current_actor, server_default="local", index=True)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    result_key: Mapped[str] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True, default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    message: Mapped[str] = mapped_column(Text, default="")
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    log_tail: Mapped[str] = mapped_column(Text, default="")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    executor: Mapped[str] = mapped_column(String(16), default="local")
    output_dir: Mapped[str] = mapped_column(Text, default="")
    runtime: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)  # app.jobs.schemas.JobRuntime
    created_by: Mapped[str] = _creator()
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class Checkpoint(Base):
    """A trained reward model in the artifact store, keyed by the hash of what produced it."""

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    base_model: Mapped[str] = mapped_column(String(256), index=True)
    regime: Mapped[str] = mapped_column(String(16))
    seed: Mapped[int] = mapped_column(Integer, default=0)
    preset: Mapped[str] = mapped_column(String(16), default="demo")
    path: Mapped[str] = mapped_column(Text)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Dataset(Base):
    """An uploaded or registered preference dataset; id is its content revision."""

    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), index=True)
    format: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    n_pairs: Mapped[int] = mapped_column(Integer, default=0)
    objectives: Mapped[list[Any]] = mapped_column(JSON, default=list)
    subsets: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_by: Mapped[str] = _creator()
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Run(Base):
    """A finished, ingested result: what a job produced, addressable forever by its result key."""

    __tablename__ = "runs"

    result_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32), index=True)
    job_id: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class NeuronSet(Base):
    """A named neuron set that keeps the formula that defined it."""

    __tablename__ = "neuron_sets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), unique=True)
    base_model: Mapped[str] = mapped_column(String(256), index=True)
    formula: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    neurons: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    size: Mapped[int] = mapped_column(Integer, default=0)
    created_by: Mapped[str] = _creator()
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class ShareLink(Base):
    """A capability: an unguessable token that reads exactly one view and the data it loads, until it
    expires or is revoked."""

    __tablename__ = "share_links"

    token: Mapped[str] = mapped_column(String(64), primary_key=True)
    target: Mapped[str] = mapped_column(Text)
    read_only: Mapped[bool] = mapped_column(default=True)
    scope: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = _creator()
    expires_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Study(Base):
    """A whole study as a pipeline record: its spec, the jobs of each stage by label, and where it stands.

    Keyed by the hash of its expanded spec and the code version, so its link never changes; every stage's
    work is an ordinary cached job, which is what makes a study resumable.
    """

    __tablename__ = "studies"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    preset: Mapped[str] = mapped_column(String(16), index=True)
    model: Mapped[str] = mapped_column(String(256))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(16), index=True, default="running")
    stage: Mapped[str] = mapped_column(String(16), default="train")
    jobs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # label -> job id
    stage_times: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # stage -> [start, end] epoch s
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_by: Mapped[str] = _creator()
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)


class LiveToggleRecord(Base):
    """One finished live toggle: its first-order estimate and its exact shift, side by side.

    Written once per toggle (keyed by the toggle's id, so recording it again changes nothing); the
    agreement page reads these rows to show where the linear estimate holds and where it fails.
    JSON columns: `layers` {layer: count}; `estimate` {objective: {delta_margin, delta_accuracy}}; `exact` and
    `control_exact` {objective: {delta_margin, delta_accuracy, *_ci, n_pairs_done, n_pairs}}; `timings`
    {estimate_ms, first_round_ms, exact_ms, total_ms, startup_ms}.
    """

    __tablename__ = "live_toggles"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    checkpoint: Mapped[str] = mapped_column(String(64), index=True)
    base_model: Mapped[str] = mapped_column(String(256))
    regime: Mapped[str | None] = mapped_column(String(16), nullable=True)
    what: Mapped[str] = mapped_column(Text)
    set_key: Mapped[str] = mapped_column(String(64), index=True)
    n_neurons: Mapped[int] = mapped_column(Integer)
    layers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    mode: Mapped[str] = mapped_column(String(16))
    factor: Mapped[float] = mapped_column(Float, default=0.0)
    probe_limit: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), index=True)
    estimate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    exact: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    control_exact: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    timings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_by: Mapped[str] = _creator()
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)


class User(Base):
    """A person or script with a role. The API token and the password are stored only as hashes."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str | None] = mapped_column(Text, nullable=True)
    token_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    token_created_at: Mapped[datetime | None] = mapped_column(DateTime, nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)


class Database:
    """Engine + session factory; one per process."""

    def __init__(self, url: str) -> None:
        self.url = url
        kwargs: dict[str, Any] = {"future": True}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
        self.engine: Engine = create_engine(url, pool_pre_ping=True, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions() as s:
            try:
                yield s
                s.commit()
            except BaseException:
                s.rollback()
                raise

    def dispose(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
