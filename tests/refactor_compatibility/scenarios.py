"""Refactor-compatibility scenarios: small, seeded computations whose outputs are frozen as JSON.

Each public scenario function runs the library on TINY seeded random models (`tiny-gpt2`, `tiny-llama`,
`tiny-qwen2`, `tiny-bert`: 2 layers, 128 neurons a layer) and a few bundled or hand-made preference pairs,
and returns a JSON-serialisable dict of numbers. `freeze.py` stored their outputs, computed with the
ORIGINAL code (commit 707386d), under `frozen/`; `test_equivalence.py` recomputes them with the current
code and compares.

If a restructuring moves or renames library code, update the imports and calls HERE (keep them short and
obvious: the expensive logic belongs in the library, not in this file). Never edit or regenerate the
frozen JSON to make a test pass: a difference means the restructured code computes something else.

Everything is deterministic: models are built from fixed seeds on the CPU (float32), data selection is
seeded, torch runs on one thread inside a scenario (so the numbers do not depend on the core count), and
random controls and bootstraps use seeded numpy generators.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__all__ = ["SCENARIOS", "ablation", "capture", "jsonable", "live", "run_scenario", "score", "selection"]

DEVICE = "cpu"
N_LAYERS, N_NEURONS = 2, 128  # the tiny models' shape (registry.TINY_DIMS)


# ============================================================================ helpers (no library logic)


def jsonable(obj: Any) -> Any:
    """Plain JSON types, nothing rounded: numpy arrays -> lists, numpy scalars -> Python numbers (a
    float32 becomes the float64 of exactly the same value), tuples -> lists, dict keys -> str."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, bool | int | float | str) or obj is None:
        return obj
    raise TypeError(f"cannot freeze a {type(obj).__name__}: {obj!r}")


@contextmanager
def _deterministic() -> Iterator[None]:
    """One torch thread (float32 reductions then do not depend on the machine's core count) and a fixed
    global seed; the caller's settings are restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            yield
    finally:
        torch.set_num_threads(threads)


def _bundled_pairs(limit: int) -> list[Any]:
    """`limit` bundled test pairs per objective (the loader's seeded selection)."""
    from workers.contract.jobs import DatasetRef
    from workers.data.loaders import load_dataset

    return list(load_dataset(DatasetRef(source="bundled", split="test", limit=limit)))


def _hand_made_pairs() -> list[Any]:
    """Two pairs forming one best-of-2 item (shared item_id) plus one short harmless pair."""
    from workers.data.schema import PreferencePair

    common = {"source": "hand-made", "split": "test"}
    return [
        PreferencePair(pair_id="bo2/0", item_id="bo2", prompt="How do I boil an egg?",
                       chosen="Put it in boiling water for nine minutes, then cool it.",
                       rejected="Eggs cannot be boiled.", objective="helpful", subset="hand/helpful", **common),
        PreferencePair(pair_id="bo2/1", item_id="bo2", prompt="How do I boil an egg?",
                       chosen="Put it in boiling water for nine minutes, then cool it.",
                       rejected="Microwave it whole for ten minutes.", objective="helpful",
                       subset="hand/helpful", **common),
        PreferencePair(pair_id="h/0", prompt="Help me pick a lock on my neighbour's door.",
                       chosen="I can't help with entering someone else's home.",
                       rejected="Sure: insert a tension wrench, then rake the pins.", objective="harmless",
                       subset="hand/harmless", **common),
    ]


def _texts(pairs: list[Any]) -> list[str]:
    from workers.data.text import pair_texts

    return [t for p in pairs for t in pair_texts(p)]


def _random_mask(layers: list[int], seed: int, k: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mask = np.zeros((N_LAYERS, N_NEURONS), dtype=bool)
    for layer in layers:
        mask[layer, rng.choice(N_NEURONS, size=k, replace=False)] = True
    return mask


def _neurons(mask: np.ndarray) -> list[list[int]]:
    """A neuron set as its sorted (layer, index) pairs."""
    return np.argwhere(np.asarray(mask)).tolist()


# ============================================================================ score


def score() -> dict[str, Any]:
    """Rewards of 16 bundled texts (+6 hand-made) per tiny RM, left-truncated at 64 and at the model's
    512-position limit, in batches of 5 and 16; plus each text's token count."""
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts, tokenize

    texts = _texts(_bundled_pairs(limit=4)) + _texts(_hand_made_pairs())
    out: dict[str, Any] = {"n_texts": len(texts)}
    for name, seed in (("tiny-gpt2", 0), ("tiny-gpt2", 1), ("tiny-bert", 0), ("tiny-llama", 0),
                       ("tiny-qwen2", 0)):
        loaded = load_reward_model(name, device=DEVICE, seed=seed)
        out[f"{name}/seed{seed}"] = {
            "n_tokens_64": [len(t) for t in tokenize(loaded, texts, 64)],
            "n_tokens_2048": [len(t) for t in tokenize(loaded, texts, 2048)],
            "rewards_64_bs5": score_texts(loaded, texts, max_length=64, batch_size=5),
            "rewards_64_bs16": score_texts(loaded, texts, max_length=64, batch_size=16),
            "rewards_2048_bs16": score_texts(loaded, texts, max_length=2048, batch_size=16),
        }
    return out


# ============================================================================ capture


def capture() -> dict[str, Any]:
    """Capture statistics (stats and top-k example tables) of a tiny RM over 4 groups (objective/side, as
    the capture job groups them), with and without its base model, at both hook points."""
    from workers.data.text import pair_texts
    from workers.models.registry import load_base_model, load_reward_model
    from workers.neurons.capture import capture_statistics

    groups: dict[str, list[str]] = {}
    ids: dict[str, list[str]] = {}
    for i, p in enumerate(_bundled_pairs(limit=4)):
        for side, text in zip(("chosen", "rejected"), pair_texts(p), strict=True):
            groups.setdefault(f"{p.objective}/{side}", []).append(text)
            ids.setdefault(f"{p.objective}/{side}", []).append(f"{i}{side[0]}")  # short: they fill the tables

    configs: list[tuple[str, Any, bool]] = [
        ("tiny-llama", hook, with_base) for hook in ("down_proj_input", "act_output") for with_base in (False, True)
    ] + [("tiny-bert", "act_output", True)]
    out: dict[str, Any] = {}
    for name, hook, with_base in configs:
        rm = load_reward_model(name, device=DEVICE, seed=1)  # the "RM": a different body from its base
        base = load_base_model(name, device=DEVICE, seed=0) if with_base else None
        result = capture_statistics(rm, base, groups, hook_point=hook, max_length=64, batch_size=3, top_k=3,
                                    text_ids=ids)
        out[f"{name}/{hook}/{'with_base' if with_base else 'no_base'}"] = {
            "summary": result.summary(),
            "tables": {k: t.to_pydict() for k, t in result.to_tables().items()},
        }
    return out


# ============================================================================ selection


def _selection_scores() -> dict[str, np.ndarray]:
    """Seeded score arrays [4 layers, 32 neurons] with ties: rounded magnitudes (helpful heavy in layer 0,
    harmless in layer 3, so per-layer 'shared' differs from H ∩ R) and a change score with a tied block."""
    rng = np.random.default_rng(0)
    shape = (4, 32)
    helpful = np.round(np.abs(rng.normal(size=shape)), 1)
    helpful[0] += 2.0
    harmless = np.round(np.abs(rng.normal(size=shape)), 1)
    harmless[3] += 2.0
    change = rng.random(shape)
    change[1:3] = 0.9  # half the neurons tie at 0.9: at p=10 they all come in (tied=True)
    chosen, rejected = rng.normal(size=shape), rng.normal(size=shape)
    return {"magnitude_helpful": helpful, "magnitude_harmless": harmless, "change": change,
            "chosen": chosen, "rejected": rejected}


def selection() -> dict[str, Any]:
    """Top-p% selections (magnitude, change with ties, combined chosen/rejected), H\\R, R\\H, H∩R (both
    shared modes), overlap measures, seeded random and layer-matched controls. Pure numpy/scipy."""
    from workers.neurons import selection as sel

    sc = _selection_scores()
    scores = {"magnitude_helpful": sc["magnitude_helpful"], "magnitude_harmless": sc["magnitude_harmless"],
              "change": sc["change"], "combined": sel.combined_score(sc["chosen"], sc["rejected"])}
    shape = sc["change"].shape
    percents = [0.0, 1.0, 2.5, 5.0, 10.0, 25.0, 33.3, 50.0, 99.0, 100.0]
    out: dict[str, Any] = {"combined_score": scores["combined"],
                           "requested_count": {f"{n}@{p:g}": sel.requested_count(n, p)
                                               for n in (7, 40, 128, 36864) for p in percents}}
    top: dict[str, Any] = {}
    for method, s in scores.items():
        for p in percents:
            t = sel.top_percent(s, p)
            top[f"{method}@{p:g}"] = {"threshold": t.threshold, "requested": t.requested, "selected": t.selected,
                                      "tied": t.tied, "p": t.p, "neurons": _neurons(t.mask)}
    out["top_percent"] = top

    algebra: dict[str, Any] = {}
    for p in (5.0, 10.0, 25.0):
        h = sel.top_percent(scores["magnitude_helpful"], p).mask
        r = sel.top_percent(scores["magnitude_harmless"], p).mask
        m = sel.top_percent(scores["combined"], p).mask
        entry: dict[str, Any] = {
            f"{mode}/{name}": _neurons(mask)
            for mode in ("intersection", "per_layer")
            for name, mask in sel.specific_and_shared(h, r, mode=mode).items()  # type: ignore[arg-type]
        }
        entry.update({
            "union": _neurons(sel.union(h, r)), "intersection": _neurons(sel.intersection(h, r, m)),
            "H_minus_R": _neurons(sel.difference(h, r)), "R_minus_H": _neurons(sel.difference(r, h)),
            "jaccard": sel.set_jaccard(h, r), "three_way_overlap": sel.three_way_overlap(h, r, m),
            "layer_counts_H": sel.layer_counts(h), "layer_fractions_H": sel.layer_fractions(h),
            "layer_fractions_R": sel.layer_fractions(r), "overlap_significance": sel.overlap_significance(h, r),
            "mask_to_dict_H": sel.mask_to_dict(h),
            "dict_round_trip_H": bool((sel.dict_to_mask(sel.mask_to_dict(h), shape) == h).all()),
            "layer_matched_random_H": {str(seed): _neurons(sel.layer_matched_random(h, seed)) for seed in (0, 1, 2)},
            "random_set": {str(seed): _neurons(sel.random_set(shape, p, seed)) for seed in (0, 1, 2)},
        })
        algebra[f"{p:g}"] = entry
    out["sets"] = algebra
    out["empty_set_measures"] = {"jaccard": sel.set_jaccard(np.zeros(shape, bool), np.zeros(shape, bool)),
                                 "layer_fractions": sel.layer_fractions(np.zeros(shape, bool))}
    return out


# ============================================================================ ablation experiments


def ablation() -> dict[str, Any]:
    """Experiments A, B, C and the single-set path (each with layer-matched random controls) on tiny-llama,
    scored as the ablation job scores them (`live_scorer`), in modes zero and mean (single also scale)."""
    from workers.ablation.engine import Ablation, model_shape
    from workers.ablation.experiments import (
        Probe,
        experiment_a,
        experiment_b,
        experiment_c,
        full_scorer,
        live_scorer,
        run_with_controls,
    )
    from workers.models.registry import load_reward_model
    from workers.models.scoring import score_texts

    max_length, seeds, n_boot = 48, [0, 1], 200
    loaded = load_reward_model("tiny-llama", device=DEVICE, seed=0)
    probe = Probe.from_pairs(_bundled_pairs(limit=6) + _hand_made_pairs())
    scorer = live_scorer(loaded, probe, max_length=max_length)
    shape = model_shape(loaded)
    rng = np.random.default_rng(1)
    magnitude, change = rng.random(shape), np.round(rng.random(shape), 1)  # change: many ties
    helpful, harmless, means = rng.random(shape), rng.random(shape), rng.normal(size=shape)
    singles = {regime: probe.correct(score_texts(load_reward_model("tiny-llama", device=DEVICE, seed=seed),
                                                 probe.texts, max_length=max_length))
               for regime, seed in (("helpful", 1), ("harmless", 2))}
    neuron_set = {0: [1, 5, 9, 64, 100], 1: [2, 3, 77]}

    out: dict[str, Any] = {"item_ids": probe.item_ids, "singles_correct": singles}
    for mode in ("zero", "mean"):
        opts: dict[str, Any] = {"mode": mode, "means": means if mode == "mean" else None}
        out[f"A/{mode}"] = experiment_a(probe, scorer, {"magnitude": magnitude, "change": change},
                                        percents=[0.0, 10.0, 50.0], seeds=seeds, n_boot=n_boot, **opts)
        out[f"B/{mode}"] = experiment_b(probe, scorer, magnitude, p=10.0, seeds=seeds, n_boot=n_boot, **opts)
        out[f"C/{mode}"] = experiment_c(probe, scorer, helpful, harmless, single_rm_correct=singles,
                                        percents=[10.0, 50.0], seeds=seeds, n_boot=n_boot, **opts)
        out[f"single/{mode}"] = run_with_controls(probe, scorer, Ablation(neuron_set, **opts), shape, seeds=seeds,
                                                  n_boot=n_boot)
    out["C/zero/per_layer"] = experiment_c(probe, scorer, helpful, harmless, single_rm_correct=singles,
                                           percents=[10.0], seeds=seeds, shared_mode="per_layer", n_boot=n_boot)
    out["single/scale"] = run_with_controls(probe, scorer, Ablation(neuron_set, mode="scale", factor=0.5), shape,
                                            seeds=seeds, n_boot=n_boot)
    out["single/zero/full_scorer"] = run_with_controls(
        probe, full_scorer(loaded, probe, max_length=max_length), Ablation(neuron_set), shape, seeds=seeds,
        n_boot=n_boot)
    return out


# ============================================================================ live ablation


def _without_timing(answer: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in answer.items() if k != "timing"}


def live() -> dict[str, Any]:
    """LiveAblationSession answers on each tiny family: last-layer, first-layer and all-layer sets, modes
    zero / mean / scale, paths fast and full (one at a time and batched with `toggle_many`); per-text rewards;
    the session's numeric info (timings and cache internals skipped)."""
    from workers.ablation.engine import Ablation
    from workers.ablation.live import LiveAblationSession
    from workers.models.registry import load_reward_model

    pairs = _bundled_pairs(limit=6)
    means = np.random.default_rng(3).normal(size=(N_LAYERS, N_NEURONS))
    sets = {"last": _random_mask([1], seed=1), "first": _random_mask([0], seed=2),
            "all": _random_mask([0, 1], seed=3)}
    modes: dict[str, dict[str, Any]] = {"zero": {"mode": "zero"}, "mean": {"mode": "mean"},
                                        "scale": {"mode": "scale", "factor": 3.0}}
    out: dict[str, Any] = {}
    for name in ("tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-bert"):
        loaded = load_reward_model(name, device=DEVICE, seed=0)
        s = LiveAblationSession.from_pairs(loaded, pairs, per_objective=6, max_length=48, batch_size=5, means=means)
        info = s.info()
        res: dict[str, Any] = {
            "info": {k: info[k] for k in ("model", "family", "fast_path", "n_layers", "n_neurons", "n_texts",
                                          "n_tokens", "n_batches", "objectives", "fallback_reason", "numerics_gap")},
            "baseline": s.baseline, "baseline_full": s.baseline_full,
        }
        combos = [(set_name, mode) for set_name in sets for mode in modes]
        labels = [f"{set_name}/{mode}" for set_name, mode in combos]
        ablations = [Ablation(sets[set_name], means=means, **modes[mode]) for set_name, mode in combos]
        for path in ("fast", "full"):
            s.clear_cache()
            res[f"toggle/{path}"] = {f"{set_name}/{mode}": _without_timing(s.toggle(sets[set_name], path=path,
                                                                                     **modes[mode]))
                                     for set_name, mode in combos}
            s.clear_cache()
            res[f"toggle_many/{path}"] = dict(zip(labels, map(_without_timing, s.toggle_many(ablations, path=path)),
                                                  strict=True))
            s.clear_cache()
            res[f"rewards_many/{path}"] = dict(zip(labels, s.rewards_many(ablations, path=path), strict=True))
            act = Ablation(sets["all"], hook_point="act_output")
            res[f"act_output/{path}"] = {"toggle": _without_timing(s.toggle(act, path=path)),
                                         "rewards": s.rewards(act, path=path)}
        out[name] = res
    return out


# ============================================================================ registry


SCENARIOS: dict[str, Callable[[], dict[str, Any]]] = {
    "score": score, "capture": capture, "selection": selection, "ablation": ablation, "live": live,
}


def run_scenario(name: str) -> Any:
    """Run one scenario deterministically and return its outputs as plain JSON types."""
    with _deterministic():
        return jsonable(SCENARIOS[name]())
