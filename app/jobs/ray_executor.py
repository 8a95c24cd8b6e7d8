"""`ray` executor: each job is a Ray job submitted over HTTP to the cluster's Jobs API.

The API process only talks to the Ray dashboard (`JobSubmissionClient(address)`, plus the state API's
`/api/v0/nodes` for the placement check); it never calls `ray.init()` and never joins the cluster. A cluster
with token authentication gets `TENSION_RAY_TOKEN` as a bearer token on every request.

Code: by default (`TENSION_RAY_SHIP_CODE`) the `workers` package travels with each job as a runtime_env
`py_modules` entry (the client zips it and uploads it to the cluster's GCS through the dashboard, once per
content hash); the entry point `<python> -P -m workers SPEC_URL` then imports it from Ray's runtime-resources
directory (PYTHONPATH; `-P` keeps the node's working directory, which may hold another copy, off sys.path),
so a node needs only the dependencies (the worker image). Shipping off, the project's code must be at the
same path on every node: `cd <root> && <python> -m workers SPEC_URL`. `TENSION_RAY_PYTHON` names the
interpreter on the nodes (default: this one). The worker reads its spec from, and writes its results to, the
artifact store named in the spec, so the store's URL must be reachable from the nodes.

Resources: a CPU, memory sized from the model (`app.jobs.sizing`) and a GPU when the cluster has them, then
`TENSION_RAY_RESOURCES` per kind; a request no alive node could ever meet is refused at submission.

The Ray job's submission id is derived from our job id (`tension-<job id>`), so re-attaching after an
API restart needs nothing but the job id. Ray's job logs are copied into the job's log file on each poll,
so the log tail works as for `local`.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from app.core.ray_cluster import alive_node_totals, bearer_headers, shipped_code, worker_env
from app.jobs.executor import ExitInfo
from app.jobs.sizing import default_request
from workers.contract.jobs import JobSpec

ROOT = Path(__file__).resolve().parents[2]
NODES_TTL_S = 10.0
"""How long the cluster's node list is reused (GPU detection and the placement check of one submission)."""
# entrypoint_* keywords of submit_job for Ray's predefined resources; anything else is a custom resource.
_PREDEFINED = {"CPU": "entrypoint_num_cpus", "GPU": "entrypoint_num_gpus", "memory": "entrypoint_memory"}


class Unplaceable(ValueError):
    """No node of the cluster can ever run the job (Ray would keep it PENDING forever)."""


def submission_id(job_id: str, attempt: int = 1) -> str:
    """Ray's id of an attempt of our job: `tension-<job id>`, then `tension-<job id>-<n>` for retries (Ray
    may still be tearing down a stopped attempt, so an id is never reused)."""
    return f"tension-{job_id}" if attempt <= 1 else f"tension-{job_id}-{attempt}"


def _client(address: str, headers: dict[str, str]) -> Any:
    from ray.job_submission import JobSubmissionClient  # lazy: only a `ray` deployment pays the import

    return JobSubmissionClient(address, headers=headers or None)


def _refused(address: str, token: str | None, status: int) -> Unplaceable:
    cause = ("no token was sent" if not token else "the token sent was not accepted")
    return Unplaceable(f"the Ray cluster at {address} refused the API's request (HTTP {status}): it uses token "
                       f"authentication and {cause}; set TENSION_RAY_TOKEN to the cluster's RAY_AUTH_TOKEN")


class RayHandle:
    pid: int | None = None  # a Ray job has no pid on this machine
    waiting = False  # PENDING at the last poll: Ray has not placed it yet (no heartbeat is expected)

    def __init__(self, client: Any, sid: str, log_path: Path,
                 node_ip: Callable[[str], str | None] | None = None) -> None:
        self.client = client
        self.sid = sid
        self.log_path = log_path
        self._node_ip = node_ip

    def _copy_logs(self) -> None:
        with contextlib.suppress(Exception):
            logs = self.client.get_job_logs(self.sid)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self.log_path.write_text(logs)

    def poll(self) -> ExitInfo | None:
        from ray.job_submission import JobStatus

        try:
            status = self.client.get_job_status(self.sid)
        except Exception:  # the dashboard unreachable for a moment: still running (heartbeats decide)
            return None
        self._copy_logs()
        self.waiting = status == JobStatus.PENDING
        if status in (JobStatus.PENDING, JobStatus.RUNNING):
            return None
        if status == JobStatus.SUCCEEDED:
            return ExitInfo(0, "ray job succeeded")
        if status == JobStatus.STOPPED:
            return ExitInfo(-15, "ray job stopped")
        message = ""
        with contextlib.suppress(Exception):
            message = self.client.get_job_info(self.sid).message or ""
        # Ray's message is one line of its own, then the log's tail (which the log file already holds).
        first = message.strip().splitlines()[0].rstrip(",:") if message.strip() else ""
        code = re.search(r"exit code (-?\d+)", first)
        return ExitInfo(int(code.group(1)) if code else 1,
                        f"ray job {self.sid} failed" + (f" ({first})" if first else ""))

    def terminate(self, grace_s: float = 5.0) -> None:
        """Ask Ray to stop the job (SIGTERM to the entry point, SIGKILL after Ray's own grace period)."""
        with contextlib.suppress(Exception):
            self.client.stop_job(self.sid)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            try:
                if self.client.get_job_status(self.sid).is_terminal():
                    break
            except Exception:
                break
            time.sleep(0.2)
        self._copy_logs()

    def placement(self) -> dict[str, str]:
        """Ray's submission id, and the node the entry point (our worker) runs on once Ray has placed it. (The
        worker never connects to Ray, so the Ray job has no driver and no job id of its own.)"""
        out = {"ray_submission_id": self.sid}
        with contextlib.suppress(Exception):
            node = self.client.get_job_info(self.sid).driver_node_id
            if node:
                out["ray_node_id"] = str(node)
                ip = self._node_ip(node) if self._node_ip else None
                if ip:
                    out["ray_node_ip"] = ip
        return out


class RayExecutor:
    """Submit `python -m workers SPEC_URL` as a Ray job (see the module docstring for what the nodes need)."""

    name = "ray"

    def __init__(self, address: str, python: str | None = None,
                 resources: dict[str, dict[str, float]] | None = None, *, token: str | None = None,
                 ship_code: bool = True, gpus: str = "auto") -> None:
        self.address = address.rstrip("/")
        self.python = python or _default_python()
        self.resources = resources or {}
        self.ship_code = ship_code
        self.gpus = gpus
        self._token = token
        self._headers = bearer_headers(token)
        self._client_obj: Any = None
        self._nodes: tuple[float, list[dict[str, float]]] | None = None

    def __repr__(self) -> str:  # never the token
        return f"RayExecutor({self.address!r}, ship_code={self.ship_code}, gpus={self.gpus!r})"

    @property
    def client(self) -> Any:
        if self._client_obj is None:
            self._client_obj = _client(self.address, self._headers)
        return self._client_obj

    def _gpu(self) -> bool:
        if self.gpus != "auto":
            return self.gpus == "on"
        try:
            return any(n.get("GPU", 0.0) > 0 for n in self.node_resources())
        except Exception:  # the check that follows reports an unreachable cluster
            return False

    def request_for(self, kind: str, parameters: int | None = None) -> dict[str, float]:
        """Resources one job of this kind asks for: the sized default (app.jobs.sizing), then the `*` settings,
        then the kind's; a value <= 0 drops the resource."""
        req = default_request(kind, parameters, gpu=self._gpu())
        req.update(self.resources.get("*", {}))
        req.update(self.resources.get(kind, {}))
        return {k: float(v) for k, v in req.items() if float(v) > 0}

    def node_ip(self, node_id: str) -> str | None:
        """The IP address of a node of the cluster, by Ray's node id (state API)."""
        r = httpx.get(f"{self.address}/api/v0/nodes", params={"filter_keys": "node_id", "filter_predicates": "=",
                                                               "filter_values": node_id},
                      headers=self._headers, timeout=10)
        r.raise_for_status()
        nodes = r.json()["data"]["result"]["result"]
        return str(nodes[0]["node_ip"]) if nodes and nodes[0].get("node_ip") else None

    def node_resources(self) -> list[dict[str, float]]:
        """Total resources of each alive node, from the dashboard's state API (HTTP, no `ray.init`); reused for
        NODES_TTL_S."""
        now = time.monotonic()
        if self._nodes is not None and now - self._nodes[0] < NODES_TTL_S:
            return self._nodes[1]
        try:
            alive = alive_node_totals(self.address, self._headers)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code in (401, 403):
                raise _refused(self.address, self._token, exc.response.status_code) from exc
            raise
        self._nodes = (now, alive)
        return alive

    def check(self, kind: str, request: dict[str, float] | None = None) -> None:
        """Raise Unplaceable, naming the missing resource, when no node could ever run a job of this kind asking
        for `request` (default: the kind's unsized request)."""
        req = request if request is not None else self.request_for(kind)
        try:
            nodes = self.node_resources()
        except Unplaceable:
            raise
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            raise Unplaceable(f"the Ray cluster at {self.address} could not be asked for its nodes: {exc}") from exc
        if any(all(n.get(k, 0.0) >= v for k, v in req.items()) for n in nodes):
            return
        wanted = ", ".join(f"{k}: {v:g}" for k, v in sorted(req.items()))
        absent = [k for k, v in sorted(req.items()) if not any(n.get(k, 0.0) >= v for n in nodes)]
        if absent:
            offered = max((n.get(absent[0], 0.0) for n in nodes), default=0.0)
            raise Unplaceable(
                f"no node of the Ray cluster at {self.address} has {absent[0]!r}: {req[absent[0]]:g} "
                f"(the most any of its {len(nodes)} alive nodes has is {offered:g}); this {kind} job asks for "
                f"{{{wanted}}} (memory is sized from the model; TENSION_RAY_RESOURCES overrides)")
        raise Unplaceable(f"no single node of the Ray cluster at {self.address} has all of {{{wanted}}} "
                          f"that {kind} jobs ask for (TENSION_RAY_RESOURCES)")

    def start(self, spec: JobSpec, spec_url: str, log_path: Path, request: dict[str, float]) -> RayHandle:
        kind = spec.kind.value if hasattr(spec.kind, "value") else str(spec.kind)
        self.check(kind, request)
        req = dict(request)
        kwargs: dict[str, Any] = {"entrypoint_num_cpus": req.pop("CPU", 0.0)}
        if "GPU" in req:
            kwargs["entrypoint_num_gpus"] = req.pop("GPU")
        if "memory" in req:
            kwargs["entrypoint_memory"] = int(req.pop("memory"))
        if req:
            kwargs["entrypoint_resources"] = req
        sid = self._next_submission(spec.job_id)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.write_text("")
        runtime_env: dict[str, Any] = {"env_vars": worker_env()}
        if self.ship_code:
            runtime_env.update(shipped_code())
            entrypoint = f"{_quote(self.python)} -P -m workers {_quote(spec_url)}"
        else:
            entrypoint = f"cd {_quote(str(ROOT))} && {_quote(self.python)} -m workers {_quote(spec_url)}"
        self.client.submit_job(entrypoint=entrypoint, submission_id=sid, runtime_env=runtime_env,
                               metadata={"tension_job_id": spec.job_id, "kind": kind}, **kwargs)
        return RayHandle(self.client, sid, log_path, self.node_ip)

    def _status(self, sid: str) -> Any:
        """Ray's status of a submission, or None when Ray has no such job."""
        try:
            return self.client.get_job_status(sid)
        except RuntimeError as exc:
            if "does not exist" in str(exc):
                return None
            raise

    def _attempts(self, job_id: str) -> list[tuple[str, Any]]:
        """The Ray jobs of our job's attempts so far, oldest first, with their statuses."""
        found = []
        for attempt in range(1, 1000):
            sid = submission_id(job_id, attempt)
            status = self._status(sid)
            if status is None:
                break
            found.append((sid, status))
        return found

    def _next_submission(self, job_id: str) -> str:
        previous = self._attempts(job_id)
        for sid, status in previous:  # a retry: no earlier attempt may still run beside it
            if not status.is_terminal():
                RayHandle(self.client, sid, Path(os.devnull)).terminate()
        return submission_id(job_id, len(previous) + 1)

    def adopt(self, job_id: str, pid: int | None, log_path: Path) -> RayHandle | None:
        """Re-attach to the latest Ray job of `job_id` if Ray knows it: still running, it is supervised again;
        finished while the API was down, its first poll reports how (and a success is ingested)."""
        try:
            attempts = self._attempts(job_id)
        except Exception:
            return None
        return RayHandle(self.client, attempts[-1][0], log_path, self.node_ip) if attempts else None


def _default_python() -> str:
    import sys

    return sys.executable


def _quote(s: str) -> str:
    import shlex

    return shlex.quote(s)
