"""Live toggle latency through Ray Serve (executor `ray`) against the local process pool, on this machine.

Over a copy of a data directory with a captured RM (default: the mixed `minilm-l6` RM of a demo study, e.g.
`--data-dir /tmp/demo3/var`), through the product's own server (`tension serve`, loopback), once with the
local pool and once with the `ray` executor, whose live sessions are Serve deployments on the cluster named
by `TENSION_TEST_RAY_ADDRESS` / `TENSION_TEST_RAY_TOKEN` / `TENSION_TEST_SERVE_URL` (.ci/run and the dev
cluster's env file set them). For the same RM and the same neuron sets, per mode, in `--rounds` rounds with
the order alternated (whichever starts first loads the model files into a cold page cache), each with
a fresh server:

* cold start: a fresh server with no session; the first exact toggle's wall time, and the session's start-up
  (`/api/live/sessions` startup_s: spawn, or Serve deploy and replica start, to `LiveReady`);
* warm, over N toggles of N different sets (so no answer cache helps): the estimate's round trip
  (`/api/live/{ck}/estimate`, client wall time) and the exact all-pairs toggle (`/api/live/{ck}/toggle`,
  client wall time); medians.

The Serve replica asks for `--serve-cpus` CPUs (its torch threads: default 2, as many as the local worker
uses on this 2-core machine). Wall-clock on a shared machine: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import serve, write

MODEL = "minilm-l6"


def _sets(n: int, n_layers: int, n_neurons: int, size: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        layers: dict[str, list[int]] = {}
        for _ in range(size):
            layers.setdefault(str(rng.randrange(n_layers)), []).append(rng.randrange(n_neurons))
        out.append(json.dumps({k: sorted(set(v)) for k, v in sorted(layers.items())}))
    return out


def _checkpoint(url: str, regime: str) -> dict[str, Any]:
    rows = httpx.get(f"{url}/api/neurons/captures", params={"base_model": MODEL}, timeout=30)
    rows.raise_for_status()
    found = [r for r in rows.json() if r["regime"] == regime] or rows.json()
    if not found:
        raise RuntimeError(f"no captured {MODEL} RM in the data dir")
    return dict(found[0])


def _run(mode: str, data: Path, env: dict[str, str], sets: list[str], probe: int, regime: str) -> dict[str, Any]:
    with serve(data, env=env, timeout_s=180) as srv, httpx.Client(base_url=srv.url, timeout=900) as http:
        ck = _checkpoint(srv.url, regime)["checkpoint"]
        started = time.perf_counter()
        first = http.get(f"/api/live/{ck}/toggle", params={"neurons": sets[0], "probe_limit": probe})
        first.raise_for_status()
        cold_toggle_s = time.perf_counter() - started
        sessions = http.get("/api/live/sessions").json()
        est_s, exact_s, exact_server_ms, worker_ms = [], [], [], []
        answers = []
        for s in sets[1:]:
            t = time.perf_counter()
            e = http.get(f"/api/live/{ck}/estimate", params={"neurons": s, "probe_limit": probe})
            e.raise_for_status()
            est_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            x = http.get(f"/api/live/{ck}/toggle", params={"neurons": s, "probe_limit": probe})
            x.raise_for_status()
            exact_s.append(time.perf_counter() - t)
            exact_server_ms.append(float(x.json()["roundtrip_ms"]))
            worker_ms.append(1000 * float(x.json()["timing"]["seconds"]))
            answers.append({o: v["delta"]["margin"] for o, v in x.json()["objectives"].items()})
    return {"mode": mode, "checkpoint": ck, "cold_first_toggle_s": cold_toggle_s,
            "cold_startup_s": sessions[0]["startup_s"] if sessions else None,
            "estimate_ms": [1000 * v for v in est_s], "exact_ms": [1000 * v for v in exact_s],
            "exact_server_ms": exact_server_ms, "exact_worker_ms": worker_ms, "delta_margins": answers}


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Medians over every warm toggle of every round, and over the rounds' cold starts."""
    med = statistics.median
    return {"estimate_median_ms": med([v for r in runs for v in r["estimate_ms"]]),
            "exact_median_ms": med([v for r in runs for v in r["exact_ms"]]),
            "exact_server_median_ms": med([v for r in runs for v in r["exact_server_ms"]]),
            "exact_worker_median_ms": med([v for r in runs for v in r["exact_worker_ms"]]),
            "cold_startup_s": med([r["cold_startup_s"] for r in runs]),
            "cold_first_toggle_s": med([r["cold_first_toggle_s"] for r in runs])}


def _remove_apps(under: str) -> None:
    from app.ablation.serve_pool import ServeAdmin

    admin = ServeAdmin(os.environ["TENSION_TEST_RAY_ADDRESS"], os.environ.get("TENSION_TEST_RAY_TOKEN"),
                       os.environ["TENSION_TEST_SERVE_URL"])
    apps = admin.details().get("applications") or {}
    admin.remove({n for n, a in apps.items()
                  if under in json.dumps((a.get("deployed_app_config") or {}).get("args") or {})})
    admin.close()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench live_serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=Path("/tmp/demo3/var"),
                    help="a data dir (TENSION_DATA_DIR) with a captured minilm-l6 RM")
    ap.add_argument("--toggles", type=int, default=10, help="warm toggles per mode (each a different set)")
    ap.add_argument("--set-size", type=int, default=200, help="neurons per set, spread over all layers")
    ap.add_argument("--probe", type=int, default=64, help="probe pairs per objective")
    ap.add_argument("--regime", default="mixed")
    ap.add_argument("--serve-cpus", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=2, help="rounds of both modes, the order alternated")
    args = ap.parse_args(argv)
    if not all(os.environ.get(k) for k in ("TENSION_TEST_RAY_ADDRESS", "TENSION_TEST_SERVE_URL")):
        print("skipped: TENSION_TEST_RAY_ADDRESS / TENSION_TEST_SERVE_URL not set (source the dev cluster's env)")
        return
    if not (args.data_dir / "meta.db").exists():
        print(f"skipped: {args.data_dir} holds no data dir (meta.db)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-live-serve-") as tmp:
        data = Path(tmp) / "var"
        shutil.copytree(args.data_dir, data, ignore=shutil.ignore_patterns("logs", "*.log"))
        with serve(data, timeout_s=180) as srv:
            row = _checkpoint(srv.url, args.regime)
            n_layers, n_neurons = int(row["n_layers"]), int(row["n_neurons"])
        sets = _sets(args.toggles + 1, n_layers, n_neurons, args.set_size)
        base = {"TENSION_DEVICE": "cpu", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        ray_env = {**base, "TENSION_EXECUTOR": "ray", "TENSION_RAY_ADDRESS": os.environ["TENSION_TEST_RAY_ADDRESS"],
                   "TENSION_SERVE_URL": os.environ["TENSION_TEST_SERVE_URL"],
                   "TENSION_SERVE_NUM_CPUS": str(args.serve_cpus)}
        if os.environ.get("TENSION_TEST_RAY_TOKEN"):
            ray_env["TENSION_RAY_TOKEN"] = os.environ["TENSION_TEST_RAY_TOKEN"]
        load_before = os.getloadavg()
        envs = {"local": base, "serve": ray_env}
        runs: dict[str, list[dict[str, Any]]] = {"local": [], "serve": []}
        try:
            for r in range(args.rounds):  # alternate the order: the first of a round loads a cold page cache
                for mode in (("local", "serve") if r % 2 == 0 else ("serve", "local")):
                    runs[mode].append(_run(mode, data, envs[mode], sets, args.probe, args.regime))
        finally:
            _remove_apps(str(data))
        same = all(abs(a[o] - b[o]) <= 1e-6 * max(1.0, abs(a[o]))
                   for la, lb in zip(runs["local"], runs["serve"], strict=True)
                   for a, b in zip(la["delta_margins"], lb["delta_margins"], strict=True) for o in a)
    summary = {m: _summary(rs) for m, rs in runs.items()}
    rows = [("estimate round trip, warm (median)", "estimate_median_ms", "ms"),
            ("exact all-pairs toggle, warm (median, client)", "exact_median_ms", "ms"),
            ("exact all-pairs toggle, warm (median, server-side)", "exact_server_median_ms", "ms"),
            ("exact all-pairs toggle, warm (median, the session's own compute)", "exact_worker_median_ms", "ms"),
            ("cold: session start-up to LiveReady (median over rounds)", "cold_startup_s", "s"),
            ("cold: first exact toggle, wall (median over rounds)", "cold_first_toggle_s", "s")]
    lines = [f"# Live toggles: Ray Serve vs the local pool ({MODEL} {args.regime} RM, {args.probe} pairs per "
             f"objective)", "",
             f"{args.rounds} rounds (order alternated), each a fresh server per mode: one cold toggle, then "
             f"{args.toggles} warm toggles of different {args.set_size}-neuron sets (the same sets in both modes). "
             f"Serve replica: {args.serve_cpus:g} CPUs; same answers in both modes: {same}; load average before: "
             f"{', '.join(f'{x:.2f}' for x in load_before)}", "",
             "| measure | local pool | Serve | Serve − local |", "|---|---|---|---|"]
    for label, key, unit in rows:
        a, b = summary["local"][key], summary["serve"][key]
        lines.append(f"| {label} | {a:.1f} {unit} | {b:.1f} {unit} | {b - a:+.1f} {unit} |")
    lines += ["", "Cold start per round (start-up s / first toggle s): " + "; ".join(
        f"{m}: " + ", ".join(f"{x['cold_startup_s']:.1f}/{x['cold_first_toggle_s']:.1f}" for x in rs)
        for m, rs in runs.items())]
    write("live_serve", {"summary": summary, "runs": runs, "same_answers": same, "serve_cpus": args.serve_cpus,
                         "probe": args.probe, "set_size": args.set_size, "rounds": args.rounds,
                         "load_before": load_before},
          "\n".join(lines) + "\n")
