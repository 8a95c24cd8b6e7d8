"""Capture on a CUDA GPU: agreement with the CPU, memory over 1x/4x/16x the data, time over plain forward passes.

Needs CUDA; without it this says so and writes nothing (the CPU numbers are `bench_capture`'s).
- Agreement: the tiny GPT-2/Llama/BERT test models, float32 on both devices, same texts: largest difference
  of every statistic and of the top-k values, and the share of top-k texts that agree.
- Memory and time: a randomly initialised Llama with SmolLM2-135M's shape (30 layers x 1,536 neurons, hidden
  576; the cost depends on the shape, not the weights) in bf16, texts that fill a 256-token window, batches
  of 32. Peak GPU memory (max_memory_allocated) of a capture with base over 1x, 4x and 16x the data, with
  plain forward passes as the control; time of capture over plain forward passes of the same texts, paired
  one chunk of texts at a time as in `bench_capture`, with the device synchronised around every call.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np

from bench.bench_capture import _full_window_texts
from bench.common import write

MAX_LENGTH = 256
BATCH_SIZE = 32
BASE_TEXTS = 64
MULTIPLES: tuple[int, ...] = (1, 4, 16)
TIME_TEXTS = 512
ROUNDS = 3
TOP_K = 8
DEVICE = "cuda"


def _texts(tokenizer_model: Any, n: int, fill: int) -> list[str]:
    """Bundled texts of any split that fill `fill` tokens (the GPU runs need more than the training split)."""
    return _full_window_texts(tokenizer_model, n, fill, train_only=False)


def _agreement(strict: bool) -> dict[str, Any]:
    """`strict`: TF32 off and attention by the math kernel, so the GPU's forward pass is plain float32 too and
    any remaining difference would be the capture's own."""
    import contextlib
    import copy
    import dataclasses

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from workers.models.registry import load_base_model, load_reward_model
    from workers.neurons.capture import STAT_NAMES, capture_statistics

    if DEVICE == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = not strict
        torch.backends.cudnn.allow_tf32 = not strict
    def kernel() -> Any:
        return sdpa_kernel(SDPBackend.MATH) if strict else contextlib.nullcontext()

    out: dict[str, Any] = {}
    for name in ("tiny-gpt2", "tiny-llama", "tiny-bert"):
        runs = {}
        rm = load_reward_model(name, device="cpu", seed=0)
        base = load_base_model(name, device="cpu", seed=1)
        texts = _texts(rm, 40, 8)
        for device in ("cpu", DEVICE):
            if device != "cpu":  # the very same float32 weights (loading on CUDA would round them to bf16)
                rm, base = (dataclasses.replace(m, model=cast(Any, copy.deepcopy(m.model)).to(device),
                                                device=torch.device(device)) for m in (rm, base))
            with kernel():
                runs[device] = capture_statistics(rm, base, {"g": texts}, max_length=64, batch_size=8, top_k=4)
        cpu, gpu = runs["cpu"], runs[DEVICE]
        diffs = {s: float(np.nanmax(np.abs(cpu.stat("g", s) - gpu.stat("g", s)))) for s in STAT_NAMES}
        g_cpu, g_gpu = cpu.groups["g"], gpu.groups["g"]
        diffs["top_values"] = float(np.abs(g_cpu.top_values - g_gpu.top_values).max())
        out[name] = {"max_abs_diff": diffs, "top_text_agree": float((g_cpu.top_text == g_gpu.top_text).mean()),
                     "top_pos_agree": float((g_cpu.top_pos == g_gpu.top_pos).mean())}
    return out


def _smollm2_shaped() -> tuple[Any, Any]:
    """(RM, base): two random Llamas with SmolLM2-135M's shape on MiniLM's tokenizer, bf16 on CUDA."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from workers.models.arch import get_architecture
    from workers.models.registry import LoadedModel, configure_tokenizer, load_tokenizer

    tok = configure_tokenizer(load_tokenizer("tiny-llama"), decoder=True)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=2048,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True)
    cfg.num_labels = 1
    out = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model: Any = LlamaForSequenceClassification(cfg)
        model.to(device=DEVICE, dtype=torch.bfloat16).eval()
        out.append(LoadedModel(model=model, tokenizer=tok, name="smollm2-135m-shaped-random",
                               arch=get_architecture(model), device=torch.device(DEVICE)))
    return out[0], out[1]


def _forward(models: list[Any], texts: list[str]) -> None:
    import torch

    from workers.models.scoring import iter_batches, tokenize

    with torch.inference_mode():
        for b in iter_batches(models[0], tokenize(models[0], texts, MAX_LENGTH), BATCH_SIZE):
            for m in models:
                m.model.base_model(input_ids=b.input_ids, attention_mask=b.attention_mask)


def _sync() -> None:
    import torch

    if DEVICE == "cuda":
        torch.cuda.synchronize()


def _memory(rm: Any, base: Any) -> dict[str, Any]:
    import torch

    from workers.neurons.capture import capture_statistics

    texts = _texts(rm, BASE_TEXTS * MULTIPLES[-1], MAX_LENGTH)
    rows: dict[str, list[dict[str, Any]]] = {"capture": [], "plain_forward": []}
    for mult in MULTIPLES:
        part = texts[:BASE_TEXTS * mult]
        runs: list[tuple[str, Callable[[list[str]], Any]]] = [
            ("plain_forward", lambda texts: _forward([base, rm], texts)),
            ("capture", lambda texts: capture_statistics(rm, base, {"all": texts}, max_length=MAX_LENGTH,
                                                         batch_size=BATCH_SIZE, top_k=TOP_K)),
        ]
        for key, fn in runs:
            if DEVICE != "cuda":  # the CPU smoke run checks the plumbing, not the numbers
                fn(part)
                rows[key].append({"multiple": mult, "n_texts": len(part), "peak_mib": 1.0})
                continue
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            before = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            fn(part)
            torch.cuda.synchronize()
            rows[key].append({"multiple": mult, "n_texts": len(part),
                              "peak_mib": (torch.cuda.max_memory_allocated() - before) / 2**20})
    peaks = [r["peak_mib"] for r in rows["capture"]]
    rows_out: dict[str, Any] = dict(rows)
    rows_out["peak_spread"] = (max(peaks) - min(peaks)) / min(peaks)
    return rows_out


def _timing(rm: Any, base: Any) -> dict[str, Any]:
    from workers.neurons.capture import capture_statistics

    texts = _texts(rm, TIME_TEXTS, MAX_LENGTH)
    chunks = [texts[i:i + 4 * BATCH_SIZE] for i in range(0, len(texts), 4 * BATCH_SIZE)]

    def timed(fn: Any, chunk: list[str]) -> float:
        _sync()
        s = time.perf_counter()
        fn(chunk)
        _sync()
        return time.perf_counter() - s

    pairs = {
        "no_base": (lambda c: _forward([rm], c),
                    lambda c: capture_statistics(rm, None, {"all": c}, max_length=MAX_LENGTH,
                                                 batch_size=BATCH_SIZE, top_k=TOP_K)),
        "with_base": (lambda c: _forward([base, rm], c),
                      lambda c: capture_statistics(rm, base, {"all": c}, max_length=MAX_LENGTH,
                                                   batch_size=BATCH_SIZE, top_k=TOP_K)),
    }
    out: dict[str, Any] = {"n_texts": len(texts), "texts_per_call": 4 * BATCH_SIZE, "rounds": ROUNDS}
    for name, (plain, cap) in pairs.items():
        timed(plain, chunks[0]), timed(cap, chunks[0])  # warm-up
        t_plain: list[float] = []
        t_cap: list[float] = []
        for r in range(ROUNDS):
            for i, chunk in enumerate(chunks):
                first, second = ((plain, t_plain), (cap, t_cap)) if (r + i) % 2 == 0 else \
                    ((cap, t_cap), (plain, t_plain))
                first[1].append(timed(first[0], chunk))
                second[1].append(timed(second[0], chunk))
        p, c = np.asarray(t_plain), np.asarray(t_cap)
        out[name] = {"plain_total_s": float(p.sum()), "capture_total_s": float(c.sum()),
                     "ratio_of_totals": float(c.sum() / p.sum()), "median_paired_ratio": float(np.median(c / p))}
        print(f"gpu timing {name}: capture/plain = {out[name]['ratio_of_totals']:.3f}", file=sys.stderr, flush=True)
    return out


def main() -> None:
    import torch

    global DEVICE, BASE_TEXTS, TIME_TEXTS, ROUNDS, MULTIPLES
    if "--smoke-cpu" in sys.argv:  # the plumbing on CPU, tiny sizes, nothing written
        DEVICE, BASE_TEXTS, TIME_TEXTS, ROUNDS, MULTIPLES = "cpu", 2, 8, 1, (1, 2)
        print(_agreement(True), _memory(*_smollm2_shaped()), file=sys.stderr)
        print(_timing(*_smollm2_shaped()), file=sys.stderr)
        return
    if not torch.cuda.is_available():
        print("bench_capture_gpu: no CUDA device here; nothing measured (see bench_capture for the CPU)",
              file=sys.stderr)
        return
    agreement = {"default_settings": _agreement(False), "strict_float32": _agreement(True)}
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    print(f"agreement: {agreement}", file=sys.stderr, flush=True)
    rm, base = _smollm2_shaped()
    memory = _memory(rm, base)
    print(f"memory: {memory}", file=sys.stderr, flush=True)
    import workers.neurons.capture as capture_module

    timing = {}
    for budget_mib in (512, 2048):
        capture_module.GPU_GROUP_BYTES = budget_mib << 20
        timing[f"layer_group_{budget_mib}_mib"] = {
            "layers_per_group": capture_module.layer_group_size(rm.device, 30, 1536, BATCH_SIZE, MAX_LENGTH),
            **_timing(rm, base)}
    write("capture_gpu", {"device": torch.cuda.get_device_name(0), "model": "llama, SmolLM2-135M shape, random, "
                          "bf16", "max_length": MAX_LENGTH, "batch_size": BATCH_SIZE, "top_k": TOP_K,
                          "agreement": agreement, "memory": memory, "timing": timing})


if __name__ == "__main__":
    main()
