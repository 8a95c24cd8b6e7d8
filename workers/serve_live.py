"""Live ablation as a Ray Serve deployment: one application per warm session (checkpoint, probe set, hook).

The replica runs the same `workers.live.LiveCore` as `python -m workers.live`; only the carrier differs:
HTTP through Serve's proxy instead of JSON lines on a pipe. Every body is one of the typed messages of
`workers.contract.live`, as JSON:

* `GET  <prefix>/ready?wait=S`: `LiveReady` (200) once the session is set up; `{"starting": true}` (503) while
  it loads (after waiting up to S seconds, at most 30); a `LiveError` (500) when it could not start;
* `POST <prefix>/estimate` `LiveEstimateRequest` → `LiveEstimateAnswer` (before the model is loaded when the
  estimator table was cached);
* `POST <prefix>/toggle` `LiveToggleRequest` → `LiveAnswer`;
* `POST <prefix>/stream` `LiveStreamRequest` → JSON lines: `LiveRound`… then `LiveStreamEnd` (a client that
  goes away before the end cancels the stream);
* `POST <prefix>/cancel` `LiveCancel` → `{}`: the stream stops before its next batch;
* `GET  <prefix>/status` → `{"ready", "pid", "rss_mb", "torch_threads"}` of the replica.

A request that fails validation or computation is answered with a `LiveError` carrying its id (422). The
session lives in one replica, so the application runs at most one (a cancel must reach the replica running
the stream); Serve scales it to zero when idle and back to one on the next request, whose answer then waits
for the model load. The API (`app.ablation.serve_pool`) writes the declarative config: the application's
`args` are `{"config": LiveSessionConfig}`, and its deployment options (`max_ongoing_requests` high enough that
estimates and cancels pass a running stream; autoscaling; CPUs and GPU fraction) are the config's.

No torch or model is imported until the replica starts its session; this module imports only Ray Serve and
Starlette (the HTTP layer Serve hands requests in), never the control plane.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from workers.contract.live import LiveError, LiveReady, LiveSessionConfig, LiveStreamEnd
from workers.live import LiveCore

DEPLOYMENT = "LiveSession"
MAX_READY_WAIT_S = 30.0
ANSWER_TIMEOUT_S = 600.0
"""The longest an answer may take (an exact toggle queued behind others on a slow node)."""


class Router:
    """Routes the core's messages to the request waiting for their id; remembers `LiveReady` or the start error."""

    def __init__(self) -> None:
        self.ready = threading.Event()
        self.info: LiveReady | None = None
        self.start_error: str | None = None
        self._lock = threading.Lock()
        self._boxes: dict[str, queue.Queue[BaseModel]] = {}

    def send(self, message: BaseModel) -> None:
        if isinstance(message, LiveReady):
            self.info = message
            self.ready.set()
            return
        rid = getattr(message, "id", None)
        if rid is None and isinstance(message, LiveError):
            self.start_error = message.error
            self.ready.set()
            return
        with self._lock:
            box = self._boxes.get(str(rid))
        if box is not None:
            box.put(message)

    @contextlib.contextmanager
    def expect(self, rid: str) -> Iterator[queue.Queue[BaseModel]]:
        box: queue.Queue[BaseModel] = queue.Queue()
        with self._lock:
            self._boxes[rid] = box
        try:
            yield box
        finally:
            with self._lock:
                self._boxes.pop(rid, None)


def _rss_mb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 2**20


def _torch_threads() -> int | None:
    """torch's intra-op threads once the session imported it (Ray sets OMP_NUM_THREADS from the replica's CPUs)."""
    import sys

    torch = sys.modules.get("torch")
    return None if torch is None else int(torch.get_num_threads())


def _message(msg: BaseModel) -> Response:
    status = 422 if isinstance(msg, LiveError) else 200
    return Response(msg.model_dump_json(), status_code=status, media_type="application/json")


@serve.deployment(name=DEPLOYMENT, max_ongoing_requests=64)
class LiveSession:
    """One warm live session; see the module docstring for its endpoints."""

    def __init__(self, config: dict[str, Any]) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        self.router = Router()
        self.core = LiveCore(LiveSessionConfig.model_validate(config), self.router.send).start()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.core.close()

    async def __call__(self, request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        what = request.url.path.rstrip("/").rsplit("/", 1)[-1]
        if request.method == "GET" and what == "ready":
            wait = min(float(request.query_params.get("wait", 0) or 0), MAX_READY_WAIT_S)
            return await run_in_threadpool(self._ready, wait)
        if request.method == "GET" and what == "status":
            return JSONResponse({"ready": self.router.info is not None, "pid": os.getpid(), "rss_mb": _rss_mb(),
                                 "torch_threads": _torch_threads()})
        if request.method != "POST" or what not in ("estimate", "toggle", "stream", "cancel"):
            return JSONResponse({"error": f"no endpoint {request.method} {what!r}"}, status_code=404)
        try:
            raw = json.loads(await request.body())
        except ValueError as exc:
            return _message(LiveError(error=f"invalid request: {exc}"))
        if not isinstance(raw, dict):
            return _message(LiveError(error="invalid request: not a JSON object"))
        if what == "cancel":
            self.core.handle(raw if "cancel" in raw else {"cancel": raw.get("id")})
            return JSONResponse({})
        # The body says which request it is (as on the pipe); the path only has to agree with it.
        raw = {k: v for k, v in raw.items() if k not in ("estimate", "stream")}
        if what == "estimate":
            raw["estimate"] = True
        elif what == "stream":
            raw["stream"] = True
            return StreamingResponse(self._stream(raw), media_type="application/x-ndjson")
        return await run_in_threadpool(self._answer, raw)

    def _ready(self, wait: float) -> Response:
        self.router.ready.wait(wait)
        if self.router.info is not None:
            return _message(self.router.info)
        if self.router.start_error is not None:
            return Response(LiveError(error=self.router.start_error).model_dump_json(), status_code=500,
                            media_type="application/json")
        return JSONResponse({"starting": True}, status_code=503)

    def _answer(self, raw: dict[str, Any]) -> Response:
        import uuid

        rid = raw.get("id") if isinstance(raw.get("id"), str) else None
        raw["id"] = rid = rid or uuid.uuid4().hex
        with self.router.expect(rid) as box:
            self.core.handle(raw)
            try:
                return _message(box.get(timeout=ANSWER_TIMEOUT_S))
            except queue.Empty:
                return _message(LiveError(id=rid, error=f"no answer within {ANSWER_TIMEOUT_S:.0f} s"))

    def _stream(self, raw: dict[str, Any]) -> Iterator[str]:
        rid = raw.get("id")
        if not isinstance(rid, str):
            yield LiveError(error="invalid request: a stream needs an id").model_dump_json() + "\n"
            return
        ended = False
        with self.router.expect(rid) as box:
            self.core.handle(raw)
            try:
                while True:
                    msg = box.get(timeout=ANSWER_TIMEOUT_S)
                    ended = isinstance(msg, LiveStreamEnd | LiveError)
                    yield msg.model_dump_json() + "\n"
                    if ended:
                        return
            except queue.Empty:
                yield LiveError(id=rid, error=f"no round within {ANSWER_TIMEOUT_S:.0f} s").model_dump_json() + "\n"
            finally:
                if not ended:  # the client went away (or timed out): stop the work
                    self.core.handle({"cancel": rid})


def build(args: dict[str, Any]) -> Any:
    """The application builder Serve calls with the config's `args`: `{"config": LiveSessionConfig as JSON}`."""
    config = LiveSessionConfig.model_validate(args["config"])
    return LiveSession.bind(config.model_dump(mode="json"))  # type: ignore[attr-defined]
