"""Ablation factories: captured RMs (neuron_stats), experiment results as `python -m workers` writes them,
and a live pool whose worker answers toggles from a closed formula, so page tests need no model.

Rows go through the real ingest path (`tests.factories.ingest_result`), validated against the contract's
row models; the run row carries the job's normalised `AblateParams`, as a finished job's does.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.ablation.live import LiveTimedAnswer
from app.core.services import Services
from tests.factories import add_checkpoint, ingest_result
from workers.contract.jobs import AblateParams, DatasetRef, NeuronIndexSet
from workers.contract.live import (
    LiveAblationInfo,
    LiveAnswer,
    LiveDelta,
    LiveEstimateAnswer,
    LiveEstimateRequest,
    LiveFlips,
    LiveObjectiveAnswer,
    LiveRound,
    LiveSessionConfig,
    LiveStreamEnd,
    LiveStreamRequest,
    LiveSummary,
    LiveTiming,
    LiveToggleRequest,
)
from workers.contract.results import AblationFlipRow, AblationResultRow, NeuronStatRow
from workers.contract.vocab import (
    OBJECTIVES,
    REGIMES,
    Experiment,
    HookPoint,
    JobKind,
    OverlapPart,
    Regime,
    SelectionMethod,
    Side,
    Split,
)

MODEL = "tiny-bert"
N_LAYERS, N_NEURONS = 2, 16
SUBSETS = {"helpful": ("chat", "advice"), "harmless": ("refusal", "violence")}
OVERALL = ("all", "objective:helpful", "objective:harmless")


# -- captures ---------------------------------------------------------------------------------------------
def capture_stats(checkpoint: str, regime: Regime, *, base_model: str = MODEL, seed: int = 0) -> list[dict[str, Any]]:
    """neuron_stats rows of one captured RM: both objectives and sides, every (layer, neuron), 10 tokens each."""
    rng = np.random.default_rng([list(Regime).index(regime), seed])
    rows = []
    for objective in OBJECTIVES:
        for side in Side:
            values = rng.normal(0.0, 1.0, (N_LAYERS, N_NEURONS))
            for layer in range(N_LAYERS):
                for neuron in range(N_NEURONS):
                    v = float(values[layer, neuron])
                    rows.append({"checkpoint": checkpoint, "base_model": base_model, "regime": regime.value,
                                 "hook": HookPoint.down_proj_input.value, "objective": objective.value,
                                 "side": side.value, "layer": layer, "neuron": neuron, "mean": v,
                                 "mean_sq_change": v * v, "frac_pos": float(v > 0), "var": 1.0, "max": v + 1.0,
                                 "n_tokens": 10})
    return rows


def captured_rms(services: Services, *, base_model: str = MODEL, seed: int = 0) -> dict[Regime, str]:
    """Helpful, harmless and mixed RMs of one base model and seed, each with a capture; {regime: checkpoint}."""
    out = {}
    for regime in REGIMES:
        ck = add_checkpoint(services, base_model=base_model, regime=regime, seed=seed)
        ingest_result(services, JobKind.capture, {NeuronStatRow: capture_stats(ck, regime, base_model=base_model,
                                                                                 seed=seed)},
                      params={"checkpoint": ck, "base_model": base_model}, checkpoint=ck)
        out[regime] = ck
    return out


# -- ablation results -----------------------------------------------------------------------------------
def _row(**values: Any) -> dict[str, Any]:
    return {c: values.get(c) for c in AblationResultRow.columns()}


def _measured(acc0: float, delta: float, rnd: float, n_neurons: int, **extra: Any) -> dict[str, Any]:
    return {"acc0": acc0, "acc": acc0 + delta, "delta": delta, "ci_lo": delta - 0.04, "ci_hi": delta + 0.03,
            "random_delta_mean": rnd, "random_delta_std": 0.01, "excess": delta - rnd,
            "excess_ci_lo": delta - rnd - 0.05, "excess_ci_hi": delta - rnd + 0.05, "n_neurons": n_neurons,
            "n_requested": n_neurons, "tied": False,
            "delta_per_neuron": delta / n_neurons if n_neurons else None,
            "random_delta_per_neuron": rnd / n_neurons if n_neurons else None, **extra}


def rows_a(checkpoint: str, regime: Regime, percents: list[float], seeds: list[int]) -> list[dict[str, Any]]:
    """Experiment A: magnitude- and change-based selections beside random ones (one row per p and seed)."""
    total = N_LAYERS * N_NEURONS
    rows = []
    for p in percents:
        n = round(total * p / 100)
        for i, method in enumerate(SelectionMethod):
            delta = -0.004 * p * (i + 1)
            rows.append(_row(checkpoint=checkpoint, regime=regime, experiment=Experiment.A, condition=method, p=p,
                             grp="all", n_items=8, **_measured(0.75, delta, -0.001 * p, n)))
        for seed in seeds:
            rows.append(_row(checkpoint=checkpoint, regime=regime, experiment=Experiment.A, condition="random", p=p,
                             seed=seed, grp="all", n_items=8, n_neurons=n, acc0=0.75,
                             acc=0.75 - 0.0015 * p + 0.01 * seed, delta=-0.0015 * p + 0.01 * seed))
    return rows


def rows_b(checkpoint: str, regime: Regime, p: float) -> list[dict[str, Any]]:
    """Experiment B: overall and per-subset rows of the magnitude top-p set (subset types helpful/harmless)."""
    groups = [(g, None) for g in OVERALL] + [(f"subset:{s}", t) for t, ss in SUBSETS.items() for s in ss]
    return [_row(checkpoint=checkpoint, regime=regime, experiment=Experiment.B, condition="magnitude", p=p, grp=g,
                 group_type=t, n_items=4 + i, n_flipped=i % 3, **_measured(0.7, -0.02 * (i + 1), 0.005 * i, 3))
            for i, (g, t) in enumerate(groups)]


def rows_c(checkpoint: str, regime: Regime, percents: list[float]) -> list[dict[str, Any]]:
    """Experiment C: each of the specific / shared sets at each p, over all items and per objective."""
    rows = []
    for p in percents:
        for j, part in enumerate((OverlapPart.helpful_specific, OverlapPart.harmless_specific, OverlapPart.shared)):
            for k, g in enumerate(OVERALL):
                d = -0.001 * p * (j + 1) - 0.01 * k
                rows.append(_row(checkpoint=checkpoint, regime=regime, experiment=Experiment.C, condition=part, p=p,
                                 grp=g, n_items=8, transfer0=0.5, transfer=0.5 + d, transfer_delta=d,
                                 random_transfer_mean=d / 2, **_measured(0.8, d, d / 3, int(p) + j)))
    return rows


def rows_single(checkpoint: str, regime: Regime, neuron_set: NeuronIndexSet) -> list[dict[str, Any]]:
    """One set (experiment 'single'), its condition the ablation's key as the worker names it."""
    key = hashlib.sha256(str(neuron_set.as_json()).encode()).hexdigest()[:12]
    return [_row(checkpoint=checkpoint, regime=regime, experiment=Experiment.single, condition=key, grp=g, n_items=8,
                 mean_margin_delta=-0.1 * (i + 1), **_measured(0.75, -0.01 * (i + 1), -0.002, neuron_set.size()))
            for i, g in enumerate(OVERALL)]


def flips(checkpoint: str, experiment: Experiment, rows: list[dict[str, Any]], n: int) -> list[dict[str, Any]]:
    """`n` flipped items per condition of the result's overall rows."""
    out = []
    for cond, p in sorted({(r["condition"], r["p"]) for r in rows if r["grp"] == "all"}, key=str):
        for i in range(n):
            out.append({"checkpoint": checkpoint, "experiment": experiment, "condition": cond, "p": p,
                        "item_id": f"item-{cond}-{p}-{i}", "subset": "chat", "objective": "helpful",
                        "before": True, "after": False, "margin_before": 0.5 + i, "margin_after": -0.25 - i})
    return out


def ablation_result(services: Services, *, checkpoint: str, regime: Regime, experiment: Experiment,
                    percents: list[float] | None = None, neuron_set: dict[str, list[int]] | None = None,
                    n_flips: int = 2) -> tuple[str, dict[str, Any]]:
    """Ingest one finished `ablate` job's tables; returns (result key, the job's normalised params)."""
    typed = AblateParams(experiment=experiment, checkpoint=checkpoint, percents=percents, random_seeds=[0, 1],
                         max_length=64, neuron_set=NeuronIndexSet.model_validate(neuron_set) if neuron_set else None,
                         dataset=DatasetRef(source="bundled", split=Split.test, limit=8))
    if experiment == Experiment.A:
        rows = rows_a(checkpoint, regime, percents or [0.0, 10.0], typed.random_seeds)
    elif experiment == Experiment.B:
        rows = rows_b(checkpoint, regime, (percents or [10.0])[0])
    elif experiment == Experiment.C:
        rows = rows_c(checkpoint, regime, percents or [10.0, 20.0])
    else:
        assert typed.neuron_set is not None
        rows = rows_single(checkpoint, regime, typed.neuron_set)
    tables: dict[type, list[dict[str, Any]]] = {AblationResultRow: rows}
    if n_flips and experiment != Experiment.A:  # experiment A records accuracies only
        tables[AblationFlipRow] = flips(checkpoint, experiment, rows, n_flips)
    params = typed.model_dump(mode="json")
    key = ingest_result(services, JobKind.ablate, tables, params=params,  # type: ignore[arg-type]
                        summary={"experiment": experiment, "regime": regime}, checkpoint=checkpoint)
    return key, params


# -- live toggles ---------------------------------------------------------------------------------------
def answer_for(request: LiveToggleRequest, n_pairs: int) -> LiveAnswer:
    """The fake worker's answer: each ablated neuron moves the chosen reward by -0.01 (helpful) or -0.02
    (harmless) and flips one pair in 100; baseline accuracy 0.75. Mode 'scale' multiplies every shift by
    (1 − factor): 1 changes nothing, 2 moves the other way."""
    n = request.neurons.size()
    s = 1.0 - request.factor if request.mode == "scale" else 1.0
    objectives = {}
    for k, o in enumerate(OBJECTIVES):
        d_chosen = -0.01 * (k + 1) * n * s
        d_acc = -min(0.75, 0.01 * n) * s
        base = LiveSummary(mean_chosen=1.0, mean_rejected=0.2, mean_margin=0.8, accuracy=0.75)
        after = LiveSummary(mean_chosen=1.0 + d_chosen, mean_rejected=0.2, mean_margin=0.8 + d_chosen,
                            accuracy=0.75 + d_acc)
        objectives[o.value] = LiveObjectiveAnswer(
            n_pairs=n_pairs, baseline=base, ablated=after,
            delta=LiveDelta(chosen=d_chosen, rejected=0.0, margin=d_chosen, accuracy=d_acc),
            flips=LiveFlips(to_wrong=round(max(0.0, -d_acc) * n_pairs),
                            to_right=round(max(0.0, d_acc) * n_pairs)))
    info = LiveAblationInfo(key=hashlib.sha256(request.model_dump_json().encode()).hexdigest()[:16],
                            mode=request.mode, hook_point=HookPoint.down_proj_input, n_neurons=n,
                            layers={str(k): len(v) for k, v in request.neurons.layers.items()},
                            factor=request.factor if request.mode == "scale" else None)
    timing = LiveTiming(seconds=0.012, n_ablations_in_call=1, path="cached_prefix",
                        first_layer=min(request.neurons.layers, default=None), recomputed_layers=1)
    return LiveAnswer(ablation=info, objectives=objectives, timing=timing)


@dataclass
class FakeLiveWorker:
    """Stands in for `app.ablation.live.LiveWorker`: answers from `answer_for`, streams two rounds per phase
    (set, then control), and records every request and cancel that reached it."""

    config: LiveSessionConfig
    requests: list[LiveToggleRequest | LiveStreamRequest] = field(default_factory=list)  # exact ones, in order
    estimates: list[LiveEstimateRequest] = field(default_factory=list)
    streams: list[LiveStreamRequest] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    ready: bool = True
    startup_s: float | None = 1.5

    def wait_ready(self, timeout: float | None = None) -> None:
        return None

    def wait_idle(self, timeout: float) -> bool:
        return True

    def toggle(self, request: LiveToggleRequest) -> LiveTimedAnswer:
        self.requests.append(request)
        return LiveTimedAnswer(answer=answer_for(request, self.config.probe.limit or 64), roundtrip_ms=15.0)

    def _estimated(self, neurons: NeuronIndexSet, request: LiveEstimateRequest) -> dict[str, Any]:
        exact = answer_for(LiveToggleRequest(neurons=neurons, mode=request.mode, factor=request.factor),
                           self.config.probe.limit or 64)
        return {o: {"n_pairs": a.n_pairs, "baseline_accuracy": a.baseline.accuracy,
                    "baseline_mean_margin": a.baseline.mean_margin, "delta_margin": a.delta.margin / 2,
                    "delta_accuracy": a.delta.accuracy / 2} for o, a in exact.objectives.items()}

    def estimate(self, request: LiveEstimateRequest, timeout: float = 0) -> tuple[LiveEstimateAnswer, float]:
        """Half the fake exact answer's shift (an estimate that is off, as real ones can be); the first call
        builds the estimator. The control is the same number of neurons shifted by one index."""
        self.estimates.append(request)
        control = fake_control(request.neurons)
        answer = LiveEstimateAnswer.model_validate({
            "id": request.id, "objectives": self._estimated(request.neurons, request),
            "control": self._estimated(control, request) if request.control else None,
            "control_neurons": control.as_json() if request.control else None, "seconds": 0.001, "build_s": 2.5,
            "built_now": len(self.estimates) == 1})
        return answer, 3.0

    def stream(self, request: LiveStreamRequest, timeout: float = 0) -> Iterator[LiveRound | LiveStreamEnd]:
        self.streams.append(request)
        self.requests.append(request)
        n_pairs = self.config.probe.limit or 64
        phases = [("set", request.neurons)] + ([("control", fake_control(request.neurons))] if request.control else [])
        rounds = 0
        for phase, neurons in phases:
            exact = answer_for(LiveToggleRequest(neurons=neurons, mode=request.mode, factor=request.factor), n_pairs)
            for r in (1, 2):
                if request.id in self.cancels:
                    yield LiveStreamEnd(id=request.id, end="cancelled", rounds_computed=rounds, seconds=0.02)
                    return
                rounds += 1
                running = {o: {"n_done": n_pairs * r // 2, "n_total": n_pairs, "delta_margin": a.delta.margin,
                               "delta_margin_ci": [a.delta.margin - 0.01, a.delta.margin + 0.01],
                               "delta_accuracy": a.delta.accuracy,
                               "delta_accuracy_ci": [a.delta.accuracy - 0.05, a.delta.accuracy + 0.05],
                               "flips_to_wrong": a.flips.to_wrong, "flips_to_right": 0}
                           for o, a in exact.objectives.items()}
                yield LiveRound.model_validate({
                    "id": request.id, "phase": phase, "round": r, "n_rounds": 2, "seconds": 0.01 * rounds,
                    "queued_s": 0.0, "objectives": running, "final": r == 2, "path": "cached_prefix",
                    "answer": exact.model_copy(update={"id": request.id}) if r == 2 else None,
                    "control_neurons": neurons.as_json() if phase == "control" else None})
        yield LiveStreamEnd(id=request.id, end="done", rounds_computed=rounds, seconds=0.01 * rounds)

    def cancel(self, rid: str) -> None:
        self.cancels.append(rid)


def fake_control(neurons: NeuronIndexSet) -> NeuronIndexSet:
    """The fake's layer-matched control: each neuron's index + 1 (mod 16), same count per layer."""
    return NeuronIndexSet.model_validate({str(k): sorted({(i + 1) % N_NEURONS for i in v})
                                          for k, v in neurons.layers.items()})


@dataclass
class FakeLivePool:
    """Stands in for `app.ablation.live.LivePool` (set as `app.state.live_pool`): records every config and
    toggle that reached a worker."""

    workers: dict[str, FakeLiveWorker] = field(default_factory=dict)
    warmed: list[str] = field(default_factory=list)

    def get(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> FakeLiveWorker:
        if key not in self.workers:
            self.workers[key] = FakeLiveWorker(make_config())
        return self.workers[key]

    def warm(self, key: str, make_config: Callable[[], LiveSessionConfig]) -> FakeLiveWorker:
        self.warmed.append(key)
        return self.get(key, make_config)

    def status(self) -> list[dict[str, Any]]:
        return [{"key": k, "ready": True, "startup_s": w.startup_s, "rss_mb": 100.0, "model": "fake"}
                for k, w in self.workers.items()]

    def requests(self) -> list[LiveToggleRequest | LiveStreamRequest]:
        return [r for w in self.workers.values() for r in w.requests]

    def streamed(self) -> list[LiveStreamRequest]:
        return [r for w in self.workers.values() for r in w.streams]

    def close(self) -> None:
        self.workers.clear()
