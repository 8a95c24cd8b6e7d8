"""Live toggles as a user meets them: estimate at once, exact rounds as they stream, warm sessions.

Over a copy of a data directory with trained and captured `minilm-l6` RMs (a finished demo study:
`tension study --preset demo`, then `--data-dir <its TENSION_DATA_DIR>`), through the product's own server
(`tension serve`, loopback) and, for page-load timings, a real Chromium:

1. Cold, nothing cached: open the neuron dashboard with no live worker running and no estimator table in
   the store; time from navigation start to the first estimate on the page (no click: the panel computes
   its default toggle, the shared set on the mixed RM, and warms the view's RMs), to the first exact round
   and to all pairs exact. Then, with the view's sessions warm, switch RM in the panel: time from the
   select to the new RM's estimate on the page.
2. Cold sessions, estimator tables cached (built by step 1, as any earlier session leaves them): restart
   the server and open the dashboard again.
3. Warm sessions over HTTP: many sets (each overlap part at several p, single-layer slices) on each RM;
   per toggle the time to the estimate (the first answer carries it), to the first exact round and to all
   64 pairs exact (server-side, from the request's arrival), against one plain length-bucketed forward
   pass over the same probe texts measured in this run (`score_texts`, batch 32). Every finished toggle
   is recorded by the product; the agreement of estimate and exact over all of them is read back from
   `/api/live/agreement`.

Targets (issue 12, 2 cores, 64 pairs per objective): estimate <= 0.3 s after the click (median, warm);
first exact round <= 1 s; all pairs exact <= 1.0x the plain forward; first estimate <= 8 s after page
load with no session warm; switching RM warm <= 0.5 s to the estimate. Wall-clock on a shared machine:
the load average is recorded.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import serve, write

MODEL = "minilm-l6"
PER_OBJECTIVE = 64
PARTS = ("shared", "helpful_specific", "harmless_specific", "helpful", "harmless", "mixed")
PERCENTS = (1.0, 5.0, 10.0, 20.0)
TARGETS = {"estimate_s": 0.3, "first_round_s": 1.0, "exact_vs_forward": 1.0, "cold_estimate_s": 8.0,
           "switch_s": 0.5}


def _checkpoints(url: str) -> list[dict[str, Any]]:
    rows = httpx.get(f"{url}/api/neurons/captures", params={"base_model": MODEL}, timeout=30)
    rows.raise_for_status()
    return [r for r in rows.json() if r.get("seed", 0) == 0]


def _poll(http: httpx.Client, rid: str, timeout: float = 300.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {"version": -1}
    while time.monotonic() < deadline:
        body = http.get(f"/api/live/runs/{rid}", params={"wait": 2, "since": body["version"]}).json()
        if body["state"] != "running":
            return body
    raise RuntimeError(f"run {rid} did not finish in {timeout} s")


def _sessions_ready(http: httpx.Client, n: int, timeout: float = 300.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        s = http.get("/api/live/sessions").json()
        if sum(1 for x in s if x["ready"]) >= n:
            return time.monotonic() - started
        time.sleep(0.2)
    raise RuntimeError("the view's sessions did not all get ready")


def browser_open(url: str, switch_to: list[str] | None = None) -> dict[str, Any]:
    """Open the dashboard in Chromium: ms from navigation start to the estimate, first round, all exact;
    then (optionally) switch RM in the panel and time each switch to its estimate."""
    from playwright.sync_api import sync_playwright

    out: dict[str, Any] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{url}/models/{MODEL}/dashboard?seed=0", wait_until="commit")
        page.wait_for_selector("#live-run tr[data-kind=estimate]", timeout=120_000)
        out["estimate_after_load_ms"] = page.evaluate("performance.now()")
        page.wait_for_selector("#live-run tr[data-kind=exact]", timeout=120_000)
        out["first_round_after_load_ms"] = page.evaluate("performance.now()")
        page.wait_for_selector("#live-run[data-state=done]", timeout=300_000)
        out["done_after_load_ms"] = page.evaluate("performance.now()")
        out["page_timing"] = page.inner_text("#run-timing")
        switches = []
        for ck in switch_to or []:
            with httpx.Client(base_url=url, timeout=60) as http:
                _sessions_ready(http, 3)
            t0 = page.evaluate("performance.now()")
            page.select_option("#live-ck", ck)
            page.wait_for_selector(f"#live-shift[data-checkpoint='{ck}'] tr[data-kind=estimate]", timeout=60_000)
            switches.append({"checkpoint": ck, "ms": page.evaluate("performance.now()") - t0,
                             "timing": page.inner_text("#run-timing")})
            page.wait_for_selector("#live-run[data-state=done]", timeout=300_000)
        out["switches"] = switches
        browser.close()
    return out


def plain_forward_s(data_dir: Path, checkpoint: str, repeats: int = 3) -> float:
    """Median seconds of one plain bucketed forward (batch 32) over the live probe's texts, this process."""
    from workers.contract.artifacts import checkpoint_key
    from workers.contract.live import LiveSessionConfig
    from workers.data.text import pair_texts
    from workers.live import Probe
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts
    from workers.storage import ArtifactStore

    store = ArtifactStore(f"file://{data_dir / 'artifacts'}")
    probe = Probe(LiveSessionConfig(store_url=store.url, checkpoint=checkpoint), store)
    texts = [t for pairs in probe.by_objective.values() for p in pairs for t in pair_texts(p)]
    loaded = load_reward_model(MODEL, checkpoint_dir=str(store.local_dir(checkpoint_key(checkpoint))))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        score_texts(loaded, texts, max_length=128, batch_size=32)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def warm_toggles(url: str, checkpoints: list[dict[str, Any]], layers: int) -> list[dict[str, Any]]:
    """Every set on every RM through /ui/live (the page's request), then its run to the end."""
    rows = []
    with httpx.Client(base_url=url, timeout=300) as http:
        for ck in checkpoints:
            cid = ck["checkpoint"]
            sets = [{"part": part, "p": p} for part in PARTS for p in PERCENTS]
            sets += [{"part": "shared", "p": 20.0, "layer": layer} for layer in range(layers)]
            for s in sets:
                q = {"ck": cid, "seed": 0, "probe_limit": PER_OBJECTIVE, **s}
                t0 = time.perf_counter()
                resp = http.get("/ui/live", params=q)
                first_s = time.perf_counter() - t0
                if resp.status_code != 200:
                    rows.append({"checkpoint": cid, **s, "error": resp.text[:200]})
                    continue
                rid = resp.text.split('data-run="', 1)[1].split('"', 1)[0]
                has_estimate = 'data-kind="estimate"' in resp.text
                run = _poll(http, rid)
                t = run["timings"]
                rows.append({"checkpoint": cid, "regime": ck["regime"], **s, "n_neurons": run["n_neurons"],
                             "estimate_in_first_answer": has_estimate, "first_answer_s": first_s,
                             "estimate_ms": t["estimate_ms"], "first_round_ms": t["first_round_ms"],
                             "exact_ms": t["exact_ms"], "control_ms": t["control_ms"], "state": run["state"],
                             "path": (run["exact"] or {}).get("path"),
                             "worker_exact_s": ((run["exact"] or {}).get("answer") or {}).get("timing", {}).get(
                                 "seconds")})
    return rows


def _median(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench live_stream", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, required=True, help="a data dir with captured minilm-l6 RMs")
    ap.add_argument("--skip-browser", action="store_true")
    args = ap.parse_args(argv)
    load_start = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-live-"))
    data = work / "var"
    shutil.copytree(args.data_dir, data, ignore=shutil.ignore_patterns("logs", "*.log", "estimates"))
    result: dict[str, Any] = {"model": MODEL, "per_objective": PER_OBJECTIVE, "data_dir": str(args.data_dir)}
    try:
        with serve(data) as srv:
            cks = _checkpoints(srv.url)
            mixed = next(c for c in cks if c["regime"] == "mixed")
            others = [c["checkpoint"] for c in cks if c["checkpoint"] != mixed["checkpoint"]]
            if not args.skip_browser:
                result["cold_no_cache"] = browser_open(srv.url, switch_to=others)
        if not args.skip_browser:
            with serve(data) as srv:
                result["cold_cached_tables"] = browser_open(srv.url)
        with serve(data) as srv:
            with httpx.Client(base_url=srv.url, timeout=60) as http:
                for c in cks:  # warm every RM (and its estimator) before timing warm toggles
                    r = http.get("/ui/live", params={"ck": c["checkpoint"], "part": "shared", "p": 0.5})
                    rid = r.text.split('data-run="', 1)[1].split('"', 1)[0]
                    _poll(http, rid)
            layers = int(cks[0].get("n_layers", 6))
            rows = warm_toggles(srv.url, cks, layers)
            agreement = httpx.get(f"{srv.url}/api/live/agreement", timeout=60).json()
            agreement.pop("points", None)  # one per set and objective: the page draws them; the file keeps the summary
        forward = {c["checkpoint"]: plain_forward_s(data, c["checkpoint"]) for c in cks}
    finally:
        shutil.rmtree(work, ignore_errors=True)
    ok = [r for r in rows if "error" not in r and r["state"] == "done" and r["path"] == "cached_prefix"]
    all_layer = [r for r in ok if r.get("layer") is None]
    for row in ok:
        row["exact_vs_forward"] = row["exact_ms"] / 1000 / forward[row["checkpoint"]]
    summary = {
        "estimate_ms_median": _median([r["estimate_ms"] for r in ok]),
        "first_answer_s_median": _median([r["first_answer_s"] for r in ok]),
        "first_round_ms_median": _median([r["first_round_ms"] for r in ok]),
        "first_round_ms_max": max((r["first_round_ms"] for r in ok), default=None),
        "exact_ms_median_all_layer": _median([r["exact_ms"] for r in all_layer]),
        "exact_vs_forward_median_all_layer": _median([r["exact_vs_forward"] for r in all_layer]),
        "exact_vs_forward_max_all_layer": max((r["exact_vs_forward"] for r in all_layer), default=None),
        "plain_forward_s": forward, "n_toggles": len(rows), "n_exact_computed": len(ok),
        "estimate_in_first_answer": sum(1 for r in ok if r["estimate_in_first_answer"]),
    }
    result.update({"summary": summary, "toggles": rows, "agreement": agreement, "targets": TARGETS,
                   "loadavg_start": load_start, "loadavg_end": os.getloadavg()})
    write("live_stream", result, summary=_markdown(result))


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x:.0f} ms"


def _markdown(r: dict[str, Any]) -> str:
    s = r["summary"]
    lines = ["# Live toggles: estimate, streamed exact rounds, warm sessions (`python -m bench live_stream`)", "",
             f"minilm-l6, {PER_OBJECTIVE} probe pairs per objective, 2 CPU cores; load average "
             f"{r['loadavg_start'][0]:.2f} at start, {r['loadavg_end'][0]:.2f} at end.", "",
             "| measure | value | target |", "|---|---|---|",
             f"| estimate after the click, median (warm, server-side) | {_ms(s['estimate_ms_median'])} | ≤ 300 ms |",
             f"| first answer (carries the estimate) at the client, median | "
             f"{1000 * (s['first_answer_s_median'] or 0):.0f} ms | |",
             f"| first exact round, median / max | {_ms(s['first_round_ms_median'])} / {_ms(s['first_round_ms_max'])}"
             " | ≤ 1,000 ms |",
             f"| all 64 pairs exact, all-layer sets, median | {_ms(s['exact_ms_median_all_layer'])} | |",
             f"| … ÷ one plain bucketed forward (same texts, same run), median / max | "
             f"{s['exact_vs_forward_median_all_layer'] or 0:.2f} / "
             f"{s['exact_vs_forward_max_all_layer'] or 0:.2f} | ≤ 1.0 |",
             f"| plain forward (s) per RM | {', '.join(f'{v:.2f}' for v in s['plain_forward_s'].values())} | |"]
    for key, label in (("cold_no_cache", "no session warm, no estimator cached (first time ever)"),
                       ("cold_cached_tables", "no session warm, estimator tables in the store")):
        c = r.get(key)
        if c:
            lines.append(f"| dashboard load → first estimate, {label} | {_ms(c['estimate_after_load_ms'])} "
                         "| ≤ 8,000 ms |")
            lines.append(f"| … → first exact round / all exact | {_ms(c['first_round_after_load_ms'])} / "
                         f"{_ms(c['done_after_load_ms'])} | |")
            for sw in c.get("switches", []):
                lines.append(f"| switch RM (warm) → estimate on the page, {sw['checkpoint'][:8]} | {_ms(sw['ms'])} "
                             "| ≤ 500 ms |")
    a = r["agreement"]
    lines += ["", f"Estimate against exact over the recorded toggles ({s['n_exact_computed']} computed exactly; "
              "from `/api/live/agreement`):", "", "```", _agreement_text(a), "```", ""]
    return "\n".join(lines)


def _agreement_text(a: dict[str, Any]) -> str:
    import json

    wanted = ("overall", "by_objective", "by_size", "by_layers", "excluded", "n_recorded")
    keep = {k: v for k, v in a.items() if k in wanted}
    return json.dumps(keep or a, indent=1, default=str)[:6000]


if __name__ == "__main__":
    main()
