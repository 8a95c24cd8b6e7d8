"""What the worker can tell about where it runs: host, node address, Ray submission, code location, peaks.

Cheap and torch-optional: torch is consulted only when the job already imported it (a job that failed before
loading a model does not pay for importing it), and Ray is read from the environment the job driver gets
(never `ray.init`).
"""

from __future__ import annotations

import json
import os
import platform
import resource
import socket
import sys
from pathlib import Path

from workers.contract.artifacts import RUNTIME_FILE, WorkerRuntime
from workers.contract.version import code_version
from workers.storage import ArtifactStore

CODE_PATH = str(Path(__file__).resolve().parent)
"""Where this `workers` package was imported from (under Ray with shipped code: the runtime-resources copy)."""


def _node_ip() -> str | None:
    """The local address of the route to the Ray GCS (or to any address): a UDP `connect` sends nothing."""
    target = os.environ.get("RAY_ADDRESS", "").rsplit(":", 1)[0] or "10.255.255.255"
    if "://" in target:
        target = target.split("://", 1)[1]
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect((target, 9))
            return str(s.getsockname()[0])
    except OSError:
        return None


def _ray_submission_id() -> str | None:
    """The submission id Ray's job manager passes its driver in the job config (no connection to Ray)."""
    raw = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if not raw:
        return None
    try:
        sid = json.loads(raw).get("metadata", {}).get("job_submission_id")
    except (ValueError, AttributeError):
        return None
    return str(sid) if sid else None


def peak_rss_bytes() -> int:
    """The largest resident set of this process or of any child it waited for (Linux reports KiB)."""
    scale = 1 if sys.platform == "darwin" else 1024
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return int(max(self_peak, child_peak) * scale)


def _cuda() -> tuple[str | None, int | None]:
    """The CUDA device's name and torch's peak allocation, when the job already used CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None, None
    try:
        if not (torch.cuda.is_available() and torch.cuda.is_initialized()):
            return None, None
        index = torch.cuda.current_device()
        return str(torch.cuda.get_device_name(index)), int(torch.cuda.max_memory_allocated(index))
    except Exception:  # a broken driver must not turn a finished job into a failed one
        return None, None


def collect(*, finished: bool) -> WorkerRuntime:
    """This worker's runtime record; peaks only when `finished`."""
    device, gpu_peak = _cuda() if finished else (None, None)
    return WorkerRuntime(
        hostname=socket.gethostname(), node_ip=_node_ip(), pid=os.getpid(), python=platform.python_version(),
        code_path=CODE_PATH, code_version=code_version(), ray_submission_id=_ray_submission_id(),
        cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"), device=device,
        peak_rss_bytes=peak_rss_bytes() if finished else None, peak_gpu_bytes=gpu_peak, finished=finished)


def record(store: ArtifactStore, prefix: str, *, finished: bool) -> None:
    """Write `<prefix>/runtime.json`; a store hiccup here never fails the job."""
    try:
        store.write_bytes(f"{prefix}/{RUNTIME_FILE}", collect(finished=finished).model_dump_json().encode())
    except Exception as exc:
        print(f"could not record the worker's runtime: {exc}", flush=True)
