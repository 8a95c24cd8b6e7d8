"""Executors run a job spec's worker entry point somewhere. `local`: one OS process per job."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workers.contract.jobs import JobSpec


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


class Executor(Protocol):
    name: str

    def start(self, spec: JobSpec, spec_url: str, log_path: Path) -> JobHandle:
        """Run `python -m workers SPEC_URL` somewhere; the spec names the store the worker writes to."""

    def adopt(self, job_id: str, pid: int | None, log_path: Path) -> JobHandle | None:
        """Re-attach to the worker of `job_id` (started before an API restart, with the pid stored then),
        if the executor still knows it."""

    def check(self, kind: str) -> None:
        """Raise ValueError when a job of this kind can never be placed (checked at submission and start)."""


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

    def start(self, spec: JobSpec, spec_url: str, log_path: Path) -> LocalHandle:
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

    def check(self, kind: str) -> None:
        """Every kind runs here."""


def make_executor(name: str, python: str | None = None, *, ray_address: str | None = None,
                  ray_python: str | None = None,
                  ray_resources: dict[str, dict[str, float]] | None = None) -> Executor:
    if name == "local":
        return LocalExecutor(python)
    if name == "ray":
        from app.jobs.ray_executor import RayExecutor  # lazy: `local` deployments never import ray

        return RayExecutor(ray_address or "http://127.0.0.1:8265", ray_python, ray_resources)
    raise ValueError(f"unknown executor {name!r}; available: local, ray")
