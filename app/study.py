"""The whole study as one command: train the three regimes, evaluate, capture, then ablate.

Every step is an ordinary job submitted through the API (so it is cached, visible in the UI, and
resumable: rerunning the study reuses every finished job by its result key).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.client import Backend
from workers.contract.vocab import REGIMES, Experiment, JobKind, JobStatus, Regime, Split, Stat


def run_study(backend: Backend, wait: Callable[[Backend, dict[str, Any]], dict[str, Any]], *, model: str,
              preset: str, seeds: list[int], train_limit: int | None, eval_limit: int | None,
              capture_limit: int | None, max_length: int, ablate: bool = True,
              ablate_limit: int | None = 64, dose_percents: list[float] | None = None,
              random_seeds: list[int] | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    def job(kind: JobKind, params: dict[str, Any]) -> dict[str, Any]:
        j = wait(backend, backend.submit(kind, params))
        if j["status"] != JobStatus.succeeded:
            raise RuntimeError(f"{kind} job {j['id']} {j['status']}: {j.get('error')}")
        log(f"{kind} {j['id']} done{' (cached)' if j.get('cached') else ''}")
        return j

    checkpoints: dict[Regime, dict[int, str]] = {r: {} for r in REGIMES}
    for seed in seeds:
        for regime in REGIMES:
            params: dict[str, Any] = {"model": model, "regime": regime, "preset": preset, "seed": seed,
                                      "dataset": {"source": "bundled", "split": Split.train, "limit": train_limit}}
            checkpoints[regime][seed] = job(JobKind.train, params)["result_key"]
    all_cks = [checkpoints[r][s] for s in seeds for r in REGIMES]
    ev = job(JobKind.evaluate, {"checkpoints": all_cks, "max_length": max_length,
                          "dataset": {"source": "bundled", "split": Split.test, "limit": eval_limit}})
    captures = {}
    for seed in seeds:
        for regime in REGIMES:
            captures[(regime, seed)] = job(JobKind.capture, {
                "checkpoint": checkpoints[regime][seed], "base_model": model, "max_length": max_length,
                "dataset": {"source": "bundled", "split": Split.train, "limit": capture_limit}})["result_key"]
    out: dict[str, Any] = {"checkpoints": checkpoints, "evaluation": ev["result_key"],
                           "captures": {f"{r}/{s}": k for (r, s), k in captures.items()}}
    out["overlap"] = backend.get(f"/api/neurons/{model}/overlap?p=10&stat={Stat.A}&seed={seeds[0]}")
    if ablate:
        ablations = {}
        for exp in (Experiment.A, Experiment.B, Experiment.C):
            for seed in seeds:
                for regime in (REGIMES if exp != Experiment.C else (Regime.mixed,)):
                    params = {"experiment": exp, "checkpoint": checkpoints[regime][seed], "max_length": max_length,
                              "limit_per_objective": ablate_limit, "random_seeds": random_seeds or [0, 1, 2],
                              "dataset": {"source": "bundled", "split": Split.test}}
                    if exp == Experiment.A and dose_percents:
                        params["percents"] = dose_percents
                    ablations[f"{exp}/{regime}/{seed}"] = job(JobKind.ablate, params)["result_key"]
        out["ablations"] = ablations
    return out
