"""How much memory a job asks its executor for, from the size of the model it loads: the one rule.

memory = RUNTIME_BYTES + parameters x BYTES_PER_PARAMETER[kind], where

- RUNTIME_BYTES (1 GiB) is the worker before any model: Python, torch, transformers, tokenizers, a batch;
- train keeps fp32 weights, gradients and Adam's two moments (16 B a parameter) plus activations (4 B);
- capture and ablate hold two models (the RM and its base, or the RM and the objective RMs it is compared
  with) in fp32 (8 B), plus activations and loading copies (4 B);
- score and evaluate hold one fp32 model (4 B) and as much again for activations and the loading copy.

A model of unknown size (a hub id whose config is not fetched here) asks for no memory: settings decide.
"""

from __future__ import annotations

from workers.contract.vocab import JobKind

GIB = 1024**3
RUNTIME_BYTES = 1 * GIB
BYTES_PER_PARAMETER: dict[JobKind, int] = {
    JobKind.train: 20, JobKind.capture: 12, JobKind.ablate: 12, JobKind.score: 8, JobKind.evaluate: 8,
}


def memory_bytes(kind: JobKind | str, parameters: int) -> int:
    """Bytes of host memory one job of `kind` on a model of `parameters` asks for (see the module doc)."""
    return RUNTIME_BYTES + parameters * BYTES_PER_PARAMETER[JobKind(kind)]


def default_request(kind: JobKind | str, parameters: int | None, *, gpu: bool) -> dict[str, float]:
    """Resources one job asks for before settings override them: a CPU, its memory when the model's size is
    known, and a GPU when the cluster has them (every kind runs a model)."""
    req: dict[str, float] = {"CPU": 1.0}
    if parameters is not None:
        req["memory"] = float(memory_bytes(kind, parameters))
    if gpu:
        req["GPU"] = 1.0
    return req
