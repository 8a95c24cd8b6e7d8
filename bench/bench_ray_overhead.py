"""Per-job overhead of the `ray` executor over `local`: the same small score job, submit to `succeeded`.

Both executors run in this process through the API's own JobService (no HTTP in between), each over its own
data dir; runs alternate ray, local, ray, ... and each is forced (no cached result). Code is shipped by
runtime_env (the default), so the size of the shipped `workers` package is recorded too.

`python -m bench ray_overhead [--runs 5] [--address URL]`; the address defaults to TENSION_TEST_RAY_ADDRESS or
TENSION_RAY_ADDRESS and the token to TENSION_TEST_RAY_TOKEN or TENSION_RAY_TOKEN. Without an address it says
so and writes nothing. Writes bench/results/ray_overhead.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any

from bench.common import write

PARAMS = {"model": "tiny-bert", "max_length": 32, "dataset": {"source": "bundled", "split": "test", "limit": 8}}


def shipped_package_bytes() -> tuple[int, int]:
    """(zip bytes, files) of `workers` as shipped: every file but __pycache__ and *.pyc, deflated like Ray's."""
    from app.core.ray_cluster import shipped_code  # noqa: F401 - the excludes this mirrors
    from workers.contract.version import WORKERS_DIR

    buf, n = io.BytesIO(), 0
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(WORKERS_DIR.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc":
                z.write(p, p.relative_to(WORKERS_DIR.parent).as_posix())
                n += 1
    return len(buf.getvalue()), n


def _services(root: Path, **overrides: Any) -> Any:
    from app.core.services import Services
    from app.core.settings import Settings

    settings = Settings(data_dir=root, device="cpu", concurrency=1, **overrides)  # type: ignore[arg-type]
    services = Services.build(settings)
    services.jobs.start(interval=0.1)
    return services


def _one(services: Any) -> dict[str, Any]:
    """Submit (forced) and wait: seconds from submit to succeeded, and the worker's own elapsed time."""
    started = time.perf_counter()
    job, _ = services.jobs.submit("score", PARAMS, force=True)
    while True:
        row = services.jobs.get(job.id)
        if row.status in ("succeeded", "failed", "cancelled"):
            break
        time.sleep(0.05)
    total = time.perf_counter() - started
    if row.status != "succeeded":
        raise RuntimeError(f"{services.settings.executor} job {job.id} {row.status}: {row.error}")
    log = services.jobs.log_path(job.id).read_text() if services.jobs.log_path(job.id).exists() else row.log_tail
    m = re.search(r"finished in ([0-9.]+) s", log)
    return {"total_s": total, "worker_s": float(m.group(1)) if m else None,
            "peak_rss_mb": ((row.runtime or {}).get("worker") or {}).get("peak_rss_bytes", 0) / 2**20}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench ray_overhead")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--address", default=os.environ.get("TENSION_TEST_RAY_ADDRESS")
                    or os.environ.get("TENSION_RAY_ADDRESS"))
    args = ap.parse_args(argv or [])
    if not args.address:
        print("no Ray cluster (set TENSION_TEST_RAY_ADDRESS or --address): nothing measured")
        return
    token = os.environ.get("TENSION_TEST_RAY_TOKEN") or os.environ.get("TENSION_RAY_TOKEN")
    zip_bytes, files = shipped_package_bytes()
    runs: dict[str, list[dict[str, Any]]] = {"ray": [], "local": []}
    with tempfile.TemporaryDirectory() as tmp:
        store = str(Path(tmp) / "store")
        both = {"ray": _services(Path(tmp) / "ray", executor="ray", ray_address=args.address, ray_token=token,
                                 artifact_store=store),
                "local": _services(Path(tmp) / "local", executor="local", artifact_store=store)}
        try:
            for services in both.values():  # warm-up, not counted: Ray's first upload of the package
                _one(services)
            for _ in range(args.runs):
                for name, services in both.items():
                    runs[name].append(_one(services))
        finally:
            for services in both.values():
                services.close()
    med = {k: statistics.median(r["total_s"] for r in v) for k, v in runs.items()}
    worker_med = {k: statistics.median(r["worker_s"] for r in v if r["worker_s"] is not None) for k, v in runs.items()}
    payload = {"params": PARAMS, "runs": runs, "median_total_s": med, "median_worker_s": worker_med,
               "overhead_s": med["ray"] - med["local"], "shipped_package": {"zip_bytes": zip_bytes, "files": files},
               "note": "submit to succeeded through JobService in one process, supervisor tick 0.1 s; ray and local "
                       "runs interleaved; the cluster's nodes run on this machine"}
    summary = (f"# ray vs local: per-job overhead\n\n"
               f"Same score job (tiny-bert, 8 pairs), {args.runs} interleaved runs each after one warm-up, "
               "submit to `succeeded` via the API's JobService.\n\n"
               "| executor | median submit→succeeded (s) | median worker time (s) |\n|---|---|---|\n"
               + "".join(f"| {k} | {med[k]:.2f} | {worker_med[k]:.2f} |\n" for k in ("ray", "local"))
               + f"\nOverhead of ray: **{med['ray'] - med['local']:+.2f} s** a job. Shipped `workers` package: "
               f"{zip_bytes / 1024:.0f} KiB zipped ({files} files).\n")
    write("ray_overhead", payload, summary)
