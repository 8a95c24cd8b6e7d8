"""Shared helpers for benchmarks: where results go, machine facts recorded beside every number, a real server.

`serve` starts the product's own `tension serve` as a subprocess on loopback (the default no-login mode)
over a data directory and waits for /healthz; `latency_stats` summarises request times the same way in
every HTTP benchmark.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parent.parent


def machine() -> dict[str, Any]:
    import torch

    return {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.is_available(), "platform": platform.platform()}


def write(name: str, payload: dict[str, Any], summary: str | None = None) -> Path:
    """bench/results/<name>.json (and <name>.md when a markdown summary is given)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    payload = {"benchmark": name, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               "machine": machine(), **payload}
    out.write_text(json.dumps(payload, indent=2, default=float))
    if summary is not None:
        (RESULTS / f"{name}.md").write_text(summary)
        print(summary)
    else:
        print(json.dumps(payload, indent=2, default=float))
    return out


def latency_stats(times_s: list[float]) -> dict[str, Any]:
    """n, p50/p95/p99/max in milliseconds (empty: n = 0 and no percentiles)."""
    if not times_s:
        return {"n": 0}
    a = np.asarray(times_s) * 1000
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max()), "mean_ms": float(a.mean())}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class Served:
    url: str
    pid: int


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads; Linux /proc), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    """Direct child processes of `pid` (Linux /proc)."""
    out = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    out.append(int(d.name))
            except (OSError, IndexError, ValueError):
                continue
    return out


@contextmanager
def serve(data_dir: Path, *, log: Path | None = None, env: dict[str, str] | None = None,
          timeout_s: float = 120) -> Iterator[Served]:
    """`tension serve` on 127.0.0.1 over `data_dir` (a subprocess); yields its URL and pid, stops it after."""
    import httpx

    port = free_port()
    cmd = [str(Path(sys.executable).parent / "tension"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    full_env = {**os.environ, "TENSION_DATA_DIR": str(data_dir), **(env or {})}
    log = log or data_dir / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}; see {log}")
            try:
                if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"server did not answer /healthz within {timeout_s} s; see {log}")
            time.sleep(0.2)
        yield Served(url, proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
