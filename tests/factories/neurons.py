"""Neuron captures without a model: realistic `neuron_stats` / `neuron_examples` rows, ingested for real.

A capture of an RM has, for each objective × side × layer × neuron, the statistics a capture job writes
(mean activation A, mean squared change C, fraction positive P, variance, max, token count), and for a
few neurons their top activating examples. Values come from a seeded generator with a shared component
across RMs (so H, R and M overlap partly, as trained RMs do) and token counts that differ per objective
and side (so the token weighting of the score matters).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.core.services import Services
from tests.factories import add_checkpoint, ingest_result
from workers.contract.results import NeuronExampleRow, NeuronStatRow
from workers.contract.vocab import OBJECTIVES, REGIMES, HookPoint, JobKind, Side

MODEL = "tiny-bert"
SHAPE = (3, 16)  # layers × MLP neurons: small, but three layers give early / middle / late thirds
HOSTILE = "<script>window.__xss=1</script>"


@dataclass
class Capture:
    checkpoint: str
    regime: str
    result_key: str
    rows: list[dict[str, Any]] = field(repr=False)
    examples: list[dict[str, Any]] = field(repr=False)


def stat_rows(checkpoint: str, regime: str, *, base_model: str = MODEL, hook: str = HookPoint.down_proj_input,
              shape: tuple[int, int] = SHAPE, rng_seed: int = 0, shared: np.ndarray | None = None,
              with_change: bool = True) -> list[dict[str, Any]]:
    """One `neuron_stats` row per objective × side × layer × neuron."""
    rng = np.random.default_rng(rng_seed)
    n_layers, n_neurons = shape
    base = shared if shared is not None else np.zeros(shape)
    rows = []
    for o, objective in enumerate(OBJECTIVES):
        for s, side in enumerate(Side):
            mean = base + rng.normal(0.0, 1.0, shape) + 0.3 * o - 0.2 * s
            change = rng.gamma(2.0, 0.5, shape)
            frac = rng.uniform(0.05, 0.95, shape)
            n_tokens = int(rng.integers(40, 400))
            for layer in range(n_layers):
                for neuron in range(n_neurons):
                    rows.append({
                        "checkpoint": checkpoint, "base_model": base_model, "regime": regime, "hook": str(hook),
                        "objective": str(objective), "side": str(side), "layer": layer, "neuron": neuron,
                        "mean": float(mean[layer, neuron]),
                        "mean_sq_change": float(change[layer, neuron]) if with_change else None,
                        "frac_pos": float(frac[layer, neuron]), "var": float(change[layer, neuron] * 2),
                        "max": float(abs(mean[layer, neuron]) * 3 + 1), "n_tokens": n_tokens + layer})
    return rows


def example_rows(checkpoint: str, neurons: list[tuple[int, int]], *, per_group: int = 2,
                 rng_seed: int = 0) -> list[dict[str, Any]]:
    """Top activating examples of some neurons; the texts carry markup that pages must escape."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for layer, neuron in neurons:
        for objective in OBJECTIVES:
            for side in Side:
                for rank in range(per_group):
                    rows.append({
                        "checkpoint": checkpoint, "objective": str(objective), "side": str(side), "layer": layer,
                        "neuron": neuron, "rank": rank, "pair_id": f"{objective}-{rank}", "token_pos": int(rank + 3),
                        "value": float(rng.uniform(1, 5)), "text_before": f"Say {HOSTILE} & <b>",
                        "token": "<hi>", "text_after": f" {side} {rank} 'done'"})
    return rows


def add_capture(services: Services, *, regime: str, base_model: str = MODEL, seed: int = 0,
                hook: str = HookPoint.down_proj_input, shape: tuple[int, int] = SHAPE, rng_seed: int = 0,
                shared: np.ndarray | None = None, example_neurons: list[tuple[int, int]] | None = None,
                with_change: bool = True, meta: dict[str, Any] | None = None) -> Capture:
    """A checkpoint row and its capture result, as a finished capture job leaves them (`meta`: the
    checkpoint's recorded meta, e.g. `training_meta(freeze_layers=2)`)."""
    ck = add_checkpoint(services, base_model=base_model, regime=regime, seed=seed, meta=meta)
    rows = stat_rows(ck, regime, base_model=base_model, hook=hook, shape=shape, rng_seed=rng_seed, shared=shared,
                     with_change=with_change)
    examples = example_rows(ck, example_neurons or [], rng_seed=rng_seed)
    tables: dict[Any, list[dict[str, Any]]] = {NeuronStatRow: rows}
    if examples:
        tables[NeuronExampleRow] = examples
    key = ingest_result(services, JobKind.capture, tables, checkpoint=ck,
                        params={"checkpoint": ck, "base_model": base_model, "hook": str(hook)})
    return Capture(ck, regime, key, rows, examples)


def add_three_regimes(services: Services, *, base_model: str = MODEL, seed: int = 0,
                      hook: str = HookPoint.down_proj_input, shape: tuple[int, int] = SHAPE,
                      example_neurons: list[tuple[int, int]] | None = None,
                      meta: dict[str, Any] | None = None) -> dict[str, Capture]:
    """Captured helpful, harmless and mixed RMs of one base model and seed, sharing part of their signal.
    The values depend on seed and shape only, so two base models given the same ones have the same scores."""
    shared = 1.5 * np.random.default_rng(1000 + seed).normal(0.0, 1.0, shape)
    return {str(r): add_capture(services, regime=r, base_model=base_model, seed=seed, hook=hook, shape=shape,
                                rng_seed=17 * seed + i, shared=shared, example_neurons=example_neurons, meta=meta)
            for i, r in enumerate(REGIMES)}


def training_meta(*, freeze_layers: int | None) -> dict[str, Any]:
    """A checkpoint's meta as a finished train job records it (`Checkpoint.meta`: the job's summary), reduced
    to the settings that matter to the neuron pages."""
    return {"preset": "demo", "settings": {"preset": "demo", "freeze_layers": freeze_layers}}


# -- large captures, built columnar ----------------------------------------------------------------------------
def stat_table(checkpoint: str, regime: str, *, base_model: str = MODEL, hook: str = HookPoint.down_proj_input,
               shape: tuple[int, int] = SHAPE, rng_seed: int = 0, shared: np.ndarray | None = None) -> Any:
    """`stat_rows` as an Arrow table built from numpy (same columns, same kind of values), for captures of
    tens of thousands of neurons that row-by-row dicts would make slow."""
    import pyarrow as pa

    from workers.jobs.io import arrow_schema

    rng = np.random.default_rng(rng_seed)
    n = shape[0] * shape[1]
    layer, neuron = (a.ravel().astype(np.int64) for a in np.indices(shape))
    base = (shared if shared is not None else np.zeros(shape)).ravel()
    blocks = []
    for o, objective in enumerate(OBJECTIVES):
        for s, side in enumerate(Side):
            mean = base + rng.normal(0.0, 1.0, n) + 0.3 * o - 0.2 * s
            change = rng.gamma(2.0, 0.5, n)
            text = {"checkpoint": checkpoint, "base_model": base_model, "regime": regime, "hook": str(hook),
                    "objective": str(objective), "side": str(side)}
            cols = {**{k: pa.array([v] * n, pa.string()) for k, v in text.items()},
                    "layer": layer, "neuron": neuron, "mean": mean, "mean_sq_change": change,
                    "frac_pos": rng.uniform(0.05, 0.95, n), "var": change * 2, "max": np.abs(mean) * 3 + 1,
                    "n_tokens": int(rng.integers(40, 400)) + layer}
            blocks.append(pa.table(cols, schema=arrow_schema(NeuronStatRow)))
    return pa.concat_tables(blocks)


def add_large_three_regimes(services: Services, *, shape: tuple[int, int], base_model: str = "large-model",
                            seed: int = 0) -> dict[str, tuple[str, Any]]:
    """Captured helpful, harmless and mixed RMs of a large shape, ingested for real from columnar tables;
    returns {regime: (checkpoint, its neuron_stats Arrow table)}."""
    from tests.factories import ingest_tables

    shared = 1.5 * np.random.default_rng(2000 + seed).normal(0.0, 1.0, shape)
    out = {}
    for i, regime in enumerate(REGIMES):
        ck = add_checkpoint(services, base_model=base_model, regime=str(regime), seed=seed)
        table = stat_table(ck, str(regime), base_model=base_model, shape=shape, rng_seed=31 * seed + i, shared=shared)
        ingest_tables(services, JobKind.capture, {NeuronStatRow.TABLE: table}, checkpoint=ck,
                      params={"checkpoint": ck, "base_model": base_model, "hook": str(HookPoint.down_proj_input)})
        out[str(regime)] = (ck, table)
    return out
