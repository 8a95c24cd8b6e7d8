"""Neuron scores → neuron sets: top-p% with tie detection, random controls, set algebra, overlap.

A score array has shape [n_layers, n_neurons], one entry per (layer, neuron); a boolean mask of the same
shape is a neuron set. Pure numpy/scipy so selections are reproducible anywhere (METHOD.md §3-4). This is
the only implementation of top-p% selection: the workers' experiments and the web process
(`app/neurons/service.py`) both call `top_percent`, so it must stay torch-free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.stats import hypergeom

from workers.contract.vocab import SharedMode

__all__ = [
    "Selection",
    "combined_score",
    "dict_to_mask",
    "difference",
    "intersection",
    "layer_counts",
    "layer_exclusion",
    "layer_fractions",
    "layer_matched_random",
    "mask_to_dict",
    "overlap_significance",
    "random_set",
    "requested_count",
    "set_jaccard",
    "specific_and_shared",
    "three_way_overlap",
    "top_percent",
    "union",
    "untied_count",
]

Mask = NDArray[np.bool_]


# --------------------------------------------------------------------------- scores and top-p


def combined_score(x_chosen: ArrayLike, x_rejected: ArrayLike) -> NDArray[np.float64]:
    """S = (X_chosen + X_rejected) / 2: the study ranks neurons by their average over both sides."""
    c = np.asarray(x_chosen, dtype=np.float64)
    r = np.asarray(x_rejected, dtype=np.float64)
    if c.shape != r.shape:
        raise ValueError(f"shape mismatch: chosen {c.shape} vs rejected {r.shape}")
    return (c + r) / 2.0


def _check_p(p: float) -> float:
    p = float(p)
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"p must be a percentage in [0, 100], got {p}")
    return p


def requested_count(total: int, p: float) -> int:
    """round(p% of total), halves rounded up (not Python's banker's rounding) so 2.5 neurons → 3."""
    p = _check_p(p)
    return min(total, int(math.floor(p * total / 100.0 + 0.5)))


@dataclass(frozen=True)
class Selection:
    """A top-p% neuron set and how it came about.

    tied is True when equal scores at the threshold pulled in more neurons than p% asks for (the study's
    GPT-2-large harmless RM selected every neuron this way). It is *not* set by the single extra neuron
    that percentile interpolation alone can add (e.g. 36,864 GPT-2-small neurons at p=10 select 3,687
    distinct-scored neurons against 3,686 requested).
    """

    mask: Mask
    threshold: float
    requested: int
    selected: int
    tied: bool
    p: float


def untied_count(n: int, p: float) -> int:
    """How many entries `>= np.percentile(·, 100 − p)` selects when all n scores are distinct.

    A selection is tied when it holds more than max(requested_count(n, p), untied_count(n, p)) neurons.

    Mirrors numpy's 'linear' method: virtual index h = (n − 1)·q; a fractional h puts θ strictly between
    two sorted values, an integral h puts it on one.
    """
    h = (n - 1) * ((100.0 - p) / 100.0)
    lo = math.floor(h)
    return n - lo if h == lo else n - lo - 1


def layer_exclusion(shape: Sequence[int], layers: Sequence[int]) -> Mask:
    """A mask of `shape` [n_layers, n_neurons] holding every neuron of `layers` (those out of range ignored):
    the `exclude` of `top_percent` and `random_set` for layers that must not be selected (e.g. layers
    frozen in training, whose neurons are identical in every RM trained from the same base)."""
    shp = _check_shape(shape)
    out = np.zeros(shp, dtype=bool)
    rows = [int(x) for x in layers if 0 <= int(x) < shp[0]]
    if rows:
        out[rows] = True
    return out


def _exclusion(exclude: ArrayLike | None, shape: tuple[int, ...]) -> NDArray[np.bool_] | None:
    """`exclude` as a boolean mask of `shape`, or None when it leaves nothing out."""
    if exclude is None:
        return None
    ex = np.asarray(exclude)
    if ex.dtype != np.bool_ or ex.shape != shape:
        raise ValueError(f"exclude must be a boolean mask of shape {shape}, got {ex.dtype} {ex.shape}")
    return ex if ex.any() else None


def top_percent(scores: ArrayLike, p: float, *, exclude: ArrayLike | None = None) -> Selection:
    """Top-p% by one global threshold θ = np.percentile(all entries, 100 − p), selecting S >= θ.

    This is the study's rule (numpy's default linear interpolation), so ties can select far more than p%;
    the returned Selection reports requested vs selected and flags ties. p=0 selects nothing (θ = +inf;
    the bare percentile rule would still pick the maximum), p=100 selects everything.

    `exclude` (a boolean mask like `scores`) leaves entries out as if their score were −inf *and* they were
    not there: they are never selected, their scores are not looked at (NaN allowed), and θ, the requested
    count and the tie test are taken over the remaining entries only, so p% means p% of the eligible
    neurons (e.g. of the trainable layers' neurons when frozen layers are excluded). An exclusion that
    leaves nothing out gives exactly the unexcluded selection; one that leaves nothing in selects nothing.
    """
    p = _check_p(p)
    s = np.asarray(scores)
    if not np.issubdtype(s.dtype, np.floating):
        s = s.astype(np.float64)
    if s.size == 0:
        raise ValueError("scores are empty")
    ex = _exclusion(exclude, s.shape)
    pool = s if ex is None else s[~ex]
    if not np.isfinite(pool).all():
        raise ValueError("scores contain NaN or inf; fix the statistics before selecting")
    n = int(pool.size)
    requested = requested_count(n, p)
    if p == 0.0 or n == 0:
        return Selection(np.zeros(s.shape, dtype=bool), float("inf"), requested, 0, False, p)
    theta = float(np.percentile(pool, 100.0 - p))
    if ex is None:
        mask = s >= theta
    else:
        mask = np.zeros(s.shape, dtype=bool)
        mask[~ex] = pool >= theta
    selected = int(mask.sum())
    tied = selected > max(requested, untied_count(n, p))
    return Selection(mask, theta, requested, selected, tied, p)


# --------------------------------------------------------------------------- random controls


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shp = tuple(int(d) for d in shape)
    if len(shp) != 2 or min(shp) < 0:
        raise ValueError(f"shape must be (n_layers, n_neurons), got {shape!r}")
    return shp


def random_set(shape: Sequence[int], p: float, seed: int, *, exclude: ArrayLike | None = None) -> Mask:
    """Exactly requested_count(total, p) neurons, uniformly at random over all layers; the seeded control.

    `exclude` (a boolean mask of `shape`) leaves neurons out as `top_percent` does: p% of the remaining
    neurons, drawn among them only. An exclusion that leaves nothing out gives the same set as none."""
    shp = _check_shape(shape)
    total = shp[0] * shp[1]
    ex = _exclusion(exclude, shp)
    rng = np.random.default_rng(seed)
    flat = np.zeros(total, dtype=bool)
    if ex is None:
        k = requested_count(total, p)
        flat[rng.choice(total, size=k, replace=False)] = True
    else:
        eligible = np.flatnonzero(~ex.ravel())
        k = requested_count(int(eligible.size), p)
        flat[rng.choice(eligible, size=k, replace=False)] = True
    return flat.reshape(shp)


def layer_matched_random(mask: ArrayLike, seed: int) -> Mask:
    """Same count per layer as mask, positions uniform within each layer (may overlap mask: nothing is
    excluded). Separates "which neurons" from "which layers" in an ablation."""
    m = _as_mask(mask)
    rng = np.random.default_rng(seed)
    out = np.zeros_like(m)
    n_neurons = m.shape[1]
    for layer, count in enumerate(m.sum(axis=1)):
        if count:
            out[layer, rng.choice(n_neurons, size=int(count), replace=False)] = True
    return out


# --------------------------------------------------------------------------- set algebra


def _as_mask(mask: ArrayLike) -> Mask:
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"a neuron set must be a boolean mask, got dtype {m.dtype}")
    if m.ndim != 2:
        raise ValueError(f"a neuron set must be 2-D [n_layers, n_neurons], got shape {m.shape}")
    return m


def _same_shape(*masks: ArrayLike) -> list[Mask]:
    ms = [_as_mask(m) for m in masks]
    if len({m.shape for m in ms}) > 1:
        raise ValueError(f"neuron sets have different shapes: {[m.shape for m in ms]}")
    return ms


def union(*masks: ArrayLike) -> Mask:
    """Neurons in any of the sets."""
    if not masks:
        raise ValueError("union needs at least one set")
    return np.logical_or.reduce(_same_shape(*masks))


def intersection(*masks: ArrayLike) -> Mask:
    """Neurons in all of the sets."""
    if not masks:
        raise ValueError("intersection needs at least one set")
    return np.logical_and.reduce(_same_shape(*masks))


def difference(a: ArrayLike, b: ArrayLike) -> Mask:
    """Neurons in a but not in b."""
    x, y = _same_shape(a, b)
    return x & ~y


def specific_and_shared(
    helpful: ArrayLike, harmless: ArrayLike, mode: SharedMode = SharedMode.intersection
) -> dict[str, Mask]:
    """Helpful-specific H \\ R, harmless-specific R \\ H and shared sets.

    mode='intersection' (correct): shared = H ∩ R. mode='per_layer' reproduces the study's code for
    parity: in a layer where only one of H, R has neurons, shared takes all of that set's neurons in that
    layer (which are then both specific and shared); elsewhere shared = H ∩ R.
    """
    h, r = _same_shape(helpful, harmless)
    shared = h & r
    if mode == SharedMode.per_layer:
        h_any = h.any(axis=1)
        r_any = r.any(axis=1)
        only_h = h_any & ~r_any
        only_r = r_any & ~h_any
        shared = shared.copy()
        shared[only_h] = h[only_h]
        shared[only_r] = r[only_r]
    elif mode != SharedMode.intersection:
        raise ValueError(f"mode must be 'intersection' or 'per_layer', got {mode!r}")
    return {"helpful_specific": h & ~r, "harmless_specific": r & ~h, "shared": shared}


def mask_to_dict(mask: ArrayLike) -> dict[int, list[int]]:
    """{layer: sorted neuron indices}, only layers with at least one neuron: compact and JSON-friendly."""
    m = _as_mask(mask)
    layers, idx = np.nonzero(m)
    out: dict[int, list[int]] = {}
    for layer, i in zip(layers.tolist(), idx.tolist(), strict=True):
        out.setdefault(layer, []).append(i)
    return out


def dict_to_mask(d: Mapping[int, Sequence[int]] | Mapping[str, Sequence[int]], shape: Sequence[int]) -> Mask:
    """Inverse of mask_to_dict. Layer keys may be str (after a JSON round trip); negative or out-of-range
    layers/indices raise ValueError instead of wrapping around silently."""
    n_layers, n_neurons = _check_shape(shape)
    m = np.zeros((n_layers, n_neurons), dtype=bool)
    for key, indices in d.items():
        try:
            layer = int(key)
        except (TypeError, ValueError) as e:
            raise ValueError(f"layer key {key!r} is not an integer") from e
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} out of range [0, {n_layers})")
        idx = np.asarray(list(indices))
        if idx.size == 0:
            continue
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"layer {layer}: neuron indices must be integers, got {idx.dtype}")
        bad = idx[(idx < 0) | (idx >= n_neurons)]
        if bad.size:
            raise ValueError(f"layer {layer}: neuron index {int(bad[0])} out of range [0, {n_neurons})")
        m[layer, idx] = True
    return m


# --------------------------------------------------------------------------- overlap


def set_jaccard(a: ArrayLike, b: ArrayLike) -> float:
    """|A ∩ B| / |A ∪ B| between two neuron sets; NaN when both are empty."""
    x, y = _same_shape(a, b)
    u = int((x | y).sum())
    return float("nan") if u == 0 else int((x & y).sum()) / u


def three_way_overlap(helpful: ArrayLike, harmless: ArrayLike, mixed: ArrayLike) -> float:
    """|(H ∪ R) ∩ M| / |H ∪ R ∪ M|: how much of the mixed RM's set the single-objective sets account for."""
    h, r, m = _same_shape(helpful, harmless, mixed)
    u = int((h | r | m).sum())
    return float("nan") if u == 0 else int(((h | r) & m).sum()) / u


def layer_counts(mask: ArrayLike) -> NDArray[np.int64]:
    """Selected neurons per layer, shape [n_layers]."""
    return _as_mask(mask).sum(axis=1).astype(np.int64)


def layer_fractions(mask: ArrayLike) -> dict[str, float]:
    """Share of the set in early / middle / late thirds of depth (NaN each for an empty set).

    Layer l of L is early if l < L/3, middle if l < 2L/3, else late (integer test 3l < L, 3l < 2L), so
    with L=12 layers 0-3 / 4-7 / 8-11 and with L=30 layers 0-9 / 10-19 / 20-29.
    """
    counts = layer_counts(mask)
    n_layers = counts.size
    total = int(counts.sum())
    if total == 0:
        return {"early": float("nan"), "middle": float("nan"), "late": float("nan")}
    three_l = 3 * np.arange(n_layers)
    early = three_l < n_layers
    middle = ~early & (three_l < 2 * n_layers)
    late = ~(early | middle)
    return {
        "early": int(counts[early].sum()) / total,
        "middle": int(counts[middle].sum()) / total,
        "late": int(counts[late].sum()) / total,
    }


def overlap_significance(a: ArrayLike, b: ArrayLike) -> dict[str, float]:
    """Is |A ∩ B| larger than two independent random sets of the same sizes would share?

    One-sided hypergeometric test: p = P(X >= observed) with X ~ Hypergeom(N total neurons, |A|, |B|);
    expected = |A||B| / N.
    """
    x, y = _same_shape(a, b)
    n_total = int(x.size)
    na, nb = int(x.sum()), int(y.sum())
    observed = int((x & y).sum())
    expected = na * nb / n_total if n_total else float("nan")
    p_value = float(hypergeom.sf(observed - 1, n_total, na, nb))
    return {"observed": observed, "expected": expected, "p_value": p_value}
