"""Live ablation: long-lived worker processes, one per (checkpoint, probe, hook), spoken to in JSON lines.

The web process stays torch-free; a worker keeps the RM and its probe set warm (`workers.live`). Every
request carries an id and a reading thread routes each answer line to whoever waits for that id, so an
estimate, a streamed exact toggle and a cancel can all be in flight on one worker at once.

Warm sessions (`LivePool`): workers are kept in a least-recently-used pool, bounded by
`TENSION_LIVE_MAX_SESSIONS` workers (default 3: the helpful, harmless and mixed RM of one view) and by
`TENSION_LIVE_MEMORY_MB` of resident memory over all of them (default 6000; a MiniLM session is about
700 MB). Past either bound the least recently used worker is closed. `warm()` starts a worker without
waiting for it (the dashboard warms the three RMs of its view when it opens, the selected one first), so
switching RM later costs no model load. A worker that died is restarted on its next use.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from app.core.errors import BadGateway, Invalid, Unavailable
from workers.contract.live import (
    LiveAnswer,
    LiveCancel,
    LiveError,
    LiveEstimateAnswer,
    LiveEstimateRequest,
    LiveReady,
    LiveRound,
    LiveSessionConfig,
    LiveStreamEnd,
    LiveStreamRequest,
    LiveToggleRequest,
)

WorkerMessage = LiveAnswer | LiveEstimateAnswer | LiveRound | LiveStreamEnd | LiveError


class LiveTimedAnswer(BaseModel):
    """A worker's answer and the round trip the API measured around it."""

    answer: LiveAnswer
    roundtrip_ms: float


def _parse(raw: dict[str, Any]) -> WorkerMessage:
    """A worker line as its protocol model (by the keys that mark each message)."""
    model: type[BaseModel] = LiveError if "error" in raw else LiveEstimateAnswer if raw.get("estimate") is True \
        else LiveStreamEnd if "end" in raw else LiveRound if "phase" in raw else LiveAnswer
    return model.model_validate(raw)  # type: ignore[return-value]


def new_request_id() -> str:
    return uuid.uuid4().hex


class SessionStart:
    """A live session's start-up and its streams in flight, as pools and runs see them whatever carries the
    session (a local process, `LiveWorker`; a Serve replica, `app.ablation.serve_pool.ServeSession`). The
    subclass sets these attributes and `_ready` once the session is ready or could not start."""

    noun: str  # how messages name the session
    start_timeout: float
    spawned_at: float
    ready_at: float | None
    info: LiveReady | None
    start_error: str | None
    _ready: threading.Event
    _streams: set[str]  # ids of streamed toggles in flight
    _streams_lock: threading.Lock

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self.info is not None

    def wait_ready(self, timeout: float | None = None) -> LiveReady:
        """The session's `LiveReady`, waiting for its set-up (model load, prefix states) if needed."""
        if not self._ready.wait(self.start_timeout if timeout is None else timeout):
            raise Unavailable(f"{self.noun} is still starting")
        if self.info is None:
            raise Invalid(f"{self.noun} could not start: {self.start_error}")
        return self.info

    def wait_idle(self, timeout: float) -> bool:
        """Until no streamed toggle is in flight on this session (or `timeout`); whether it is idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._streams_lock:
                if not self._streams:
                    return True
            time.sleep(0.1)
        return False

    @property
    def startup_s(self) -> float | None:
        return None if self.ready_at is None else self.ready_at - self.spawned_at


class LiveWorker(SessionStart):
    """One `python -m workers.live` process speaking the typed protocol of `workers.contract.live`.

    Construction only spawns the process; `wait_ready()` waits for its session. Estimates may be answered
    before that (from a cached estimator table)."""

    noun = "live ablation worker"

    def __init__(self, config: LiveSessionConfig, python: str | None = None, start_timeout: float = 300.0) -> None:
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        self.config = config
        self.start_timeout = start_timeout
        self.spawned_at = time.perf_counter()
        self.ready_at: float | None = None
        self.info: LiveReady | None = None
        self.start_error: str | None = None
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", "workers.live"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1, cwd=str(root), env=env, start_new_session=True)
        self._ready = threading.Event()
        self._write_lock = threading.Lock()
        self._waiters: dict[str, queue.Queue[WorkerMessage | None]] = {}
        self._streams: set[str] = set()  # ids of streamed toggles in flight
        self._waiters_lock = self._streams_lock = threading.Lock()
        self.send(config)
        threading.Thread(target=self._read, daemon=True, name=f"live-reader-{self.proc.pid}").start()

    # -- wire
    def send(self, message: BaseModel) -> None:
        assert self.proc.stdin is not None
        with self._write_lock:
            if self.proc.poll() is not None:
                raise Unavailable("live ablation worker is not running")
            try:
                self.proc.stdin.write(message.model_dump_json() + "\n")
                self.proc.stdin.flush()
            except (BrokenPipeError, ValueError) as exc:
                raise Unavailable("live ablation worker is not running") from exc

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                raw = json.loads(line)
                if not isinstance(raw, dict):
                    continue
                if raw.get("ready") is True:
                    self.info = LiveReady.model_validate(raw)
                    self.ready_at = time.perf_counter()
                    self._ready.set()
                    continue
                msg = _parse(raw)
            except (ValueError, ValidationError):
                continue  # not protocol: ignored (the worker's libraries print to stderr, not here)
            rid = getattr(msg, "id", None)
            if rid is None and isinstance(msg, LiveError):
                self.start_error = msg.error
                self._ready.set()
                continue
            with self._waiters_lock:
                box = self._waiters.get(str(rid))
            if box is not None:
                box.put(msg)
        self.start_error = self.start_error or "the live ablation worker exited"
        self._ready.set()
        with self._waiters_lock:
            for box in self._waiters.values():
                box.put(None)

    @contextlib.contextmanager
    def _expect(self, rid: str) -> Iterator[queue.Queue[WorkerMessage | None]]:
        box: queue.Queue[WorkerMessage | None] = queue.Queue()
        with self._waiters_lock:
            self._waiters[rid] = box
        try:
            yield box
        finally:
            with self._waiters_lock:
                self._waiters.pop(rid, None)

    @staticmethod
    def _next(box: queue.Queue[WorkerMessage | None], timeout: float) -> WorkerMessage:
        try:
            msg = box.get(timeout=timeout)
        except queue.Empty as exc:
            raise Unavailable(f"live ablation worker did not answer within {timeout:.0f} s") from exc
        if msg is None:
            raise Unavailable("live ablation worker stopped while answering")
        if isinstance(msg, LiveError):
            raise Invalid(msg.error)
        return msg

    # -- state
    @property
    def alive(self) -> bool:
        return self.proc.poll() is None and self.start_error is None

    def rss_mb(self) -> float:
        """Resident memory of the worker process (0 once it has exited)."""
        import psutil

        with contextlib.suppress(psutil.Error):
            return float(psutil.Process(self.proc.pid).memory_info().rss) / 2**20
        return 0.0

    # -- requests
    def estimate(self, request: LiveEstimateRequest, timeout: float = 300.0) -> tuple[LiveEstimateAnswer, float]:
        """The first-order estimate of a toggle and the round trip (ms), waiting for the estimator if needed."""
        started = time.perf_counter()
        req = request if request.id else request.model_copy(update={"id": new_request_id()})
        with self._expect(str(req.id)) as box:
            self.send(req)
            msg = self._next(box, timeout)
        if not isinstance(msg, LiveEstimateAnswer):
            raise BadGateway(f"live ablation worker answered an estimate with {type(msg).__name__}")
        return msg, 1000 * (time.perf_counter() - started)

    def toggle(self, request: LiveToggleRequest, timeout: float = 600.0) -> LiveTimedAnswer:
        """The whole exact answer at once."""
        self.wait_ready()
        started = time.perf_counter()
        req = request if request.id else request.model_copy(update={"id": new_request_id()})
        with self._expect(str(req.id)) as box:
            self.send(req)
            msg = self._next(box, timeout)
        if not isinstance(msg, LiveAnswer):
            raise BadGateway(f"live ablation worker answered a toggle with {type(msg).__name__}")
        return LiveTimedAnswer(answer=msg, roundtrip_ms=1000 * (time.perf_counter() - started))

    def stream(self, request: LiveStreamRequest, timeout: float = 600.0) -> Iterator[LiveRound | LiveStreamEnd]:
        """The rounds of a streamed exact toggle, ending with its `LiveStreamEnd`."""
        with self._expect(request.id) as box:
            with self._waiters_lock:
                self._streams.add(request.id)
            try:
                self.send(request)
                while True:
                    msg = self._next(box, timeout)
                    if not isinstance(msg, LiveRound | LiveStreamEnd):
                        raise BadGateway(f"live ablation worker answered a stream with {type(msg).__name__}")
                    yield msg
                    if isinstance(msg, LiveStreamEnd):
                        return
            finally:
                with self._waiters_lock:
                    self._streams.discard(request.id)

    def cancel(self, rid: str) -> None:
        """Stop a stream before its next batch (a no-op when it has ended or the worker is gone)."""
        with contextlib.suppress(Unavailable):
            self.send(LiveCancel(cancel=rid))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class LivePool:
    """Warm workers, least recently used closed first, within a count and a memory budget (see the module
    docstring); a dead worker is restarted on its next use."""

    def __init__(self, max_workers: int = 3, python: str | None = None, memory_mb: float | None = None) -> None:
        self.max_workers = max_workers
        self.memory_mb = memory_mb
        self.python = python
        self._workers: OrderedDict[str, LiveWorker] = OrderedDict()
        self._lock = threading.Lock()

    def _start(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> LiveWorker:
        while len(self._workers) >= self.max_workers:
            _, old = self._workers.popitem(last=False)
            old.close()
        w = LiveWorker(make_config(), self.python)
        self._workers[key] = w
        return w

    def _within_memory(self, keep: str) -> None:
        if self.memory_mb is None:
            return
        while len(self._workers) > 1 and sum(w.rss_mb() for w in self._workers.values()) > self.memory_mb:
            oldest = next(iter(self._workers))
            if oldest == keep:
                break
            self._workers.pop(oldest).close()

    def get(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> LiveWorker:
        """The worker for `key` (started, not necessarily ready); `make_config` is called only to start one."""
        with self._lock:
            w = self._workers.get(key)
            if w is not None and w.alive:
                self._workers.move_to_end(key)
            else:
                if w is not None:
                    self._workers.pop(key).close()
                w = self._start(key, make_config)
            self._within_memory(keep=key)
            return w

    def warm(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> LiveWorker:
        """Start the worker for `key` if none is running, without waiting for it; never evicts a worker that
        was used more recently than the warmed ones (it is put least recently used first)."""
        with self._lock:
            w = self._workers.get(key)
            if w is not None and w.alive:
                return w
            if w is not None:
                self._workers.pop(key).close()
            if len(self._workers) >= self.max_workers:
                return self._workers[next(reversed(self._workers))]  # full: warming must not evict
            w = LiveWorker(make_config(), self.python)
            self._workers[key] = w
            self._workers.move_to_end(key, last=False)
            return w

    def peek(self, key: str) -> LiveWorker | None:
        with self._lock:
            w = self._workers.get(key)
            return w if w is not None and w.alive else None

    def status(self) -> list[dict[str, Any]]:
        """Each worker, least recently used first: its key, whether ready, start-up time and memory."""
        with self._lock:
            return [{"key": k, "ready": w.ready, "startup_s": w.startup_s, "rss_mb": w.rss_mb(),
                     "model": w.info.model if w.info else None} for k, w in self._workers.items()]

    def close(self) -> None:
        with self._lock:
            for w in self._workers.values():
                w.close()
            self._workers.clear()


_POOL_LOCK = threading.Lock()


def get_live_pool(request: Request) -> LivePool:
    """The app's pool (made on first use; the app's lifespan closes it)."""
    with _POOL_LOCK:
        return _pool_of(request)


def _pool_of(request: Request) -> LivePool:
    pool: LivePool | None = getattr(request.app.state, "live_pool", None)
    if pool is None:
        settings = request.app.state.services.settings
        if settings.executor == "ray":  # one Serve deployment per session (app.ablation.serve_pool)
            from app.ablation.serve_pool import ServeLivePool

            token = settings.ray_token.get_secret_value() if settings.ray_token else None
            pool = request.app.state.live_pool = ServeLivePool(  # type: ignore[assignment]
                address=settings.ray_address, token=token, serve_url=settings.serve_url,
                ship_code=settings.ray_ship_code, max_workers=settings.live_max_sessions,
                num_cpus=settings.serve_num_cpus, gpu_fraction=settings.serve_gpu_fraction,
                idle_s=settings.serve_idle_s)
        else:
            pool = request.app.state.live_pool = LivePool(max_workers=settings.live_max_sessions,
                                                          memory_mb=settings.live_memory_mb, python=settings.python)
    assert pool is not None
    return pool


LivePoolDep = Annotated[LivePool, Depends(get_live_pool)]
