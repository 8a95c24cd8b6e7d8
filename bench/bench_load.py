"""Load: neuron pages and the job list stay fast for 50 concurrent clients while a real capture job runs.

A real server (`tension serve`, a subprocess on loopback, default no-login mode) over a store seeded through
the real ingest path with the demo-sized model (minilm-l6's shape, 6 × 1,536 neurons, helpful, harmless and
mixed RMs; `--with-big` adds the 24 × 8,192 model of bench_scale). Through the product's job API a minilm-l6
RM is trained (a few pairs, seconds) and then captured on enough bundled pairs to outlast the run; a new
capture is submitted whenever one finishes, so a real capture job competes for the CPU during the whole
measurement (the fraction of the window it covered is reported).

Then `--clients` asyncio tasks (one bounded httpx client, one connection each, 127.0.0.1) browse for
`--duration` seconds: each picks a page at random (dashboard views of the model, neuron pages of random
neurons, /api/jobs, /ui/jobs), requests it, reads the page for a think time drawn uniformly from
[0, 2 × `--think`] (default 1 s on average: at most a page a second per client), and
again. `--think 0` is a closed loop instead (each client asks again the moment an answer arrives): it
measures where the server saturates, and its latencies are then the queue, clients ÷ throughput.
Reported per page: p50/p95/p99, count and errors (non-200 or transport errors); throughput; CPU used by
the server, the jobs and the client; an unloaded single-client baseline of the same pages before the job
starts. Target: p95 <= 300 ms per page and overall, 0 errors. Wall-clock on a shared 2-core machine: the
client, the server and the job share the two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.bench_scale import BIG_MODEL, BIG_SEEDS, BIG_SHAPE, DEMO_MODEL, DEMO_SEEDS, DEMO_SHAPE, seed_store
from bench.common import RESULTS, children, cpu_seconds, latency_stats, serve, write

P95_TARGET_MS = 300.0
PAGES = {"dashboard": 0.3, "neuron_page": 0.4, "api_jobs": 0.15, "ui_jobs": 0.15}
JOB_MODEL = "minilm-l6"
JOB_SEED = 99  # not the seeded demo's seed 0: the job's capture must not change the views being browsed
TRAIN = {"model": JOB_MODEL, "regime": "mixed", "preset": "custom", "epochs": 1, "seed": JOB_SEED,
         "max_length": 64, "dataset": {"source": "bundled", "split": "train", "limit": 16}}


def _post(http: Any, path: str, body: dict[str, Any] | None = None) -> Any:
    """A POST as an API client makes it: no cookies (a request carrying cookies is a browser's and must carry
    a CSRF token)."""
    http.cookies.clear()
    r = http.post(path, json=body)
    r.raise_for_status()
    return r.json()


def pick(rng: random.Random, model: str, shape: tuple[int, int], seeds: tuple[int, ...]) -> tuple[str, str, dict]:
    """(page, path, query) of one random page view."""
    page = rng.choices(list(PAGES), weights=list(PAGES.values()))[0]
    if page == "dashboard":
        return page, f"/models/{model}/dashboard", {
            "seed": rng.choice(seeds), "stat": rng.choice("ACP"), "p": rng.choice((1, 5, 10, 25)),
            "scatter": rng.choice(("single", "mixed"))}
    if page == "neuron_page":
        return page, f"/models/{model}/neurons/{rng.randrange(shape[0])}/{rng.randrange(shape[1])}", {}
    if page == "api_jobs":
        return page, "/api/jobs", {}
    return page, "/ui/jobs", {}


async def browse(url: str, clients: int, duration_s: float, think_s: float, model: str, shape: tuple[int, int],
                 seeds: tuple[int, ...], seed: int = 0) -> dict[str, Any]:
    import httpx

    times: dict[str, list[float]] = {p: [] for p in PAGES}
    errors: dict[str, list[str]] = {p: [] for p in PAGES}
    # Idle connections are dropped before the server's keep-alive timeout (uvicorn: 5 s), so no request is sent
    # on a connection the server is closing at that moment (a browser would retry it; this client does not).
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as http:
        started = time.monotonic()
        deadline = started + duration_s

        async def one(i: int) -> None:
            rng = random.Random(seed * 1000 + i)
            while time.monotonic() < deadline:
                page, path, query = pick(rng, model, shape, seeds)
                t0 = time.perf_counter()
                try:
                    r = await http.get(path, params=query)
                    await r.aread()
                    if r.status_code != 200:
                        errors[page].append(f"{r.status_code} {path}")
                except httpx.HTTPError as exc:
                    errors[page].append(f"{type(exc).__name__} {path}")
                times[page].append(time.perf_counter() - t0)
                if think_s > 0:
                    await asyncio.sleep(rng.uniform(0, 2 * think_s))

        await asyncio.gather(*(one(i) for i in range(clients)))
        elapsed = time.monotonic() - started
    n = sum(len(v) for v in times.values())
    return {"clients": clients, "duration_s": elapsed, "think_s": think_s, "requests": n,
            "throughput_rps": n / elapsed,
            "pages": {p: {**latency_stats(times[p]), "errors": len(errors[p]), "error_examples": errors[p][:5]}
                      for p in PAGES},
            "overall": {**latency_stats([t for v in times.values() for t in v]),
                        "errors": sum(len(v) for v in errors.values())}}


class CaptureJobs:
    """Keeps one real capture job running through the job API; records each job and when it ran."""

    def __init__(self, http: Any, checkpoint: str, limit: int) -> None:
        self.http, self.checkpoint, self.limit = http, checkpoint, limit
        self.jobs: list[dict[str, Any]] = []
        self.current: str | None = None
        self._variant = 0

    def _submit(self) -> str:
        self._variant += 1  # a different max_length each time: a new result key, never a cache hit
        params = {"checkpoint": self.checkpoint, "base_model": JOB_MODEL, "max_length": 129 - self._variant,
                  "dataset": {"source": "bundled", "split": "train", "limit": self.limit}}
        job = _post(self.http, "/api/jobs", {"kind": "capture", "params": params})
        self.jobs.append({"id": job["id"], "submitted": time.time(), "cached": job["cached"]})
        return str(job["id"])

    def status(self, job_id: str) -> dict[str, Any]:
        return dict(self.http.get(f"/api/jobs/{job_id}").json())

    def start(self, timeout_s: float = 180) -> None:
        """Submit a capture and wait until it runs (its worker started, the model loading or loaded)."""
        self.current = self._submit()
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            job = self.status(self.current)
            if job["status"] == "running" and job["progress"] > 0:
                return
            if job["status"] not in ("queued", "running"):
                raise RuntimeError(f"capture job {self.current} {job['status']}: {job.get('error')}")
            time.sleep(0.5)
        raise RuntimeError(f"capture job {self.current} did not start within {timeout_s} s")

    def keep_running(self) -> None:
        """Called now and then during the load: submit the next capture when the current one has finished."""
        if self.current is None:
            return
        job = self.status(self.current)
        if job["status"] not in ("queued", "running"):
            self.jobs[-1].update(status=job["status"], finished=time.time(), error=job.get("error"))
            self.current = self._submit()

    def stop(self) -> None:
        if self.current is not None:
            job = self.status(self.current)
            if job["status"] in ("queued", "running"):
                _post(self.http, f"/api/jobs/{self.current}/cancel")
            self.jobs[-1].setdefault("status", job["status"])
            self.current = None

    def covered(self, t0: float, t1: float) -> float:
        """Fraction of [t0, t1] during which some capture job was submitted and not yet finished."""
        busy = 0.0
        for j in self.jobs:
            a, b = max(j["submitted"], t0), min(j.get("finished", t1), t1)
            busy += max(0.0, b - a)
        return min(1.0, busy / (t1 - t0)) if t1 > t0 else 0.0


def _cpu(server_pid: int) -> dict[str, float]:
    """CPU seconds so far of the server, of its child processes (the running jobs) and of this process (the
    load client)."""
    self_cpu = sum(os.times()[:2])
    return {"server": cpu_seconds(server_pid), "jobs": sum(cpu_seconds(p) for p in children(server_pid)),
            "client": self_cpu}


def _train(http: Any) -> str:
    job_id = _post(http, "/api/jobs", {"kind": "train", "params": TRAIN})["id"]
    deadline = time.time() + 600
    while time.time() < deadline:
        job = http.get(f"/api/jobs/{job_id}").json()
        if job["status"] == "succeeded":
            return str(http.get(f"/api/results/{job['result_key']}").json()["checkpoint"])
        if job["status"] not in ("queued", "running"):
            raise RuntimeError(f"train job {job_id} {job['status']}: {job.get('error')}")
        time.sleep(0.5)
    raise RuntimeError("train job did not finish in 600 s")


def _baseline(url: str, model: str, shape: tuple[int, int], seeds: tuple[int, ...], n: int) -> dict[str, Any]:
    """Each page `n` times by one client, nothing else running (after one warm-up pass)."""
    import httpx

    rng = random.Random(1)
    views: dict[str, list[tuple[str, dict]]] = {p: [] for p in PAGES}
    while min(len(v) for v in views.values()) < n:
        page, path, query = pick(rng, model, shape, seeds)
        views[page].append((path, query))
    out = {}
    with httpx.Client(base_url=url, timeout=60) as http:
        for page, vs in views.items():
            for path, query in vs[:n]:  # warm-up: the first request of each view computes its scores
                http.get(path, params=query)
            ts = []
            for path, query in vs[:n]:
                t0 = time.perf_counter()
                http.get(path, params=query).raise_for_status()
                ts.append(time.perf_counter() - t0)
            out[page] = latency_stats(ts)
    return out


def run(clients: int = 50, duration_s: float = 60, think_s: float = 1.0, with_big: bool = False,
        capture_limit: int = 1500, baseline_n: int = 20, keep: Path | None = None,
        with_job: bool = True) -> dict[str, Any]:
    import httpx

    load_start = os.getloadavg()
    root = keep or Path(tempfile.mkdtemp(prefix="bench-load-"))
    data_dir = root / "var"
    models = [(DEMO_MODEL, DEMO_SHAPE, DEMO_SEEDS)] + ([(BIG_MODEL, BIG_SHAPE, BIG_SEEDS)] if with_big else [])
    try:
        seeded = seed_store(data_dir, models)
        with serve(data_dir) as server, httpx.Client(base_url=server.url, timeout=60) as http:
            url = server.url
            baseline = _baseline(url, DEMO_MODEL, DEMO_SHAPE, DEMO_SEEDS, baseline_n)
            t0 = time.time()
            checkpoint = _train(http) if with_job else ""
            train_s = time.time() - t0
            jobs = CaptureJobs(http, checkpoint, capture_limit)
            if with_job:
                jobs.start()

            async def load() -> dict[str, Any]:
                task = asyncio.create_task(browse(url, clients, duration_s, think_s, DEMO_MODEL, DEMO_SHAPE,
                                                  DEMO_SEEDS))
                while not task.done():
                    await asyncio.sleep(1.0)
                    await asyncio.to_thread(jobs.keep_running)
                return await task

            cpu0 = _cpu(server.pid)
            w0 = time.time()
            result = asyncio.run(load())
            w1 = time.time()
            cpu1 = _cpu(server.pid)
            jobs.stop()
            coverage = jobs.covered(w0, w1)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    p95s = {p: s.get("p95_ms", float("nan")) for p, s in result["pages"].items()}
    targets = {f"{p}_p95_ms": {"value": v, "target": P95_TARGET_MS, "ok": v <= P95_TARGET_MS} for p, v in p95s.items()}
    targets["overall_p95_ms"] = {"value": result["overall"]["p95_ms"], "target": P95_TARGET_MS,
                                 "ok": result["overall"]["p95_ms"] <= P95_TARGET_MS}
    targets["errors"] = {"value": result["overall"]["errors"], "target": 0, "ok": result["overall"]["errors"] == 0}
    return {"store": [{k: m[k] for k in ("model", "shape", "seeds", "rows")} for m in seeded], "model": DEMO_MODEL,
            "page_weights": PAGES, "unloaded_baseline": baseline, "load": result, "train_s": train_s,
            "capture_jobs": jobs.jobs, "capture_job_coverage": coverage,
            "cpu_cores_used": {k: (cpu1[k] - cpu0.get(k, 0.0)) / (w1 - w0) for k in ("server", "jobs", "client")},
            "targets": targets,
            "all_ok": all(t["ok"] for t in targets.values()), "loadavg_start": load_start,
            "loadavg_end": os.getloadavg()}


def summary(res: dict[str, Any]) -> str:
    load = res["load"]
    lines = ["# Load benchmark", "",
             f"{load['clients']} clients for {load['duration_s']:.0f} s (think time {load['think_s']:g} s on "
             f"average; 0 = closed loop), {res['model']} pages, while real capture jobs ran "
             f"{100 * res['capture_job_coverage']:.0f}% of the window; {load['requests']:,} requests, "
             f"{load['throughput_rps']:.0f} requests/s. CPU cores used during the window: "
             + ", ".join(f"{k} {v:.2f}" for k, v in res["cpu_cores_used"].items())
             + " (of 2; jobs: only those running at both ends of the window are counted fully).", "",
             "| page | n | p50 ms | p95 ms | p99 ms | errors | unloaded p50 ms |", "|---|---|---|---|---|---|---|"]
    for page, s in load["pages"].items():
        base, nan = res["unloaded_baseline"].get(page, {}), float("nan")
        lines.append(f"| {page} | {s['n']} | {s.get('p50_ms', nan):.1f} | {s.get('p95_ms', nan):.1f}"
                     f" | {s.get('p99_ms', nan):.1f} | {s['errors']} | {base.get('p50_ms', nan):.1f} |")
    o = load["overall"]
    lines.append(f"| all | {o['n']} | {o['p50_ms']:.1f} | {o['p95_ms']:.1f} | {o['p99_ms']:.1f} | {o['errors']} | |")
    lines += ["", "| target | value | limit | ok |", "|---|---|---|---|"]
    for name, t in res["targets"].items():
        lines.append(f"| {name} | {t['value']:.4g} | {t['target']:.4g} | {'yes' if t['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench load", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clients", type=int, default=50, help="concurrent clients")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of load")
    ap.add_argument("--think", type=float, default=1.0,
                    help="mean seconds a client reads a page before the next (0: closed loop)")
    ap.add_argument("--with-big", action="store_true", help="also store the 24 × 8,192 model of bench_scale")
    ap.add_argument("--capture-limit", type=int, default=1500, help="bundled pairs each capture job streams")
    ap.add_argument("--baseline", type=int, default=20, help="unloaded requests per page before the load")
    ap.add_argument("--no-job", action="store_true", help="no capture job (to compare: the same load alone)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the data directory here (default: a temp dir)")
    ap.add_argument("--name", default="load", help="result file name under bench/results/")
    args = ap.parse_args(argv if argv is not None else [])
    res = run(clients=args.clients, duration_s=args.duration, think_s=args.think, with_big=args.with_big,
              capture_limit=args.capture_limit, baseline_n=args.baseline, keep=args.keep, with_job=not args.no_job)
    write(args.name, res, summary(res))
    print(f"results: {RESULTS / (args.name + '.json')}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
