"""Capture: memory does not grow with the data, and capture costs little over a plain forward pass.

Data: bundled training texts that fill the 128-token window (most HH-RLHF conversations do), so every batch
has the same shape and 1x, 4x and 16x differ only in how much data streams through; with mixed lengths the
larger runs would also contain longer batches and the peak would measure the longest text, not the data.

Memory: a fresh process per size (32, 128 and 512 texts) loads both models and runs the capture with the base
model (the job's full work: A, C, P, var, max, top-k); its peak anonymous memory (see `_AnonPeak`) is the
measure, target: the three peaks within 10%. Peak RSS (ru_maxrss) is recorded too, and the same for plain
forward passes over the same data as a control, so the part that is not the capture's shows.
Time: capture against plain forward passes of the same batches through the same models (RM alone; and RM +
base model for the capture that computes C), timed in back-to-back pairs one batch at a time (see
`_timing`). Both sides start from the texts, so both include tokenising and length-bucketing (as scoring
does). Target: total capture time / total plain time <= 1.15.
The load average is recorded: the numbers are wall-clock on a shared 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

import numpy as np

from bench.common import write

MODEL = "minilm-l6"
BASE_TEXTS = 32
MULTIPLES = (1, 4, 16)
MAX_LENGTH = 128
BATCH_SIZE = 16
TOP_K = 8
TIME_TEXTS = 256
ROUNDS = 3
MEMORY_TARGET = 0.10
TIME_TARGET = 1.15


def _full_window_texts(loaded: Any, n: int, fill: int = MAX_LENGTH, train_only: bool = True) -> list[str]:
    """The first n bundled texts (chosen and rejected sides; training split only unless told) that fill
    `fill` tokens."""
    from workers.data.loaders import load_bundled
    from workers.data.text import pair_texts
    from workers.models.scoring import tokenize

    out: list[str] = []
    for p in load_bundled():
        if train_only and p.split != "train":
            continue
        texts = list(pair_texts(p))
        out.extend(t for t, ids in zip(texts, tokenize(loaded, texts, fill), strict=True) if len(ids) >= fill)
        if len(out) >= n:
            return out[:n]
    raise RuntimeError(f"only {len(out)} bundled texts fill {fill} tokens; {n} needed")


class _AnonPeak:
    """Peak anonymous resident memory (RssAnon) of this process, sampled every millisecond by a thread.

    ru_maxrss alone would also count file-backed pages: libtorch's code is paged in lazily as new kernels
    run, which adds tens of MiB over the first dozens of batches of ANY forward loop (measured: +56 MiB over
    32 plain batches), unrelated to the data. Anonymous memory is what the capture itself allocates.
    """

    def __init__(self) -> None:
        import threading

        self.peak_kib = self.now()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def now() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])
        return 0

    def _run(self) -> None:
        while not self._stop.wait(0.001):
            self.peak_kib = max(self.peak_kib, self.now())

    def __enter__(self) -> _AnonPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_kib = max(self.peak_kib, self.now())


def child(n: int, mode: str) -> None:
    """One capture with base (or, as the control, plain forwards of both models) over n texts in this fresh
    process; print the peaks and the wall time as JSON."""
    import resource

    import torch

    from workers.models.registry import load_base_model, load_reward_model
    from workers.models.scoring import iter_batches, tokenize
    from workers.neurons.capture import capture_statistics

    torch.manual_seed(0)
    rm = load_reward_model(MODEL, device="cpu")
    base = load_base_model(MODEL, device="cpu")
    texts = _full_window_texts(rm, n)
    anon_before = _AnonPeak.now()
    started = time.perf_counter()
    with _AnonPeak() as anon:
        if mode == "capture":
            capture_statistics(rm, base, {"all": texts}, max_length=MAX_LENGTH, batch_size=BATCH_SIZE,
                               top_k=TOP_K)
        else:
            with torch.inference_mode():
                for b in iter_batches(rm, tokenize(rm, texts, MAX_LENGTH), BATCH_SIZE):
                    for m in (base, rm):
                        m.model.base_model(input_ids=b.input_ids, attention_mask=b.attention_mask)
    elapsed = time.perf_counter() - started
    print(json.dumps({"mode": mode, "n_texts": n, "peak_anon_kib": anon.peak_kib, "anon_before_kib": anon_before,
                      "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "seconds": round(elapsed, 3)}))


def _timing() -> dict[str, Any]:
    """Pairs timed back to back, one batch of texts at a time, order alternating.

    Whole-run timings on this shared machine drift by 10-20% between rounds, more than the effect measured;
    pairing each capture call with a plain pass over the same 16 texts, seconds apart, cancels the drift.
    Each pair's capture starts from empty accumulators, so every call pays for building the top-k from
    scratch: pessimistic against one long capture, where few texts still enter the top-k.
    """
    import torch

    from workers.models.registry import load_base_model, load_reward_model
    from workers.models.scoring import iter_batches, tokenize
    from workers.neurons.capture import capture_statistics

    rm = load_reward_model(MODEL, device="cpu")
    base = load_base_model(MODEL, device="cpu")
    texts = _full_window_texts(rm, TIME_TEXTS)
    chunks = [texts[i:i + BATCH_SIZE] for i in range(0, len(texts), BATCH_SIZE)]

    def forward(models: list[Any], chunk: list[str]) -> None:
        with torch.inference_mode():
            for b in iter_batches(rm, tokenize(rm, chunk, MAX_LENGTH), BATCH_SIZE):
                for m in models:
                    m.model.base_model(input_ids=b.input_ids, attention_mask=b.attention_mask)

    def capture(with_base: bool, chunk: list[str]) -> None:
        capture_statistics(rm, base if with_base else None, {"all": chunk}, max_length=MAX_LENGTH,
                           batch_size=BATCH_SIZE, top_k=TOP_K)

    pairs = {
        "no_base": (lambda c: forward([rm], c), lambda c: capture(False, c)),
        "with_base": (lambda c: forward([base, rm], c), lambda c: capture(True, c)),
    }
    out: dict[str, Any] = {"n_texts": TIME_TEXTS, "rounds": ROUNDS, "pairs_per_variant": ROUNDS * len(chunks)}
    for name, (plain, cap) in pairs.items():
        plain(chunks[0]), cap(chunks[0])  # warm-up
        t_plain: list[float] = []
        t_cap: list[float] = []
        for r in range(ROUNDS):
            for i, chunk in enumerate(chunks):
                order = [(plain, t_plain), (cap, t_cap)]
                for fn, acc in (order if (r + i) % 2 == 0 else order[::-1]):
                    s = time.perf_counter()
                    fn(chunk)
                    acc.append(time.perf_counter() - s)
        p, c = np.asarray(t_plain), np.asarray(t_cap)
        out[name] = {"plain_total_s": float(p.sum()), "capture_total_s": float(c.sum()),
                     "ratio_of_totals": float(c.sum() / p.sum()), "median_paired_ratio": float(np.median(c / p)),
                     "paired_ratio_p10_p90": [float(x) for x in np.percentile(c / p, [10, 90])]}
        print(f"timing {name}: capture/plain = {out[name]['ratio_of_totals']:.3f} (median pair "
              f"{out[name]['median_paired_ratio']:.3f})", file=sys.stderr, flush=True)
    worst = max(out[n]["ratio_of_totals"] for n in pairs)
    out.update({"worst_ratio": worst, "target_ratio": TIME_TARGET, "ok": worst <= TIME_TARGET})
    return out


def _spread(values: list[int]) -> float:
    return (max(values) - min(values)) / min(values)


def main() -> None:
    load_before = os.getloadavg()
    memory: dict[str, list[dict[str, Any]]] = {"capture": [], "plain_forward": []}
    for mode, key in (("capture", "capture"), ("plain", "plain_forward")):
        for mult in MULTIPLES:
            out = subprocess.run([sys.executable, "-m", "bench.bench_capture", "--child", str(BASE_TEXTS * mult),
                                  "--mode", mode], capture_output=True, text=True, check=True)
            row = {"multiple": mult, **json.loads(out.stdout.strip().splitlines()[-1])}
            memory[key].append(row)
            print(f"{mode} over {BASE_TEXTS * mult} texts: peak anonymous {row['peak_anon_kib'] / 1024:.0f} MiB, "
                  f"peak RSS {row['peak_rss_kib'] / 1024:.0f} MiB", file=sys.stderr, flush=True)
    anon_spread = _spread([m["peak_anon_kib"] for m in memory["capture"]])
    timing = _timing()
    write("capture", {
        "model": MODEL, "max_length": MAX_LENGTH, "batch_size": BATCH_SIZE, "top_k": TOP_K,
        "load_average_before": load_before, "load_average_after": os.getloadavg(),
        "memory": memory,
        "peak_anon_spread": anon_spread,
        "peak_rss_spread": _spread([m["peak_rss_kib"] for m in memory["capture"]]),
        "plain_forward_peak_rss_spread": _spread([m["peak_rss_kib"] for m in memory["plain_forward"]]),
        "capture_over_plain_anon_kib": [c["peak_anon_kib"] - p["peak_anon_kib"]
                                        for c, p in zip(memory["capture"], memory["plain_forward"], strict=True)],
        "memory_target_spread": MEMORY_TARGET, "memory_ok": anon_spread <= MEMORY_TARGET,
        "timing": timing, "timing_ok": timing["ok"],
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=("capture", "plain"), default="capture", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.mode)
    else:
        main()
