"""Capture: memory does not grow with the data, and capture costs little over a plain forward pass.

Peak RSS is measured in a fresh process per data size (1x, 4x, 16x), so each peak is its own.
Time: capture (A, P, var, max and top-k; no base model) against a plain `model.base_model` forward
of the same length-bucketed batches, best of 3, interleaved.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from typing import Any

from bench.common import write

MODEL = "minilm-l6"
BASE_TEXTS = 32
MAX_LENGTH = 128


def _texts(n: int) -> list[str]:
    from workers.data.loaders import load_bundled
    from workers.data.text import pair_texts

    out: list[str] = []
    for p in load_bundled():
        if p.split == "train":
            out.extend(pair_texts(p))
        if len(out) >= n:
            break
    return out[:n]


def child(n: int) -> None:
    """Run one capture over n texts and print peak RSS (KiB) and the wall time."""
    import resource

    import torch

    from workers.models.registry import load_reward_model
    from workers.neurons.capture import capture_statistics

    torch.manual_seed(0)
    loaded = load_reward_model(MODEL, device="cpu")
    texts = _texts(n)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    capture_statistics(loaded, None, {"all": texts}, max_length=MAX_LENGTH, batch_size=16, top_k=8)
    elapsed = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"n_texts": n, "peak_rss_kib": peak, "rss_after_load_kib": before, "seconds": elapsed}))


def _timing(n: int) -> dict[str, Any]:
    import torch

    from workers.models.registry import load_reward_model
    from workers.models.scoring import iter_batches, tokenize
    from workers.neurons.capture import capture_statistics

    loaded = load_reward_model(MODEL, device="cpu")
    texts = _texts(n)
    batches = list(iter_batches(loaded, tokenize(loaded, texts, MAX_LENGTH), 16))

    def plain() -> None:
        with torch.inference_mode():
            for b in batches:
                loaded.model.base_model(input_ids=b.input_ids, attention_mask=b.attention_mask)

    def capture() -> None:
        capture_statistics(loaded, None, {"all": texts}, max_length=MAX_LENGTH, batch_size=16, top_k=8)

    plain()  # warm-up
    t_plain, t_capture = [], []
    for _ in range(3):
        for fn, acc in ((plain, t_plain), (capture, t_capture)):
            s = time.perf_counter()
            fn()
            acc.append(time.perf_counter() - s)
    return {"n_texts": n, "plain_forward_s": min(t_plain), "capture_s": min(t_capture),
            "ratio": min(t_capture) / min(t_plain), "target_ratio": 1.15}


def main() -> None:
    memory = []
    for mult in (1, 4, 16):
        out = subprocess.run([sys.executable, "-m", "bench.bench_capture", "--child", str(BASE_TEXTS * mult)],
                             capture_output=True, text=True, check=True)
        memory.append({"multiple": mult, **json.loads(out.stdout.strip().splitlines()[-1])})
    peaks = [m["peak_rss_kib"] for m in memory]
    spread = (max(peaks) - min(peaks)) / min(peaks)
    timing = _timing(BASE_TEXTS * 4)
    write("capture", {"model": MODEL, "max_length": MAX_LENGTH, "memory": memory,
                      "peak_rss_spread": spread, "memory_target_spread": 0.10,
                      "memory_ok": spread <= 0.10, "timing": timing, "timing_ok": timing["ratio"] <= 1.15})


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(int(sys.argv[2]))
    else:
        main()
