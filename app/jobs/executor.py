"""Executors run a job spec's worker entry point somewhere. `local`: one OS process per job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from workers.contract.jobs import JobSpec

if TYPE_CHECKING:
    from app.core.settings import Settings


@dataclass
class ExitInfo:
    returncode: int | None
    reason: str


class JobHandle(Protocol):
    pid: int | None
    waiting: bool  # started but not yet placed by the executor (e.g. a Ray job PENDING): no heartbeat expected

    def poll(self) -> ExitInfo | None:
        """None while running; the exit once finished."""

    def terminate(self, grace_s: float = 5.0) -> None: ...

    def placement(self) -> dict[str, str]:
        """What the executor knows of where the job runs (e.g. Ray's node and job ids); empty when nothing."""


class Executor(Protocol):
    name: str

    def request_for(self, kind: str, parameters: int | None) -> dict[str, float]:
        """The resources one job of `kind` on a model of `parameters` asks for (empty: the executor has none)."""

    def start(self, spec: JobSpec, spec_url: str, log_path: Path, request: dict[str, float]) -> JobHandle:
        """Run `python -m workers SPEC_URL` somewhere; the spec names the store the worker writes to."""

    def adopt(self, job_id: str, pid: int | None, log_path: Path) -> JobHandle | None:
        """Re-attach to the worker of `job_id` (started before an API restart, with the pid stored then),
        if the executor still knows it."""

    def check(self, kind: str, request: dict[str, float]) -> None:
        """Raise ValueError when a job of this kind asking for `request` can never be placed (checked at
        submission and start)."""


def _signal_name(rc: int) -> str:
    try:
        return signal.Signals(-rc).name
    except ValueError:
        return f"signal {-rc}"


def describe_exit(rc: int | None) -> str:
    if rc is None:
        return "worker process ended (exit status unknown)"
    if rc < 0:
        return f"worker process killed by {_signal_name(rc)}"
    return f"worker process exited with status {rc}"


class LocalHandle:
    waiting = False

    def __init__(self, popen: subprocess.Popen[bytes] | None, pid: int) -> None:
        self.popen = popen
        self.pid: int | None = pid

    def placement(self) -> dict[str, str]:
        """This machine (the worker reports its host itself)."""
        return {}

    def poll(self) -> ExitInfo | None:
        if self.popen is not None:
            rc = self.popen.poll()
            return None if rc is None else ExitInfo(rc, describe_exit(rc))
        assert self.pid is not None
        if _pid_alive(self.pid):
            return None
        return ExitInfo(None, describe_exit(None))

    def terminate(self, grace_s: float = 5.0) -> None:
        """Terminate the job's whole process group (the worker and anything it spawned)."""
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if self.popen is not None:
            try:
                self.popen.wait(grace_s)
                return
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        if self.popen is not None:
            self.popen.wait()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    if stat.exists():
        try:
            return stat.read_text().split()[2] != "Z"
        except (OSError, IndexError):
            return False
    return True


class LocalExecutor:
    """`python -m workers SPEC_URL` in its own session (process group); logs to a file on this machine."""

    name = "local"

    def __init__(self, python: str | None = None) -> None:
        self.python = python or sys.executable

    def request_for(self, kind: str, parameters: int | None) -> dict[str, float]:
        """Nothing is reserved: jobs share this machine (TENSION_CONCURRENCY bounds them)."""
        return {}

    def start(self, spec: JobSpec, spec_url: str, log_path: Path, request: dict[str, float]) -> LocalHandle:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(log_path, "wb")  # noqa: SIM115 - handed to the child
        env = dict(os.environ)
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            popen = subprocess.Popen(
                [self.python, "-m", "workers", spec_url],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
                cwd=str(Path(__file__).resolve().parents[2]),
            )
        finally:
            log.close()
        return LocalHandle(popen, popen.pid)

    def adopt(self, job_id: str, pid: int | None, log_path: Path) -> LocalHandle | None:
        return LocalHandle(None, pid) if pid and _pid_alive(pid) else None

    def check(self, kind: str, request: dict[str, float]) -> None:
        """Every kind runs here."""


def make_executor(settings: Settings) -> Executor:
    """The executor the settings name, configured from them."""
    if settings.executor == "local":
        return LocalExecutor(settings.python)
    if settings.executor == "ray":
        from app.jobs.ray_executor import RayExecutor  # lazy: `local` deployments never import ray

        token = settings.ray_token.get_secret_value() if settings.ray_token else None
        return RayExecutor(settings.ray_address, settings.ray_python, settings.ray_resources, token=token,
                           ship_code=settings.ray_ship_code, gpus=settings.ray_gpus)
    raise ValueError(f"unknown executor {settings.executor!r}; available: local, ray")
