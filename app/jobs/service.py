"""Job lifecycle: submit (validate, key, cache), supervise (progress, ingest), cancel, retry, recover.

queued -> running -> succeeded | failed | cancelled. A job whose result key was already produced is
answered from the cache; results reach DuckDB only after the worker exits cleanly with a manifest.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select

from app.core.db import Checkpoint, Database, Job, Run, utcnow
from app.core.errors import Conflict, Invalid, NotFound
from app.core.store import IngestError, StatsStore
from app.jobs.executor import Executor, JobHandle
from app.jobs.schemas import JobRuntime
from workers.contract.artifacts import (
    ERROR_FILE,
    MANIFEST_FILE,
    PROGRESS_FILE,
    RUNTIME_FILE,
    SPEC_FILE,
    ErrorReport,
    ProgressReport,
    ResultManifest,
    WorkerRuntime,
    job_key,
)
from workers.contract.jobs import PARAMS_BY_KIND, JobSpec, Params, result_key
from workers.contract.version import code_version
from workers.contract.vocab import JobKind
from workers.models.names import parameter_count
from workers.storage import ArtifactStore

log = logging.getLogger("tension.jobs")

ACTIVE = ("queued", "running")
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass
class KindHandlers:
    """Per-kind hooks: `prepare` validates params and returns the data revision for the result key;
    `on_success` records domain rows (checkpoints, runs) after ingest."""

    prepare: Callable[[Any], str] = lambda params: ""  # noqa: E731
    on_success: Callable[[Job, ResultManifest], None] | None = None


@dataclass
class JobContext:
    db: Database
    store: StatsStore
    executor: Executor
    artifacts: ArtifactStore
    log_dir: Path
    concurrency: int = 1
    device: str = "auto"
    heartbeat_timeout_s: float = 120.0
    handlers: dict[JobKind, KindHandlers] = field(default_factory=dict)


class JobService:
    def __init__(self, ctx: JobContext) -> None:
        self.ctx = ctx
        self._handles: dict[str, JobHandle] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.after_tick: list[Callable[[], None]] = []  # e.g. studies advancing as their jobs finish

    # -- submission -------------------------------------------------------------------------------
    def register(self, kind: JobKind, handlers: KindHandlers) -> None:
        self.ctx.handlers[kind] = handlers

    def submit(self, kind: JobKind | str, params: dict[str, Any] | Params, *,
               force: bool = False) -> tuple[Job, bool]:
        """Validate and queue a job; returns (job, cached). A finished identical job is reused."""
        try:
            kind = JobKind(kind)
        except ValueError as exc:
            raise Invalid(f"unknown job kind {kind!r}; one of {[k.value for k in JobKind]}") from exc
        model = PARAMS_BY_KIND[kind]
        if not isinstance(params, Params | dict):
            raise Invalid(f"invalid parameters: params: a JSON object is needed, got {type(params).__name__}")
        try:
            # fields the API fills in while preparing the job are its own: a request's values are dropped
            raw = params.model_dump(mode="json") if isinstance(params, Params) else \
                {k: v for k, v in params.items() if k not in model.SERVER_FIELDS}
            typed = model.model_validate(raw)
        except ValidationError as exc:
            raise Invalid(_validation_message(exc)) from exc
        handlers = self.ctx.handlers.get(kind, KindHandlers())
        data_revision = handlers.prepare(typed)
        normal = typed.model_dump(mode="json")
        key = result_key(kind, normal, data_revision, code_version())
        with self.ctx.db.session() as s:
            if not force:
                existing = s.scalars(
                    select(Job).where(Job.result_key == key, Job.status.in_(("succeeded", *ACTIVE)))
                    .order_by(Job.created_at.desc())
                ).first()
                if existing is not None and (existing.status != "succeeded" or self.ctx.store.is_ingested(key)):
                    return existing, True
            parameters = self._parameters(typed)
            try:  # e.g. a Ray cluster with no node that has the resources this job asks for
                request = self.ctx.executor.request_for(kind.value, parameters)
                self.ctx.executor.check(kind.value, request)
            except ValueError as exc:
                raise Invalid(f"the {self.ctx.executor.name} executor cannot run this job: {exc}") from exc
            runtime = JobRuntime(request=request, parameters=parameters)
            job = Job(id=uuid.uuid4().hex[:16], kind=kind.value, params=normal, result_key=key,
                      status="queued", message="queued", metrics={}, executor=self.ctx.executor.name,
                      runtime=runtime.model_dump(mode="json"))
            job.output_dir = job_key(job.id)
            s.add(job)
        return job, False

    def _parameters(self, params: Params) -> int | None:
        """The size of the largest model the job loads (its `model`, `base_model`, or the base of each checkpoint
        it names); None when one of them is of unknown size (the executor's settings decide then)."""
        names = [v for f in ("model", "base_model") if isinstance(v := getattr(params, f, None), str)]
        ids = [getattr(params, f, None) for f in ("checkpoint", "helpful_checkpoint", "harmless_checkpoint")]
        ids += list(getattr(params, "checkpoints", None) or [])
        with self.ctx.db.session() as s:
            for cid in {i for i in ids if isinstance(i, str)}:
                row = s.get(Checkpoint, cid)
                if row is not None:
                    names.append(row.base_model)
        counts = [parameter_count(n) for n in names]
        return max(c for c in counts if c is not None) if counts and None not in counts else None

    # -- queries ----------------------------------------------------------------------------------
    def get(self, job_id: str) -> Job:
        with self.ctx.db.session() as s:
            job = s.get(Job, job_id)
            if job is None:
                raise NotFound(f"no job with id {job_id!r}")
            return job

    def list(self, status: str | None = None, kind: str | None = None, limit: int = 100) -> list[Job]:
        with self.ctx.db.session() as s:
            q = select(Job).order_by(Job.created_at.desc()).limit(limit)
            if status:
                q = q.where(Job.status == status)
            if kind:
                q = q.where(Job.kind == kind)
            return list(s.scalars(q))

    # -- control ----------------------------------------------------------------------------------
    def cancel(self, job_id: str) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job.status in FINISHED:
                raise Conflict(f"job {job_id} already {job.status}")
            handle = self._handles.pop(job_id, None)
            if handle is not None:
                handle.terminate()
            self._finish(job_id, "cancelled", message="cancelled by user")
            return self.get(job_id)

    def retry(self, job_id: str) -> Job:
        with self._lock:
            job = self.get(job_id)
            if job.status not in ("failed", "cancelled"):
                raise Conflict(f"only failed or cancelled jobs can be retried; job {job_id} is {job.status}")
            self.ctx.artifacts.delete(job.output_dir)
            with self.ctx.db.session() as s:
                row = s.get(Job, job_id)
                assert row is not None
                row.status, row.progress, row.message, row.error = "queued", 0.0, "queued for retry", None
                row.started_at = row.finished_at = None
                row.pid = None
                row.runtime = JobRuntime.of(row).model_copy(update={"placement": {}, "worker": None}).model_dump(
                    mode="json")
            return self.get(job_id)

    # -- supervision ------------------------------------------------------------------------------
    def start(self, interval: float = 0.3) -> None:
        self.recover()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, args=(interval,), name="job-supervisor", daemon=True)
        self._thread.start()

    def stop(self, terminate_running: bool = False) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if terminate_running:
            with self._lock:
                for job_id, handle in list(self._handles.items()):
                    handle.terminate()
                    self._finish(job_id, "failed", error="API shut down while the job ran")
                self._handles.clear()

    def _loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:  # the supervisor must outlive any one bad job
                log.exception("job supervisor tick failed")

    def tick(self) -> None:
        self._tick_jobs()
        for hook in self.after_tick:
            hook()

    def _tick_jobs(self) -> None:
        with self._lock:
            for job_id, handle in list(self._handles.items()):
                self._observe(job_id, handle)
            running = len(self._handles)
            if running >= self.ctx.concurrency:
                return
            with self.ctx.db.session() as s:
                queued = list(s.scalars(select(Job).where(Job.status == "queued")
                                        .order_by(Job.created_at).limit(self.ctx.concurrency - running)))
            for job in queued:
                self._launch(job)

    def spec_for(self, job: Job) -> JobSpec:
        """The spec a worker runs from: typed params, the store's URL and the job's prefix in it."""
        return JobSpec.model_validate({
            "job_id": job.id, "kind": job.kind, "params": job.params, "result_key": job.result_key,
            "code_version": code_version(), "store_url": self.ctx.artifacts.url, "output": job.output_dir,
            "device": self.ctx.device})

    def log_path(self, job_id: str) -> Path:
        return self.ctx.log_dir / f"{job_id}.log"

    def _launch(self, job: Job) -> None:
        store = self.ctx.artifacts
        store.delete(job.output_dir)
        try:
            spec = self.spec_for(job)
            spec_key = f"{job.output_dir}/{SPEC_FILE}"
            store.write_bytes(spec_key, spec.model_dump_json(indent=2).encode())
            runtime = JobRuntime.of(job)
            if not runtime.request and self.ctx.executor.name != "local":  # a row from before requests were kept
                runtime.request = self.ctx.executor.request_for(job.kind, None)
            handle = self.ctx.executor.start(spec, f"{store.url}/{spec_key}", self.log_path(job.id), runtime.request)
        except Exception as exc:
            self._finish(job.id, "failed", error=f"could not start worker: {exc}")
            return
        self._handles[job.id] = handle
        with self.ctx.db.session() as s:
            row = s.get(Job, job.id)
            assert row is not None
            row.status, row.pid, row.started_at = "running", handle.pid, utcnow()
            row.attempts = (row.attempts or 0) + 1
            row.message, row.heartbeat_at = "started", utcnow()
            row.runtime = runtime.model_copy(update={"placement": handle.placement(), "worker": None}).model_dump(
                mode="json")

    def _report(self, job: Job, name: str, model: type[Any]) -> Any:
        raw = self.ctx.artifacts.read_json(f"{job.output_dir}/{name}")
        if raw is None:
            return None
        try:
            return model.model_validate(raw)
        except ValidationError:
            return None

    def _observe(self, job_id: str, handle: JobHandle) -> None:
        job = self.get(job_id)
        progress: ProgressReport | None = self._report(job, PROGRESS_FILE, ProgressReport)
        exit_info = handle.poll()
        if exit_info is None and JobRuntime.of(job).worker is None and not handle.waiting:
            self._record_runtime(job, handle)  # the worker's start record: the node, while it runs
        with self.ctx.db.session() as s:
            row = s.get(Job, job_id)
            assert row is not None
            if progress is not None:
                row.progress = progress.fraction
                row.message = progress.message[:2000]
                row.metrics = dict(progress.metrics)
                if progress.heartbeat:
                    row.heartbeat_at = datetime.utcfromtimestamp(progress.heartbeat)
            row.log_tail = _tail(self.log_path(job_id))
            if handle.waiting:  # queued by the executor (a busy cluster): not a silent worker
                row.heartbeat_at = utcnow()
                if progress is None:
                    row.message = f"waiting for the {self.ctx.executor.name} executor to place the job"
            stale = (row.heartbeat_at is not None and exit_info is None
                     and (utcnow() - row.heartbeat_at).total_seconds() > self.ctx.heartbeat_timeout_s)
        if stale:
            handle.terminate()
            self._handles.pop(job_id, None)
            timeout = self.ctx.heartbeat_timeout_s
            self._finish(job_id, "failed", error=f"no heartbeat for {timeout:.0f} s; worker stopped")
            return
        if exit_info is None:
            return
        self._handles.pop(job_id, None)
        self._record_runtime(job, handle)
        self._complete(job, exit_info.returncode, exit_info.reason)

    def _record_runtime(self, job: Job, handle: JobHandle | None) -> None:
        """Keep the worker's runtime.json and the executor's placement on the row (each when there is one)."""
        worker: WorkerRuntime | None = self._report(job, RUNTIME_FILE, WorkerRuntime)
        placement = handle.placement() if handle is not None else {}
        if worker is None and not placement:
            return
        with self.ctx.db.session() as s:
            row = s.get(Job, job.id)
            if row is None:
                return
            runtime = JobRuntime.of(row)
            runtime.placement = {**runtime.placement, **placement}
            runtime.worker = worker or runtime.worker
            row.runtime = runtime.model_dump(mode="json")

    def _complete(self, job: Job, returncode: int | None, reason: str) -> None:
        manifest_raw = self.ctx.artifacts.read_json(f"{job.output_dir}/{MANIFEST_FILE}")
        if returncode not in (0, None) or manifest_raw is None:
            err: ErrorReport | None = self._report(job, ERROR_FILE, ErrorReport)
            detail = err.error if err is not None else _last_line(self.log_path(job.id))
            self._finish(job.id, "failed", error=f"{reason}: {detail}" if detail else reason)
            return
        try:
            manifest = ResultManifest.model_validate(manifest_raw)
            if manifest.result_key != job.result_key:
                raise IngestError("manifest result key does not match the job")
            self.ctx.store.ingest(manifest, self.ctx.artifacts, job.output_dir)
            with self.ctx.db.session() as s:
                if s.get(Run, job.result_key) is None:
                    s.add(Run(result_key=job.result_key, kind=job.kind, job_id=job.id, params=job.params,
                              summary=manifest.summary))
            handlers = self.ctx.handlers.get(JobKind(job.kind))
            if handlers and handlers.on_success:
                handlers.on_success(job, manifest)
        except (IngestError, ValidationError, OSError, ValueError) as exc:
            self._finish(job.id, "failed", error=f"results could not be stored: {exc}")
            return
        self._finish(job.id, "succeeded", message="done", progress=1.0)

    def _finish(self, job_id: str, status: str, *, error: str | None = None, message: str | None = None,
                progress: float | None = None) -> None:
        with self.ctx.db.session() as s:
            row = s.get(Job, job_id)
            if row is None:
                return
            row.status, row.finished_at = status, utcnow()
            if error is not None:
                row.error, row.message = error[:4000], "failed"
            if message is not None:
                row.message = message
            if progress is not None:
                row.progress = progress
            row.log_tail = _tail(self.log_path(job_id))

    def recover(self) -> None:
        """At start-up: re-attach live workers, store results that finished while we were down, and mark
        the rest failed with the reason so they can be retried."""
        with self.ctx.db.session() as s:
            running = list(s.scalars(select(Job).where(Job.status == "running")))
        for job in running:
            try:
                handle = self.ctx.executor.adopt(job.id, job.pid, self.log_path(job.id))
            except Exception:  # an executor that cannot be asked (a cluster down) must not stop start-up
                log.exception("could not re-attach job %s", job.id)
                handle = None
            if handle is not None:
                self._handles[job.id] = handle
                continue
            self._record_runtime(job, None)
            if self.ctx.artifacts.exists(f"{job.output_dir}/{MANIFEST_FILE}"):
                self._complete(job, None, "worker finished while the API was down")
            else:
                self._finish(job.id, "failed", error="worker process died while the API was down "
                             "(found at start-up); retry to run it again")


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "params"
        parts.append(f"{loc}: {e['msg']}")
    return "invalid parameters: " + "; ".join(parts)


def _tail(path: Path, n: int = 4000) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - n))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _last_line(path: Path) -> str:
    lines = [ln for ln in _tail(path).splitlines() if ln.strip()]
    return lines[-1][:500] if lines else ""
