"""Statistics a live ablation shows while its exact answer is still arriving, pair by pair; numpy only.

`running_delta` turns the pairs scored so far into Δ margin and Δ accuracy with bootstrap intervals, so a
partial answer says how sure it is. `layer_matched_control` draws the random set an ablation is compared
with (as many neurons in each layer, none of the set's), seeded by `control_seed` so the same set always
gets the same control, in any process.

Imports numpy and the standard library only (no torch: a live worker answers with these before torch is
imported); tests/workers/ablation/test_live_stats.py checks it in a fresh process.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

#: {layer: neuron indices}; a layer key may be a JSON string ("3"), indices a list or an integer array
Layers = Mapping[Any, Sequence[int] | NDArray[np.integer[Any]]]

__all__ = ["Layers", "control_seed", "layer_matched_control", "running_delta"]

#: bootstrap index draws per chunk (int64): bounds memory to ~32 MB however many pairs are done
_CHUNK_DRAWS = 4_000_000


def running_delta(baseline_margins: ArrayLike, ablated_margins: ArrayLike, *, n_total: int, n_boot: int = 1000,
                  seed: int = 0, level: float = 0.95) -> dict[str, Any]:
    """Δ mean margin and Δ accuracy over the `n_done` pairs scored so far, with percentile-bootstrap CIs.

    Both arrays hold the same pairs in the same order (margin = r(chosen) − r(rejected)). Accuracy is
    pairwise, margin > 0 (ties wrong), as the live session counts it: Δ accuracy = mean(ablated > 0) −
    mean(baseline > 0). `flips_to_wrong` counts pairs right before and wrong after, `flips_to_right` the
    reverse.

    The CIs resample the pairs done (with replacement; one vectorised draw of `n_boot` × `n_done` indices,
    deterministic for `seed`), one resample for both statistics so they describe the same pairs. They are
    intervals for the mean over the whole test split, since the probe pairs are a sample of it, not for the
    `n_total` probe pairs; hence no finite-population correction, and they do not narrow to zero width as
    `n_done` reaches `n_total`. `n_total` is reported so a client can show progress.

    n_done == 0: nothing is known, so Δs and CIs are None (the flip counts are 0, which is exact).
    n_done == 1: Δs are that pair's, CIs None: every resample of one pair is that pair, so the bootstrap
    would give a zero-width interval, a certainty that one pair cannot give. For a handful of pairs the
    percentile bootstrap is still too narrow; read the first few intervals as rough.
    """
    base = np.asarray(baseline_margins, dtype=np.float64)
    abl = np.asarray(ablated_margins, dtype=np.float64)
    if base.ndim != 1 or abl.shape != base.shape:
        raise ValueError(f"baseline and ablated margins must be 1-D and of one length, got {base.shape} "
                         f"and {abl.shape}")
    n_done = int(base.size)
    if n_total < n_done:
        raise ValueError(f"n_total {n_total} is less than the {n_done} pairs done")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be at least 1, got {n_boot}")
    right_before, right_after = base > 0, abl > 0
    out: dict[str, Any] = {"n_done": n_done, "n_total": int(n_total), "delta_margin": None, "delta_margin_ci": None,
                           "delta_accuracy": None, "delta_accuracy_ci": None,
                           "flips_to_wrong": int((right_before & ~right_after).sum()),
                           "flips_to_right": int((~right_before & right_after).sum())}
    if n_done == 0:
        return out
    d_margin = abl - base
    d_right = right_after.astype(np.float64) - right_before.astype(np.float64)  # −1, 0 or 1 per pair
    out["delta_margin"] = float(d_margin.mean())
    out["delta_accuracy"] = float(right_after.mean() - right_before.mean())
    if n_done == 1:
        return out
    q = [(1.0 - level) / 2.0, 1.0 - (1.0 - level) / 2.0]
    boot_m, boot_a = _paired_bootstrap(d_margin, d_right, n_boot, np.random.default_rng(seed))
    out["delta_margin_ci"] = [float(v) for v in np.quantile(boot_m, q)]
    out["delta_accuracy_ci"] = [float(v) for v in np.quantile(boot_a, q)]
    return out


def _paired_bootstrap(a: NDArray[np.float64], b: NDArray[np.float64], n_boot: int, rng: np.random.Generator,
                      ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Means of `a` and of `b` over the same `n_boot` resamples of their (shared) pair indices."""
    n = a.size
    rows = max(1, _CHUNK_DRAWS // n)
    out_a = np.empty(n_boot, dtype=np.float64)
    out_b = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, rows):
        stop = min(n_boot, start + rows)
        idx = rng.integers(0, n, size=(stop - start, n))
        out_a[start:stop] = a[idx].mean(axis=1)
        out_b[start:stop] = b[idx].mean(axis=1)
    return out_a, out_b


def _canonical(layers: Layers) -> list[tuple[int, list[int]]]:
    """[(layer, sorted unique indices)], layers sorted, empty layers dropped (layer keys may be JSON strings).

    Floats and bools are refused rather than truncated, so a malformed set cannot alias a real one.
    """
    out: dict[int, set[int]] = {}
    for key, idx in layers.items():
        integral = isinstance(key, numbers.Integral) and not isinstance(key, bool)
        if not (integral or (isinstance(key, str) and key.strip().isdigit())) or int(key) < 0:
            raise ValueError(f"layer must be a non-negative integer, got {key!r}")
        layer = int(key)
        arr = np.asarray(idx).ravel()
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"layer {layer}: neuron indices must be integers, got {arr.dtype}")
        values = {int(i) for i in arr.tolist()}
        if values and min(values) < 0:
            raise ValueError(f"layer {layer}: neuron index {min(values)} is negative")
        if values:
            out.setdefault(layer, set()).update(values)
    return [(layer, sorted(idx)) for layer, idx in sorted(out.items())]


def layer_matched_control(layers: Layers, n_neurons: int, *, seed: int) -> dict[int, list[int]]:
    """A random set with as many neurons in each layer as `layers`, none of them in `layers`; sorted indices.

    The baseline an ablation's effect is read against: a random set of the same size in the same layers
    separates "these neurons matter" from "removing this many neurons there matters". Each layer draws
    from its own generator (seeded by `seed` and the layer), so a layer's control does not change when
    another layer is added. A layer with fewer free neurons than the set holds there (the set is more
    than half the layer) gets all its free neurons: a smaller control rather than one overlapping the set.
    """
    if n_neurons < 1:
        raise ValueError(f"n_neurons must be at least 1, got {n_neurons}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    out: dict[int, list[int]] = {}
    for layer, idx in _canonical(layers):
        if idx[-1] >= n_neurons:
            raise ValueError(f"layer {layer}: neuron index {idx[-1]} out of range [0, {n_neurons})")
        free = np.setdiff1d(np.arange(n_neurons, dtype=np.int64), np.asarray(idx, dtype=np.int64))
        k = min(len(idx), free.size)
        if k == 0:
            continue
        rng = np.random.default_rng([int(seed), layer])
        out[layer] = sorted(int(i) for i in rng.choice(free, size=k, replace=False))
    return out


def control_seed(layers: Layers, mode: str, factor: float) -> int:
    """A stable seed (sha256 of the canonical set, mode and, for 'scale', factor) in [0, 2**63).

    Canonical: layers sorted, indices sorted and unique, so the order an index list arrives in does not
    matter; sha256 rather than `hash()`, which is salted per process.
    """
    mode = str(mode)
    head: dict[str, Any] = {"layers": _canonical(layers), "mode": mode}
    if mode == "scale":
        head["factor"] = repr(float(factor))
    digest = hashlib.sha256(json.dumps(head, sort_keys=True, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1
