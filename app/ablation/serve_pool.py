"""Live sessions on Ray Serve (executor `ray`): one Serve application per warm session, spoken to over HTTP.

The same interface as `app.ablation.live.LivePool`/`LiveWorker`, so runs, the dial and the pages do not know
which carries a toggle. A session is the Serve application of `workers.serve_live` for one pool key
(checkpoint, probe size, hook): the replica keeps the RM warm and answers the typed live protocol over
Serve's HTTP proxy (`TENSION_SERVE_URL`): estimates, exact toggles, rounds streamed as JSON lines, cancels.

Deployment: through the dashboard's Serve REST API (`PUT /api/serve/applications/`, the whole declarative
config; other applications, other checkpoints' included, are read back and kept), never `ray.init()`, with
`TENSION_RAY_TOKEN` as a bearer token (also sent to the proxy, which under Ray 2.60's token authentication
checks none: keep the proxy's port off untrusted networks). The application is named from the key and the
artifact store (`live-<hash>`, also its route prefix). Its one deployment asks for `TENSION_SERVE_NUM_CPUS` CPUs
(the replica's torch threads: their floor, at least one) and, when above 0, `TENSION_SERVE_GPU_FRACTION` of a
GPU; it runs at most one replica (the session's state, and the stream a cancel must reach, live in it) and Serve
scales it to zero after `TENSION_SERVE_IDLE_S` without requests, back to one on the next request. The code
reaches the replica as with Ray jobs (`TENSION_RAY_SHIP_CODE`): the `workers` package zipped and uploaded to the
cluster's GCS once per content hash (`gcs://` py_modules URI); off, the nodes must have it installed. An
uploaded package no replica holds may be dropped by the cluster, so a session re-uploads it (when missing)
before waking a scaled-down replica.

Cold starts are counted honestly: `startup_s` runs from the deploy (or from the first request after the
replica was scaled to zero) to `LiveReady`, so a toggle that paid for a scale-up reports it like a first start.
`close()` removes the application (eviction, API shutdown); the proxy keeps running.

Serve's HTTP options cannot change once Serve runs: the first deploy starts its proxy on the head node at
the port of `TENSION_SERVE_URL` (bound to that host when it is a loopback address, else to all interfaces);
a Serve already listening elsewhere is refused with a message naming both ports.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ValidationError

from app.ablation.live import LiveTimedAnswer, SessionStart, _parse, new_request_id
from app.core.errors import BadGateway, Invalid, Unavailable
from app.core.ray_cluster import alive_node_totals, bearer_headers, shipped_code, worker_env
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

IMPORT_PATH = "workers.serve_live:build"
DEPLOYMENT = "LiveSession"  # workers.serve_live.DEPLOYMENT (not imported: that module needs ray.serve)
APP_PREFIX = "live-"
MAX_ONGOING = 64
PACKAGE_CHECK_S = 30.0
"""How long a checked package upload is trusted before a scale-up checks it again."""


def app_name(key: str, store_url: str) -> str:
    """The Serve application (and route prefix) of a pool key in an artifact store."""
    return APP_PREFIX + hashlib.sha256(f"{store_url}\0{key}".encode()).hexdigest()[:16]


class ServeAdmin:
    """The dashboard's Serve REST API and package upload, with the bearer token. Read-modify-write of the
    declarative config is serialised within this process (other writers are not locked out: the last PUT
    wins, so two API processes deploying at the same instant can drop each other's new application; the
    loser redeploys on its next use)."""

    def __init__(self, address: str, token: str | None, serve_url: str, ship_code: bool = True) -> None:
        self.address = address.rstrip("/")
        self.headers = bearer_headers(token)
        self.serve_url = serve_url.rstrip("/")
        self.ship_code = ship_code
        self._lock = threading.Lock()
        self._package: tuple[float, str] | None = None
        self._http = httpx.Client(headers=self.headers, timeout=30.0)

    def __repr__(self) -> str:  # never the token
        return f"ServeAdmin({self.address!r}, serve_url={self.serve_url!r})"

    def _refused(self, r: httpx.Response) -> Unavailable:
        if r.status_code in (401, 403):
            return Unavailable(f"the Ray dashboard at {self.address} refused the API's request (HTTP "
                               f"{r.status_code}): set TENSION_RAY_TOKEN to the cluster's RAY_AUTH_TOKEN")
        return Unavailable(f"the Ray dashboard at {self.address} answered HTTP {r.status_code} to a Serve "
                           f"request: {r.text[:500]}")

    def details(self) -> dict[str, Any]:
        """Serve's instance details (`GET /api/serve/applications/`): http options, applications and replicas."""
        try:
            r = self._http.get(f"{self.address}/api/serve/applications/")
        except httpx.HTTPError as exc:
            raise Unavailable(f"the Ray dashboard at {self.address} could not be reached: {exc}") from exc
        if r.status_code != 200:
            raise self._refused(r)
        return dict(r.json())

    def replicas(self, name: str, details: dict[str, Any] | None = None) -> int | None:
        """Running replicas of an application; None when it is not deployed."""
        app = (details or self.details()).get("applications", {}).get(name)
        if app is None or app.get("status") in ("DELETING",):
            return None
        deps = app.get("deployments") or {}
        return sum(1 for d in deps.values() for rep in d.get("replicas") or [] if rep.get("state") == "RUNNING")

    def _http_options(self, details: dict[str, Any]) -> dict[str, Any]:
        url = urlsplit(self.serve_url)
        port = url.port or 80
        running = details.get("controller_info", {}).get("node_id") and details.get("http_options")
        if running and int(running.get("port", port)) != port:
            raise Unavailable(f"Ray Serve already listens on port {running.get('port')} of the cluster, but "
                              f"TENSION_SERVE_URL says {port}; its HTTP options cannot change while it runs")
        host = url.hostname or "127.0.0.1"
        return {"host": host if host in ("127.0.0.1", "localhost", "::1") else "0.0.0.0", "port": port}

    def _put(self, details: dict[str, Any], apps: list[dict[str, Any]]) -> None:
        body = {"proxy_location": "HeadOnly", "http_options": self._http_options(details), "applications": apps}
        r = self._http.put(f"{self.address}/api/serve/applications/", json=body)
        if r.status_code != 200:
            raise self._refused(r)

    @staticmethod
    def _configs(details: dict[str, Any], without: set[str]) -> list[dict[str, Any]]:
        return [dict(a["deployed_app_config"]) for n, a in (details.get("applications") or {}).items()
                if n not in without and a.get("deployed_app_config") and a.get("status") != "DELETING"]

    def deploy(self, app: dict[str, Any]) -> bool:
        """Add or update one application, keeping the others; whether the config had to change."""
        with self._lock:
            details = self.details()
            now = (details.get("applications") or {}).get(app["name"]) or {}
            current = now.get("deployed_app_config")
            if current is not None and now.get("status") != "DELETING" and _same(current, app):
                return False
            self._put(details, [*self._configs(details, {app["name"]}), app])
            return True

    def remove(self, names: set[str]) -> None:
        """Delete these applications, keeping the others (a no-op for names not deployed)."""
        if not names:
            return
        with self._lock:
            details = self.details()
            if not names & set(details.get("applications") or {}):
                return
            self._put(details, self._configs(details, names))

    def py_modules(self) -> list[str] | None:
        """The `workers` package as a `gcs://` URI, uploaded through the dashboard when the cluster lacks it
        (checked at most every PACKAGE_CHECK_S); None when code shipping is off."""
        if not self.ship_code:
            return None
        now = time.monotonic()
        if self._package is not None and now - self._package[0] < PACKAGE_CHECK_S:
            return [self._package[1]]
        from ray.job_submission import JobSubmissionClient  # the Jobs SDK's uploader: zip, hash, PUT

        env = shipped_code()
        try:
            JobSubmissionClient(self.address, headers=self.headers or None)._upload_py_modules_if_needed(env)
        except Exception as exc:
            raise Unavailable(f"could not upload the worker code to the Ray cluster at {self.address}: {exc}") \
                from exc
        self._package = (now, str(env["py_modules"][0]))
        return [self._package[1]]

    def close(self) -> None:
        self._http.close()


def _json(r: httpx.Response) -> dict[str, Any]:
    try:
        body = r.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _same(deployed: dict[str, Any], wanted: dict[str, Any]) -> bool:
    """Whether a deployed application's config already is the wanted one (on the keys we set)."""
    return all(json.dumps(deployed.get(k), sort_keys=True) == json.dumps(v, sort_keys=True)
               for k, v in wanted.items())


def app_config(*, name: str, config: LiveSessionConfig, py_modules: list[str] | None, num_cpus: float,
               gpu_fraction: float, idle_s: float) -> dict[str, Any]:
    """The declarative config of one live session's Serve application."""
    runtime_env: dict[str, Any] = {"env_vars": worker_env()}
    if py_modules:
        runtime_env["py_modules"] = py_modules
    actor: dict[str, Any] = {"num_cpus": num_cpus}
    if gpu_fraction > 0:
        actor["num_gpus"] = gpu_fraction
    return {"name": name, "route_prefix": f"/{name}", "import_path": IMPORT_PATH,
            "args": {"config": config.model_dump(mode="json")}, "runtime_env": runtime_env,
            "deployments": [{"name": DEPLOYMENT, "max_ongoing_requests": MAX_ONGOING, "ray_actor_options": actor,
                             "autoscaling_config": {"min_replicas": 0, "initial_replicas": 1, "max_replicas": 1,
                                                    "target_ongoing_requests": MAX_ONGOING,
                                                    "upscale_delay_s": 0.0, "downscale_delay_s": idle_s,
                                                    "look_back_period_s": min(30.0, idle_s)}}]}


class ServeSession(SessionStart):
    """One live session as a Serve application; the interface of `app.ablation.live.LiveWorker`.

    Construction deploys in the background and returns; `wait_ready()` waits for the replica's `LiveReady`.
    Estimates may be answered before that (from a cached estimator table), once the route is up."""

    noun = "the live session's Serve replica"

    def __init__(self, admin: ServeAdmin, name: str, config: LiveSessionConfig, *, num_cpus: float,
                 gpu_fraction: float, idle_s: float, start_timeout: float = 600.0) -> None:
        self.admin, self.name, self.config = admin, name, config
        self.num_cpus, self.gpu_fraction, self.idle_s = num_cpus, gpu_fraction, idle_s
        self.start_timeout = start_timeout
        self.url = f"{admin.serve_url}/{name}"
        self.spawned_at = time.perf_counter()
        self.ready_at: float | None = None
        self.info: LiveReady | None = None
        self.start_error: str | None = None
        self.scale_ups = 0  # times a scaled-down replica was woken
        self._rss_mb = 0.0
        self._ready = threading.Event()
        self._routable = threading.Event()  # the proxy routes to the application (its replica may be loading)
        self._lock = self._streams_lock = threading.Lock()
        self._streams: set[str] = set()
        self._cancelled: set[str] = set()  # streams cancelled here, maybe before their request reached Serve
        self._last_used = time.monotonic()
        self._closed = False
        self._http = httpx.Client(headers=admin.headers, timeout=httpx.Timeout(600.0, connect=10.0),
                                  limits=httpx.Limits(max_connections=MAX_ONGOING))
        threading.Thread(target=self._start, args=(True,), daemon=True, name=f"serve-{name}").start()

    # -- start-up and scale-up
    def _check_placeable(self) -> None:
        """Refuse a session no alive node could ever hold (Serve would keep its replica pending forever and the
        toggle would wait out the start-up timeout), naming the resource and its setting."""
        wanted = {"CPU": (self.num_cpus, "TENSION_SERVE_NUM_CPUS")}
        if self.gpu_fraction > 0:
            wanted["GPU"] = (self.gpu_fraction, "TENSION_SERVE_GPU_FRACTION")
        try:
            nodes = alive_node_totals(self.admin.address, self.admin.headers)
        except (httpx.HTTPError, KeyError, ValueError):
            return  # the deploy that follows reports an unreachable or refusing dashboard
        for name, (amount, setting) in wanted.items():
            most = max((n.get(name, 0.0) for n in nodes), default=0.0)
            if most < amount:
                raise Unavailable(f"no node of the Ray cluster at {self.admin.address} has {name} {amount:g} for a "
                                   f"live session (the most any of its {len(nodes)} alive nodes has is {most:g}); "
                                   f"lower {setting}")

    def _deploy(self) -> None:
        self._check_placeable()
        self.admin.deploy(app_config(name=self.name, config=self.config, py_modules=self.admin.py_modules(),
                                     num_cpus=self.num_cpus, gpu_fraction=self.gpu_fraction, idle_s=self.idle_s))

    def _start(self, deploy: bool) -> None:
        try:
            if deploy:
                self._deploy()
            self._wait_for_replica()
        except Exception as exc:  # Unavailable from the dashboard, or anything unexpected
            self.start_error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            self._routable.set()
            self._ready.set()

    def _failed(self) -> str | None:
        """Serve's message when the application could not be deployed (e.g. its replica's constructor raised)."""
        app = self.admin.details().get("applications", {}).get(self.name) or {}
        if app.get("status") == "DEPLOY_FAILED":
            return str(app.get("message") or "the Serve application could not be deployed")[-2000:]
        return None

    def _wait_for_replica(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        checked = time.monotonic()
        while not self._closed and time.monotonic() < deadline:
            if time.monotonic() - checked > 2.0:
                checked = time.monotonic()
                failed = self._failed()
                if failed:
                    raise RuntimeError(failed)
            try:
                r = self._http.get(f"{self.url}/ready", params={"wait": 10}, timeout=60.0)
            except httpx.HTTPError:  # the proxy itself is starting
                time.sleep(0.25)
                continue
            body = _json(r)
            if r.status_code == 200 and body.get("ready") is True:
                self.info = LiveReady.model_validate(body)
                self.ready_at = time.perf_counter()
                self._last_used = time.monotonic()
                self._routable.set()
                self._ready.set()
                return
            if r.status_code == 500 and "error" in body:  # the replica's own: its session could not start
                raise RuntimeError(LiveError.model_validate(body).error)
            if r.status_code == 503 and body.get("starting") is True:  # the replica's own: it is loading
                self._routable.set()
                continue
            # Anything else is the proxy's: no route yet, or the application's state not yet propagated (a
            # re-created application can briefly answer for its deleted namesake).
            time.sleep(0.2)
        if not self._closed:
            raise TimeoutError(f"the Serve replica was not ready within {self.start_timeout:.0f} s")

    def refresh(self, details: dict[str, Any] | None = None) -> None:
        """After an idle spell, see whether Serve scaled the replica down (or the application went); if so,
        wake it (redeploying when it went), counting the wake-up as a start-up."""
        if not self._ready.is_set() or self.start_error is not None:
            return
        if time.monotonic() - self._last_used < min(self.idle_s / 2, 30.0):
            return
        with self._lock:
            if self._streams:
                return
        try:
            n = self.admin.replicas(self.name, details)
        except Unavailable:  # the dashboard is away: try the proxy as if warm (its answer will tell)
            return
        if n:
            self._last_used = time.monotonic()
            return
        with self._lock:
            self._ready.clear()
            self._routable.clear()
            self.info, self.ready_at, self.spawned_at = None, None, time.perf_counter()
            self.scale_ups += 1
        if n is not None:
            self.admin.py_modules()  # the package may have gone with the last replica: re-upload it first
        threading.Thread(target=self._start, args=(n is None,), daemon=True, name=f"serve-{self.name}").start()

    # -- state
    @property
    def alive(self) -> bool:
        return self.start_error is None and not self._closed

    def rss_mb(self) -> float:
        """The replica's resident memory as last asked (`status()` of the pool asks running replicas)."""
        return self._rss_mb

    def ask_rss(self) -> float:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            r = self._http.get(f"{self.url}/status", timeout=5.0)
            if r.status_code == 200:
                self._rss_mb = float(r.json()["rss_mb"])
        return self._rss_mb

    # -- requests
    def _routed(self, timeout: float) -> None:
        if not self._routable.wait(timeout):
            raise Unavailable("the live session's Serve application is still being deployed")
        if self.start_error is not None:
            raise Invalid(f"the live session's Serve replica could not start: {self.start_error}")

    def _post(self, what: str, message: BaseModel, timeout: float) -> Any:
        try:
            r = self._http.post(f"{self.url}/{what}", content=message.model_dump_json(),
                                headers={"content-type": "application/json"}, timeout=timeout)
        except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: the session was closed meanwhile
            raise Unavailable(f"the live session's Serve replica did not answer: {exc}") from exc
        return self._message(r.status_code, r.text)

    def _message(self, status: int, text: str) -> Any:
        try:
            raw = json.loads(text)
            msg = _parse(raw) if isinstance(raw, dict) else None
        except (ValueError, ValidationError):
            msg = None
        if isinstance(msg, LiveError):
            raise Invalid(msg.error)
        if msg is None or status != 200:
            raise Unavailable(f"the live session's Serve application answered HTTP {status}: {text[:300]}")
        self._last_used = time.monotonic()
        return msg

    def estimate(self, request: LiveEstimateRequest, timeout: float = 300.0) -> tuple[LiveEstimateAnswer, float]:
        started = time.perf_counter()
        self._routed(timeout)
        req = request if request.id else request.model_copy(update={"id": new_request_id()})
        msg = self._post("estimate", req, timeout)
        if not isinstance(msg, LiveEstimateAnswer):
            raise BadGateway(f"the Serve replica answered an estimate with {type(msg).__name__}")
        return msg, 1000 * (time.perf_counter() - started)

    def toggle(self, request: LiveToggleRequest, timeout: float = 600.0) -> LiveTimedAnswer:
        self.wait_ready()
        started = time.perf_counter()
        req = request if request.id else request.model_copy(update={"id": new_request_id()})
        msg = self._post("toggle", req, timeout)
        if not isinstance(msg, LiveAnswer):
            raise BadGateway(f"the Serve replica answered a toggle with {type(msg).__name__}")
        return LiveTimedAnswer(answer=msg, roundtrip_ms=1000 * (time.perf_counter() - started))

    def stream(self, request: LiveStreamRequest, timeout: float = 600.0) -> Iterator[LiveRound | LiveStreamEnd]:
        """The rounds of a streamed exact toggle, read line by line from the replica's streaming answer."""
        with self._lock:
            self._streams.add(request.id)
        ended = False
        try:
            self._routed(timeout)
            with self._lock:
                cancelled = request.id in self._cancelled
            if cancelled:  # while the application was starting: the replica ends it at once, cancelled
                self._post_cancel(request.id)
            try:
                with self._http.stream("POST", f"{self.url}/stream", content=request.model_dump_json(),
                                       headers={"content-type": "application/json"}, timeout=timeout) as r:
                    if r.status_code != 200:
                        self._message(r.status_code, r.read().decode(errors="replace"))
                    for line in r.iter_lines():
                        if not line.strip():
                            continue
                        msg = self._message(200, line)
                        if not isinstance(msg, LiveRound | LiveStreamEnd):
                            raise BadGateway(f"the Serve replica answered a stream with {type(msg).__name__}")
                        ended = isinstance(msg, LiveStreamEnd)
                        yield msg
                        if ended:
                            return
            except (httpx.HTTPError, RuntimeError) as exc:  # RuntimeError: the session was closed meanwhile
                raise Unavailable(f"the live session's Serve replica stopped while answering: {exc}") from exc
            raise Unavailable("the live session's Serve replica ended the stream without its end")
        finally:
            with self._lock:
                self._streams.discard(request.id)
                self._cancelled.discard(request.id)
            self._last_used = time.monotonic()
            if not ended:
                self._post_cancel(request.id)

    def cancel(self, rid: str) -> None:
        """Stop a stream before its next batch (a no-op when it has ended or the replica is gone). A stream
        still waiting for its application to come up is cancelled as soon as it reaches the replica."""
        with self._lock:
            if rid in self._streams:
                self._cancelled.add(rid)
        if self._routable.is_set():
            self._post_cancel(rid)

    def _post_cancel(self, rid: str) -> None:
        if self.start_error is None and not self._closed:
            with contextlib.suppress(httpx.HTTPError, RuntimeError):  # RuntimeError: the session was closed
                self._http.post(f"{self.url}/cancel", content=LiveCancel(cancel=rid).model_dump_json(),
                                headers={"content-type": "application/json"}, timeout=10.0)

    def close(self, remove: bool = True) -> None:
        """Remove the application from Serve (its replica stops) unless `remove` is False."""
        self._closed = True
        if remove:
            with contextlib.suppress(Unavailable):
                self.admin.remove({self.name})
        self._http.close()


class ServeLivePool:
    """Warm live sessions on Ray Serve, least recently used removed first (the interface of `LivePool`;
    the memory budget is the cluster's, so only the count bounds it here)."""

    def __init__(self, *, address: str, token: str | None, serve_url: str, ship_code: bool = True,
                 max_workers: int = 3, num_cpus: float = 1.0, gpu_fraction: float = 0.0, idle_s: float = 600.0,
                 start_timeout: float = 600.0) -> None:
        self.admin = ServeAdmin(address, token, serve_url, ship_code)
        self.max_workers = max_workers
        self.options: dict[str, Any] = {"num_cpus": num_cpus, "gpu_fraction": gpu_fraction, "idle_s": idle_s,
                                        "start_timeout": start_timeout}
        self._sessions: OrderedDict[str, ServeSession] = OrderedDict()
        self._lock = threading.Lock()

    def _new(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> ServeSession:
        config = make_config()
        return ServeSession(self.admin, app_name(key, config.store_url), config, **self.options)

    def get(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> ServeSession:
        """The session for `key` (deployed, not necessarily ready; woken when Serve scaled it down)."""
        with self._lock:
            s = self._sessions.get(key)
            if s is not None and s.alive:
                self._sessions.move_to_end(key)
            else:
                if s is not None:
                    self._sessions.pop(key).close()
                while len(self._sessions) >= self.max_workers:
                    _, old = self._sessions.popitem(last=False)
                    old.close()
                s = self._sessions[key] = self._new(key, make_config)
        s.refresh()
        return s

    def warm(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> ServeSession:
        """Deploy the session for `key` if there is none, without waiting; never evicts (see LivePool.warm)."""
        with self._lock:
            s = self._sessions.get(key)
            if s is None or not s.alive:
                if s is not None:
                    self._sessions.pop(key).close()
                if len(self._sessions) >= self.max_workers:
                    return self._sessions[next(reversed(self._sessions))]
                s = self._sessions[key] = self._new(key, make_config)
                self._sessions.move_to_end(key, last=False)
                return s
        s.refresh()
        return s

    def peek(self, key: str) -> ServeSession | None:
        with self._lock:
            s = self._sessions.get(key)
            return s if s is not None and s.alive else None

    def status(self) -> list[dict[str, Any]]:
        """Each session, least recently used first; memory is asked of running replicas only (asking a
        scaled-down one would wake it), 0 for the others."""
        with self._lock:
            sessions = list(self._sessions.items())
        try:
            details: dict[str, Any] | None = self.admin.details()
        except Unavailable:
            details = None
        out = []
        for k, s in sessions:
            running = bool(details and self.admin.replicas(s.name, details))
            out.append({"key": k, "ready": s.ready and running, "startup_s": s.startup_s,
                        "rss_mb": s.ask_rss() if running and s.ready else 0.0,
                        "model": s.info.model if s.info else None})
        return out

    def close(self) -> None:
        with self._lock:
            sessions = list(self._sessions.values())
            self._sessions.clear()
        for s in sessions:
            s.close(remove=False)
        with contextlib.suppress(Unavailable):
            self.admin.remove({s.name for s in sessions})
        self.admin.close()
