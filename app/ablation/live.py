"""Live ablation: one long-lived worker process per checkpoint, spoken to in JSON lines over a pipe.

The web process stays torch-free; the worker keeps the RM and its probe set warm and answers each
toggle with the per-objective shift. Processes are kept in a small LRU pool and restarted if they die.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ValidationError

from app.core.errors import BadGateway, Invalid, Unavailable
from workers.contract.live import (
    LiveAnswer,
    LiveError,
    LiveEstimateAnswer,
    LiveEstimateRequest,
    LiveReady,
    LiveSessionConfig,
    LiveToggleRequest,
)

M = TypeVar("M", bound=BaseModel)


class LiveTimedAnswer(BaseModel):
    """A worker's answer and the round trip the API measured around it."""

    answer: LiveAnswer
    roundtrip_ms: float


class LiveWorker:
    """One `python -m workers.live` process speaking the typed protocol of `workers.contract.live`."""

    def __init__(self, config: LiveSessionConfig, python: str | None = None, start_timeout: float = 300.0) -> None:
        root = Path(__file__).resolve().parents[2]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen(
            [python or sys.executable, "-m", "workers.live"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1, cwd=str(root), env=env, start_new_session=True)
        self.lock = threading.Lock()
        self.config = config
        first = self._call(config, LiveReady, timeout=start_timeout)
        if isinstance(first, LiveError):
            self.close()
            raise Invalid(f"live ablation worker could not start: {first.error}")
        self.info: LiveReady = first

    def _call(self, payload: BaseModel, answer: type[M], timeout: float = 120.0) -> M | LiveError:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            if self.proc.poll() is not None:
                raise Unavailable("live ablation worker is not running")
            self.proc.stdin.write(payload.model_dump_json() + "\n")
            self.proc.stdin.flush()
            result: list[str] = []
            reader = threading.Thread(target=lambda: result.append(self.proc.stdout.readline()))  # type: ignore[union-attr]
            reader.start()
            reader.join(timeout)
            if not result or not result[0]:
                self.close()
                raise Unavailable("live ablation worker did not answer")
        try:
            return answer.model_validate_json(result[0])
        except ValidationError:
            try:
                return LiveError.model_validate_json(result[0])
            except ValidationError as exc:
                raise BadGateway(f"live ablation worker sent an unexpected message: {exc}") from exc

    def toggle(self, request: LiveToggleRequest) -> LiveTimedAnswer:
        started = time.perf_counter()
        out = self._call(request, LiveAnswer)
        if isinstance(out, LiveError):
            raise Invalid(out.error)
        return LiveTimedAnswer(answer=out, roundtrip_ms=1000 * (time.perf_counter() - started))

    def estimate(self, request: LiveEstimateRequest) -> tuple[LiveEstimateAnswer, float]:
        """The first-order estimate of a toggle and the round trip (ms); the first call builds the estimator."""
        started = time.perf_counter()
        out = self._call(request, LiveEstimateAnswer)
        if isinstance(out, LiveError):
            raise Invalid(out.error)
        return out, 1000 * (time.perf_counter() - started)

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class LivePool:
    """At most `max_workers` warm workers, least recently used closed first; a dead worker is restarted."""

    def __init__(self, max_workers: int = 2, python: str | None = None) -> None:
        self.max_workers = max_workers
        self.python = python
        self._workers: OrderedDict[str, LiveWorker] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> LiveWorker:
        """The warm worker for `key`; `make_config` is called only when one has to be started."""
        with self._lock:
            w = self._workers.get(key)
            if w is not None and w.alive:
                self._workers.move_to_end(key)
                return w
            while len(self._workers) >= self.max_workers:
                _, old = self._workers.popitem(last=False)
                old.close()
            w = LiveWorker(make_config(), self.python)
            self._workers[key] = w
            return w

    def close(self) -> None:
        with self._lock:
            for w in self._workers.values():
                w.close()
            self._workers.clear()


def get_live_pool(request: Request) -> LivePool:
    """The app's pool (made on first use; the app's lifespan closes it)."""
    pool: LivePool | None = getattr(request.app.state, "live_pool", None)
    if pool is None:
        pool = request.app.state.live_pool = LivePool(python=request.app.state.services.settings.python)
    return pool


LivePoolDep = Annotated[LivePool, Depends(get_live_pool)]
