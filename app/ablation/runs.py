"""Live runs: one toggle as the user lives it, from the click to its last exact round.

A run asks its worker for the first-order estimate (set and layer-matched control) and, at the same time,
for the exact answer streamed round by round (set, then control). Pages and the API poll it by id. Timings
are measured from the request's arrival at the API, so they include every wait: the worker's start-up, its
queue, the estimator's build.

One run per channel (a signed-in user, the local user, or one share link): a newer toggle on a channel
supersedes the older, whose exact work is cancelled on the worker before its next batch. A run nobody
polls for `ABANDON_S` (a closed tab, an aborted request) is cancelled the same way. Every run that ended
with an estimate is recorded (estimate beside the exact answer so far; `app.ablation.records`); the
agreement page compares only complete ones.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import Depends, Request

from app.ablation.schemas import LiveRunOut
from app.core.errors import AppError, NotFound
from workers.contract.live import (
    LiveEstimateAnswer,
    LiveEstimateRequest,
    LiveRound,
    LiveStreamEnd,
    LiveStreamRequest,
)

if TYPE_CHECKING:
    from app.core.services import Services

ABANDON_S = 6.0
"""A watched run not polled for this long is cancelled (pages long-poll at most every 2 s)."""
KEEP_RUNS = 256
"""Finished runs kept for polling and links; older ones are forgotten (their records stay)."""


class StreamingWorker(Protocol):
    """What a run needs of `app.ablation.live.LiveWorker`."""

    @property
    def ready(self) -> bool: ...

    @property
    def startup_s(self) -> float | None: ...

    def estimate(self, request: LiveEstimateRequest, timeout: float = ...) -> tuple[LiveEstimateAnswer, float]: ...

    def stream(self, request: LiveStreamRequest, timeout: float = ...) -> Any: ...

    def cancel(self, rid: str) -> None: ...


@dataclass
class LiveRun:
    """One toggle's estimate and exact rounds, as they arrive (guarded by `cond`)."""

    id: str
    channel: str
    request: LiveStreamRequest
    meta: dict[str, Any]
    watched: bool
    created: float = field(default_factory=time.perf_counter)
    state: str = "running"  # running | done | cancelled | superseded | abandoned | failed
    worker_was_ready: bool = True
    startup_ms: float | None = None
    estimate: LiveEstimateAnswer | None = None
    estimate_ms: float | None = None
    estimate_error: str | None = None
    rounds: dict[str, LiveRound] = field(default_factory=dict)  # latest round per phase
    first_round_ms: float | None = None
    exact_ms: float | None = None
    control_ms: float | None = None
    total_ms: float | None = None
    rounds_computed: int | None = None
    ended: bool = False  # the worker confirmed the end (rounds_computed is final)
    error: str | None = None
    version: int = 0
    last_seen: float = field(default_factory=time.monotonic)
    cond: threading.Condition = field(default_factory=threading.Condition)

    @property
    def finished(self) -> bool:
        return self.state != "running"

    def since_ms(self) -> float:
        return 1000 * (time.perf_counter() - self.created)

    def touch(self) -> None:
        self.last_seen = time.monotonic()

    def changed(self) -> None:
        """Call with `cond` held."""
        self.version += 1
        self.cond.notify_all()

    def wait(self, since: int, timeout: float) -> None:
        """Until the run changes after version `since`, it has ended (its worker confirmed), or `timeout`."""
        with self.cond:
            self.cond.wait_for(lambda: self.version > since or (self.finished and self.ended), timeout)

    def wait_estimate(self, timeout: float) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.estimate is not None or self.estimate_error is not None
                               or self.finished, timeout)

    def timings(self) -> dict[str, float | None]:
        return {"startup_ms": self.startup_ms, "estimate_ms": self.estimate_ms,
                "first_round_ms": self.first_round_ms, "exact_ms": self.exact_ms, "control_ms": self.control_ms,
                "total_ms": self.total_ms}


Recorder = Callable[[LiveRun], object]


class LiveRuns:
    """The runs in flight and recently finished, by id, with one current run per channel."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder = recorder
        self._runs: OrderedDict[str, LiveRun] = OrderedDict()
        self._workers: dict[str, StreamingWorker] = {}
        self._by_channel: dict[str, str] = {}
        self._lock = threading.Lock()

    def start(self, *, worker: StreamingWorker, request: LiveStreamRequest, channel: str, meta: dict[str, Any],
              watched: bool = True) -> LiveRun:
        """Start a run (its estimate and its exact stream), superseding the channel's previous one."""
        run = LiveRun(id=request.id, channel=channel, request=request, meta=meta, watched=watched,
                      worker_was_ready=worker.ready)
        with self._lock:
            self._reap()
            old_id = self._by_channel.get(channel)
            self._by_channel[channel] = run.id
            self._runs[run.id] = run
            self._workers[run.id] = worker
            while len(self._runs) > KEEP_RUNS:
                gone, _ = self._runs.popitem(last=False)
                self._workers.pop(gone, None)
        if old_id is not None:
            self.stop(old_id, "superseded")
        threading.Thread(target=self._estimate, args=(run, worker), daemon=True, name=f"est-{run.id[:8]}").start()
        threading.Thread(target=self._stream, args=(run, worker), daemon=True, name=f"run-{run.id[:8]}").start()
        return run

    def get(self, rid: str, channel: str | None = None) -> LiveRun:
        """A run by id (404 when unknown, forgotten, or another channel's); polling it keeps it alive."""
        with self._lock:
            self._reap()
            run = self._runs.get(rid)
        if run is None or (channel is not None and run.channel != channel):
            raise NotFound(f"no live run {rid!r} (finished runs are kept for a while, then only their records)")
        run.touch()
        return run

    def of_channel(self, channel: str, where: Callable[[LiveRun], bool] = lambda run: True) -> list[LiveRun]:
        """The kept runs of a channel (oldest first) that `where` accepts; reading them keeps them alive."""
        with self._lock:
            self._reap()
            found = [r for r in self._runs.values() if r.channel == channel and where(r)]
        for r in found:
            r.touch()
        return found

    def stop(self, rid: str, why: str = "cancelled") -> None:
        """Cancel a run's exact work on its worker (it ends with state `why`)."""
        with self._lock:
            run, worker = self._runs.get(rid), self._workers.get(rid)
        if run is None or worker is None:
            return
        with run.cond:
            if run.finished:
                return
            run.state = why
            run.changed()
        worker.cancel(rid)

    def _reap(self) -> None:
        """Cancel watched runs nobody polls any more (called with the lock held)."""
        now = time.monotonic()
        stale = [r.id for r in self._runs.values() if r.watched and not r.finished and now - r.last_seen > ABANDON_S]
        for rid in stale:
            threading.Thread(target=self.stop, args=(rid, "abandoned"), daemon=True).start()

    # -- the run's two threads
    def _estimate(self, run: LiveRun, worker: StreamingWorker) -> None:
        req = LiveEstimateRequest(id=f"{run.id}.e", neurons=run.request.neurons, mode=run.request.mode,
                                  factor=run.request.factor, control=run.request.control)
        try:
            answer, _ = worker.estimate(req)
            with run.cond:
                run.estimate, run.estimate_ms = answer, run.since_ms()
                run.changed()
        except AppError as exc:
            with run.cond:
                run.estimate_error = exc.message
                run.changed()

    def _stream(self, run: LiveRun, worker: StreamingWorker) -> None:
        try:
            for msg in worker.stream(run.request):
                with run.cond:
                    if run.startup_ms is None and not run.worker_was_ready and worker.startup_s is not None:
                        run.startup_ms = 1000 * worker.startup_s
                    if isinstance(msg, LiveRound):
                        run.rounds[msg.phase] = msg
                        if msg.phase == "set" and run.first_round_ms is None:
                            run.first_round_ms = run.since_ms()
                        if msg.final:
                            if msg.phase == "set":
                                run.exact_ms = run.since_ms()
                            else:
                                run.control_ms = run.since_ms()
                    elif isinstance(msg, LiveStreamEnd):
                        run.rounds_computed, run.ended = msg.rounds_computed, True
                        run.total_ms = run.since_ms()
                        if not run.finished:
                            run.state = "done" if msg.end == "done" else "cancelled"
                    run.changed()
        except AppError as exc:
            with run.cond:
                run.error, run.ended = exc.message, True
                if not run.finished:
                    run.state = "failed"
                run.changed()
        if run.state != "failed" and self.recorder is not None:
            run.wait_estimate(30.0)
            try:
                self.recorder(run)
            except Exception:  # a failed record never breaks the toggle; the run keeps its answers
                import logging

                logging.getLogger(__name__).exception("could not record live run %s", run.id)


# -- for the routes ----------------------------------------------------------------------------------------
def live_channel(request: Request) -> str:
    """Whose toggles supersede each other: one user (all their tabs), the local user, or one share link."""
    actor = getattr(request.state, "actor", None)
    if actor is None:
        return "anonymous"
    return f"{actor.kind}:{actor.name}:{actor.share_token or ''}"


def get_live_runs(request: Request) -> LiveRuns:
    """The app's live runs (made on first use), recording finished runs for the agreement page."""
    with _RUNS_LOCK:
        runs: LiveRuns | None = getattr(request.app.state, "live_runs", None)
        if runs is None:
            from app.ablation.records import record_run

            services: Services = request.app.state.services
            runs = request.app.state.live_runs = LiveRuns(recorder=lambda run: record_run(services.db, run))
        return runs


_RUNS_LOCK = threading.Lock()
LiveRunsDep = Annotated[LiveRuns, Depends(get_live_runs)]
def run_out(run: LiveRun) -> LiveRunOut:
    """A run as the API answers it."""
    with run.cond:
        m = run.meta
        return LiveRunOut(id=run.id, state=run.state, version=run.version, checkpoint=m["checkpoint"],
                          n_neurons=m["n_neurons"], neurons=m["neurons"], mode=m["mode"], factor=m["factor"],
                          estimate=run.estimate, exact=run.rounds.get("set"), control=run.rounds.get("control"),
                          rounds_computed=run.rounds_computed, ended=run.ended, timings=run.timings(),
                          worker_was_ready=run.worker_was_ready, error=run.error, estimate_error=run.estimate_error)


