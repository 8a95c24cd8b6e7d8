"""Scale: the neuron pages stay fast with a large model in the store, and a small model's pages stay as fast.

Data: a synthetic model of 24 layers × 8,192 neurons captured in 9 checkpoints (3 regimes × 3 seeds,
24 × 8,192 × 2 objectives × 2 sides = 786,432 statistic rows each, 7.08M in all) beside a demo-sized model
(minilm-l6's shape, 6 × 1,536, 3 regimes of seed 0). Rows are written as a capture job writes them
(Parquet in the artifact store, under the job's prefix, in the contract's schema) and stored through the
real ingest path, `StatsStore.ingest` with a `ResultManifest`.

Phase 1 serves a store holding only the demo model; phase 2 adds the large model to the same store and
serves it again. Each phase is a real server (`tension serve`, a subprocess on loopback); one client
requests pages one at a time (gzip accepted, as browsers do), over a fixed shuffled list of views: every
(seed, statistic, p, scatter) of the dashboard and the overlap API, and neuron pages of seeded random
neurons. Each page kind gets a freshly started server and is first requested once per view (the first
pass: its first request of each capture × statistic computes that score array, nothing is cached yet),
then `rounds` times more (steady state, the p50/p95 the targets are held against). Both are reported.
All numbers are wall-clock on a shared 2-core machine.

Targets: large model's dashboard p95 <= 300 ms and <= 1 MB of HTML; overlap API p95 <= 50 ms; the demo
model's pages no slower with the large model in the store than without (p50 within +20%).
"""

from __future__ import annotations

import argparse
import itertools
import os
import random
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import RESULTS, latency_stats, serve, write

BIG_MODEL, BIG_SHAPE, BIG_SEEDS = "synthetic-24x8192", (24, 8192), (0, 1, 2)
DEMO_MODEL, DEMO_SHAPE, DEMO_SEEDS = "minilm-l6", (6, 1536), (0,)
REGIMES = ("helpful", "harmless", "mixed")
PAGE_P95_MS, PAGE_MAX_BYTES, OVERLAP_P95_MS, DEMO_SLOWDOWN = 300.0, 1_000_000, 50.0, 1.20


# -- seeding through the real ingest path -------------------------------------------------------------------
def _repeat(value: str | None, n: int) -> Any:
    import pyarrow as pa

    if value is None:
        return pa.nulls(n, pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, dtype=np.int32)), pa.array([value])).cast(pa.string())


def stat_table(checkpoint: str, base_model: str, regime: str, shape: tuple[int, int], shared: np.ndarray,
               rng: np.random.Generator, hook: str = "down_proj_input") -> Any:
    """One capture's `neuron_stats` rows (objective × side × layer × neuron), columnar, in the contract's schema."""
    import pyarrow as pa

    from workers.contract.results import NeuronStatRow
    from workers.contract.vocab import OBJECTIVES, Side
    from workers.jobs.io import arrow_schema

    n_layers, n_neurons = shape
    n = n_layers * n_neurons
    layer, neuron = (a.ravel().astype(np.int64) for a in np.indices(shape))
    blocks = []
    for o, objective in enumerate(OBJECTIVES):
        for s, side in enumerate(Side):
            mean = (shared + rng.normal(0.0, 1.0, shape) + 0.3 * o - 0.2 * s).ravel()
            change = rng.gamma(2.0, 0.5, n)
            cols = {"checkpoint": _repeat(checkpoint, n), "base_model": _repeat(base_model, n),
                    "regime": _repeat(regime, n), "hook": _repeat(hook, n), "objective": _repeat(str(objective), n),
                    "side": _repeat(str(side), n), "layer": layer, "neuron": neuron, "mean": mean,
                    "mean_sq_change": change, "frac_pos": rng.uniform(0.05, 0.95, n), "var": change * 2,
                    "max": np.abs(mean) * 3 + 1,
                    "n_tokens": np.full(n, int(rng.integers(40_000, 400_000)), dtype=np.int64) + layer}
            blocks.append(pa.table(cols, schema=arrow_schema(NeuronStatRow)))
    return pa.concat_tables(blocks)


def example_table(checkpoint: str, neurons: list[tuple[int, int]], rng: np.random.Generator) -> Any:
    import pyarrow as pa

    from workers.contract.results import NeuronExampleRow
    from workers.contract.vocab import OBJECTIVES, Side
    from workers.jobs.io import rows_table

    rows = [{"checkpoint": checkpoint, "objective": str(o), "side": str(s), "layer": a, "neuron": b, "rank": k,
             "pair_id": f"{o}-{k}", "token_pos": k + 3, "value": float(rng.uniform(1, 5)),
             "text_before": "Say <b>hello</b> & ", "token": "<hi>", "text_after": f" {s} {k}"}
            for a, b in neurons for o in OBJECTIVES for s in Side for k in range(4)]
    table: pa.Table = rows_table(NeuronExampleRow, rows)
    return table


def seed_model(services: Any, base_model: str, shape: tuple[int, int], seeds: tuple[int, ...],
               example_neurons: int = 16) -> dict[str, Any]:
    """Checkpoint rows and one ingested capture result per (seed, regime); returns ingest timings."""
    import pyarrow.parquet as pq

    from app.core.db import Checkpoint, Job, Run
    from workers.contract.artifacts import ResultManifest, ResultTable, artifact_uri, checkpoint_key, job_key
    from workers.contract.vocab import JobKind

    artifacts = services.settings.artifact_store_client()
    timings = []
    for seed in seeds:
        rng = np.random.default_rng(1000 + seed)
        shared = 1.5 * rng.normal(0.0, 1.0, shape)
        picks = [(int(a), int(b)) for a, b in zip(rng.integers(0, shape[0], example_neurons),
                                                   rng.integers(0, shape[1], example_neurons), strict=True)]
        for regime in REGIMES:
            ck, job_id, key = uuid.uuid4().hex[:32], uuid.uuid4().hex[:16], uuid.uuid4().hex
            with services.db.session() as s:
                s.add(Checkpoint(id=ck, base_model=base_model, regime=regime, seed=seed, preset="custom",
                                 job_id=None, meta={"synthetic": True}, path=artifact_uri(checkpoint_key(ck))))
            prefix = job_key(job_id)
            written = []
            with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
                for table, data in (("neuron_stats", stat_table(ck, base_model, regime, shape, shared, rng)),
                                    ("neuron_examples", example_table(ck, picks, rng))):
                    local = Path(tmp) / f"{table}.parquet"
                    pq.write_table(data, local)
                    artifacts.put_file(local, f"{prefix}/{table}.parquet")
                    written.append(ResultTable(table=table, key=f"{prefix}/{table}.parquet", rows=data.num_rows))
            manifest = ResultManifest(job_id=job_id, kind=JobKind.capture, result_key=key, tables=written,
                                      checkpoint=ck)
            params = {"checkpoint": ck, "base_model": base_model, "hook": "down_proj_input"}
            started = time.perf_counter()
            services.store.ingest(manifest, artifacts, prefix)
            timings.append({"seed": seed, "regime": regime, "rows": written[0].rows,
                            "ingest_s": time.perf_counter() - started})
            with services.db.session() as s:
                s.add(Job(id=job_id, kind=str(JobKind.capture), params=params, result_key=key, status="succeeded",
                          progress=1.0, message="done", metrics={}, executor="bench", output_dir=prefix))
                s.add(Run(result_key=key, kind=str(JobKind.capture), job_id=job_id, params=params, summary={}))
    return {"model": base_model, "shape": list(shape), "seeds": list(seeds), "captures": timings,
            "rows": sum(t["rows"] for t in timings), "ingest_s": sum(t["ingest_s"] for t in timings)}


def seed_store(data_dir: Path, models: list[tuple[str, tuple[int, int], tuple[int, ...]]]) -> list[dict[str, Any]]:
    """Open the product's services over `data_dir` (no server running), seed the models, close."""
    from app.core.services import Services
    from app.core.settings import Settings

    services = Services.build(Settings(data_dir=data_dir))
    try:
        out = [seed_model(services, m, shape, seeds) for m, shape, seeds in models]
        services.store.conn.execute("CHECKPOINT")
        return out
    finally:
        services.close()


# -- measuring ---------------------------------------------------------------------------------------------
def dashboard_views(seeds: tuple[int, ...], ps: tuple[float, ...]) -> list[dict[str, Any]]:
    views = [{"seed": s, "stat": st, "p": p, "scatter": sc}
             for s, st, p, sc in itertools.product(seeds, ("A", "C", "P"), ps, ("single", "mixed"))]
    random.Random(0).shuffle(views)
    return views


def _get(http: Any, url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    r = http.get(url, params=params)
    elapsed = time.perf_counter() - started
    if r.status_code != 200:
        raise RuntimeError(f"GET {url} {params}: {r.status_code} {r.text[:300]}")
    return {"s": elapsed, "bytes": len(r.content), "wire_bytes": r.num_bytes_downloaded}


PAGES = ("overlap_api", "dashboard", "neuron_page")


def measure_page(http: Any, page: str, model: str, shape: tuple[int, int], seeds: tuple[int, ...], *,
                 rounds: int, ps: tuple[float, ...], neuron_pages: int) -> dict[str, Any]:
    """One page kind of one model over its views (every dashboard/overlap view, or seeded random neurons):
    a first pass on the freshly started server, then `rounds` steady passes (the latency statistics)."""
    if page == "neuron_page":
        rng = np.random.default_rng(7)
        views: list[dict[str, Any]] = [{"layer": int(rng.integers(shape[0])), "index": int(rng.integers(shape[1]))}
                                       for _ in range(neuron_pages)]
    else:
        views = dashboard_views(seeds, ps)
    per_round, sizes, wire = [], [], []
    for _ in range(1 + rounds):
        times = []
        for v in views:
            if page == "neuron_page":
                got = _get(http, f"/models/{model}/neurons/{v['layer']}/{v['index']}")
            elif page == "dashboard":
                got = _get(http, f"/models/{model}/dashboard", {k: v[k] for k in ("seed", "stat", "p", "scatter")})
            else:
                got = _get(http, f"/api/neurons/{model}/overlap", {k: v[k] for k in ("seed", "stat", "p")})
            times.append(got["s"])
            sizes.append(got["bytes"])
            wire.append(got["wire_bytes"])
        per_round.append(times)
    steady = [t for r in per_round[1:] for t in r]
    out = {**latency_stats(steady), "views": len(views), "rounds": rounds, "first_pass": latency_stats(per_round[0]),
           "all_requests": latency_stats(per_round[0] + steady),
           "max_bytes": max(sizes), "mean_bytes": float(np.mean(sizes)), "max_wire_bytes": max(wire)}
    print(f"{model} {page}: p50 {out['p50_ms']:.1f} ms, p95 {out['p95_ms']:.1f} ms; first pass p50 "
          f"{out['first_pass']['p50_ms']:.1f} ms, p95 {out['first_pass']['p95_ms']:.1f} ms, "
          f"max {out['first_pass']['max_ms']:.1f} ms; max {max(sizes) / 1e6:.2f} MB", flush=True)
    return out


def _phase(data_dir: Path, models: list[tuple[str, tuple[int, int], tuple[int, ...]]], rounds: int,
           ps: tuple[float, ...], neuron_pages: int) -> dict[str, Any]:
    """Each page kind on a freshly started server (so its first pass is cold), every model in turn."""
    import httpx

    out: dict[str, dict[str, Any]] = {m: {} for m, _, _ in models}
    for page in PAGES:
        with serve(data_dir) as server, httpx.Client(base_url=server.url, timeout=300) as http:
            for m, shape, seeds in models:
                out[m][page] = measure_page(http, page, m, shape, seeds, rounds=rounds, ps=ps,
                                            neuron_pages=neuron_pages)
    return out


def _ratio(a: dict[str, Any], b: dict[str, Any], key: str = "p50_ms") -> float:
    return float(b[key] / a[key]) if a.get(key) else float("nan")


def run(rounds: int = 2, ps: tuple[float, ...] = (1.0, 10.0, 25.0), neuron_pages: int = 30,
        big_seeds: tuple[int, ...] = BIG_SEEDS, keep: Path | None = None) -> dict[str, Any]:
    load_start = os.getloadavg()
    root = keep or Path(tempfile.mkdtemp(prefix="bench-scale-"))
    data_dir = root / "var"
    demo = (DEMO_MODEL, DEMO_SHAPE, DEMO_SEEDS)
    big = (BIG_MODEL, BIG_SHAPE, big_seeds)
    try:
        seeded = seed_store(data_dir, [demo])
        alone = _phase(data_dir, [demo], rounds, ps, neuron_pages)
        seeded += seed_store(data_dir, [big])
        db_bytes = (data_dir / "stats.duckdb").stat().st_size
        together = _phase(data_dir, [big, demo], rounds, ps, neuron_pages)
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    b, d0, d1 = together[BIG_MODEL], alone[DEMO_MODEL], together[DEMO_MODEL]
    demo_ratios = {k: _ratio(d0[k], d1[k]) for k in PAGES}
    targets = {
        "big_dashboard_p95_ms": {"value": b["dashboard"]["p95_ms"], "target": PAGE_P95_MS,
                                 "ok": b["dashboard"]["p95_ms"] <= PAGE_P95_MS},
        "big_dashboard_max_html_bytes": {"value": b["dashboard"]["max_bytes"], "target": PAGE_MAX_BYTES,
                                         "ok": b["dashboard"]["max_bytes"] <= PAGE_MAX_BYTES},
        "big_overlap_api_p95_ms": {"value": b["overlap_api"]["p95_ms"], "target": OVERLAP_P95_MS,
                                   "ok": b["overlap_api"]["p95_ms"] <= OVERLAP_P95_MS},
        **{f"demo_{k}_p50_ratio": {"value": v, "target": DEMO_SLOWDOWN, "ok": v <= DEMO_SLOWDOWN}
           for k, v in demo_ratios.items()},
    }
    return {"models": seeded, "stats_rows": sum(m["rows"] for m in seeded), "duckdb_bytes": db_bytes,
            "demo_alone": alone, "with_big_model": together, "demo_p50_ratio_with_big": demo_ratios,
            "targets": targets, "all_ok": all(t["ok"] for t in targets.values()),
            "loadavg_start": load_start, "loadavg_end": os.getloadavg()}


def summary(res: dict[str, Any]) -> str:
    lines = ["# Scale benchmark", "",
             f"{res['stats_rows']:,} statistic rows ({BIG_MODEL}: {BIG_SHAPE[0]} × {BIG_SHAPE[1]:,} neurons × "
             f"{3 * len(res['models'][1]['seeds'])} captures; {DEMO_MODEL}: {DEMO_SHAPE[0]} × {DEMO_SHAPE[1]:,} × 3), "
             f"DuckDB file {res['duckdb_bytes'] / 1e6:.0f} MB. One client, sequential requests, real server.", "",
             "Each page kind is measured on a freshly started server: a first pass over its views (nothing cached "
             f"at the start), then steady passes ({res['with_big_model'][BIG_MODEL]['dashboard']['views']} dashboard "
             f"and overlap views, {res['with_big_model'][BIG_MODEL]['neuron_page']['views']} neurons; "
             f"{res['with_big_model'][BIG_MODEL]['dashboard']['rounds']} steady passes).", "",
             "| store | model | page | steady p50 ms | steady p95 ms | steady p99 ms | first pass p50 / p95 / max ms "
             "| max body |",
             "|---|---|---|---|---|---|---|---|"]
    for phase, label in (("demo_alone", "demo only"), ("with_big_model", "demo + big")):
        for model, m in res[phase].items():
            for page in PAGES:
                s, f = m[page], m[page]["first_pass"]
                lines.append(f"| {label} | {model} | {page} | {s['p50_ms']:.1f} | {s['p95_ms']:.1f} | "
                             f"{s['p99_ms']:.1f} | {f['p50_ms']:.1f} / {f['p95_ms']:.1f} / {f['max_ms']:.1f} | "
                             f"{s['max_bytes'] / 1e3:.0f} kB |")
    lines += ["", "| target | value | limit | ok |", "|---|---|---|---|"]
    for name, t in res["targets"].items():
        lines.append(f"| {name} | {t['value']:.3g} | {t['target']:.3g} | {'yes' if t['ok'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2, help="steady passes over each page's views after the first")
    ap.add_argument("--p", type=float, nargs="+", default=[1.0, 10.0, 25.0], help="p values of the views")
    ap.add_argument("--neuron-pages", type=int, default=30, help="neuron pages requested per model")
    ap.add_argument("--big-seeds", type=int, default=3, help="seeds of the large model (3 regimes each)")
    ap.add_argument("--keep", type=Path, default=None, help="keep the data directory here (default: a temp dir)")
    ap.add_argument("--name", default="scale", help="result file name under bench/results/")
    args = ap.parse_args(argv if argv is not None else [])
    res = run(rounds=args.rounds, ps=tuple(args.p), neuron_pages=args.neuron_pages,
              big_seeds=tuple(range(args.big_seeds)), keep=args.keep)
    write(args.name, res, summary(res))
    print(f"results: {RESULTS / (args.name + '.json')}")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
