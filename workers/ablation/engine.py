"""Neuron ablation: which neurons, how they are replaced, and hooks that are always removed (METHOD.md §5).

An `Ablation` is a neuron set plus a mode: 'zero' (the study's), 'mean' (each neuron set to its mean
activation from capture) or 'scale' (multiplied by a factor). It is applied at every token position of
every layer holding selected neurons, through the architecture registry's hook point, so ablation edits
exactly the values capture measured. Every mode is one affine map ``x * keep + fill`` per neuron, which
lets the live session batch several ablations in one pass by giving each row its own keep/fill.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from workers.contract.jobs import AblateParams, NeuronIndexSet
from workers.contract.vocab import AblationMode, HookPoint
from workers.models.arch import NeuronFn
from workers.models.registry import LoadedModel
from workers.neurons.hooks import neuron_hooks

__all__ = [
    "Ablation",
    "NeuronSet",
    "ablated",
    "ablation_from_params",
    "affine_hook_fn",
    "as_ablation",
    "layer_affine",
    "model_shape",
    "score_with_ablation",
]

#: a bool mask [n_layers, n_neurons], a `NeuronIndexSet`, or {layer (int or str): neuron indices (list or array)}
NeuronSet = NeuronIndexSet | Mapping[Any, Any] | ArrayLike


def _integer_lists(neurons: Mapping[Any, Any]) -> dict[Any, Any]:
    """Index arrays as lists for `NeuronIndexSet`, refusing non-integer ones (a bool row or floats would
    otherwise be read as the indices 0/1)."""
    out: dict[Any, Any] = {}
    for key, idx in neurons.items():
        arr = np.asarray(idx if isinstance(idx, np.ndarray) else list(idx))
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"layer {key}: neuron indices must be integers, got {arr.dtype}")
        out[key] = arr.tolist()
    return out


def _normalise_neurons(neurons: Any) -> dict[int, NDArray[np.int64]]:
    """{layer: sorted unique indices} from a bool mask [layers, neurons], or a {layer: indices} mapping
    validated as a `NeuronIndexSet` (ValueError on a non-integer or negative layer or index)."""
    if isinstance(neurons, Mapping):
        neurons = NeuronIndexSet.model_validate(_integer_lists(neurons))
    if isinstance(neurons, NeuronIndexSet):
        return {layer: np.asarray(idx, dtype=np.int64) for layer, idx in neurons.root.items()}
    mask = np.asarray(neurons)
    if mask.dtype != np.bool_ or mask.ndim != 2:
        raise ValueError(f"a neuron set is a bool mask [n_layers, n_neurons] or a mapping, got "
                         f"{mask.dtype} {mask.shape}")
    return {int(layer): np.flatnonzero(mask[layer]).astype(np.int64)
            for layer in np.flatnonzero(mask.any(axis=1)).tolist()}


@dataclass(frozen=True, eq=False)
class Ablation:
    """A neuron set and how to replace it. Build with `Ablation(neurons, mode=..., ...)`.

    `neurons` is normalised to {layer: sorted unique int64 indices}; `means` ([n_layers, n_neurons], the
    captured mean activation) is required for mode 'mean'; `factor` is the multiplier for mode 'scale'.
    Equality is by `key()` (content), not by object identity or representation.
    """

    neurons: Any
    mode: AblationMode = AblationMode.zero
    factor: float = 0.0
    means: Any = None
    hook_point: HookPoint = HookPoint.down_proj_input
    _key: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        neurons = _normalise_neurons(self.neurons)
        object.__setattr__(self, "neurons", neurons)
        try:
            object.__setattr__(self, "mode", AblationMode(self.mode))
        except ValueError:
            raise ValueError(f"unknown ablation mode {self.mode!r}; choose one of "
                             f"{[str(m) for m in AblationMode]}") from None
        try:
            object.__setattr__(self, "hook_point", HookPoint(self.hook_point))
        except ValueError:
            raise ValueError(f"unknown hook point {self.hook_point!r}; choose one of "
                             f"{[str(h) for h in HookPoint]}") from None
        object.__setattr__(self, "factor", float(self.factor))
        if self.mode == AblationMode.mean:
            if self.means is None:
                raise ValueError("mode='mean' needs `means` [n_layers, n_neurons] (captured means)")
            means = np.asarray(self.means, dtype=np.float64)
            if means.ndim != 2:
                raise ValueError(f"means must be [n_layers, n_neurons], got shape {means.shape}")
            for layer, idx in neurons.items():
                if layer >= means.shape[0] or int(idx[-1]) >= means.shape[1]:
                    raise ValueError(f"means {means.shape} do not cover layer {layer} neuron {int(idx[-1])}")
            object.__setattr__(self, "means", means)
        else:
            object.__setattr__(self, "means", None)
        object.__setattr__(self, "_key", self._content_key())

    # ------------------------------------------------------------------ identity

    def _content_key(self) -> str:
        h = hashlib.sha256()
        head: dict[str, Any] = {"mode": self.mode, "hook": self.hook_point}
        if self.mode == AblationMode.scale:
            head["factor"] = repr(self.factor)
        h.update(json.dumps(head, sort_keys=True).encode())
        for layer, idx in self.neurons.items():
            h.update(f"|{layer}:".encode())
            h.update(idx.tobytes())
            if self.mode == AblationMode.mean:
                h.update(np.ascontiguousarray(self.means[layer, idx]).tobytes())
        return h.hexdigest()[:32]

    def key(self) -> str:
        """Content hash (mask + mode + factor or means): the live session's answer-cache key."""
        return self._key

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Ablation) and other._key == self._key

    def __hash__(self) -> int:
        return hash(self._key)

    # ------------------------------------------------------------------ views

    @property
    def layers(self) -> list[int]:
        return list(self.neurons)

    @property
    def first_layer(self) -> int | None:
        """The earliest ablated layer: everything before it is untouched, so it can be cached."""
        return min(self.neurons) if self.neurons else None

    @property
    def n_neurons(self) -> int:
        return int(sum(len(v) for v in self.neurons.values()))

    @property
    def is_identity(self) -> bool:
        """True when nothing changes: no neurons, or scale by exactly 1."""
        return not self.neurons or (self.mode == AblationMode.scale and self.factor == 1.0)

    def to_mask(self, shape: Sequence[int]) -> NDArray[np.bool_]:
        self.validate(int(shape[0]), int(shape[1]))
        mask = np.zeros((int(shape[0]), int(shape[1])), dtype=bool)
        for layer, idx in self.neurons.items():
            mask[layer, idx] = True
        return mask

    def to_dict(self) -> dict[str, list[int]]:
        """JSON-friendly {"layer": [indices]}, the shape `AblateParams.neuron_set` carries."""
        return {str(k): v.tolist() for k, v in self.neurons.items()}

    def describe(self) -> dict[str, Any]:
        """Small summary for answers and logs (no index lists)."""
        out: dict[str, Any] = {"key": self._key, "mode": self.mode, "hook_point": self.hook_point,
                               "n_neurons": self.n_neurons,
                               "layers": {str(k): len(v) for k, v in self.neurons.items()}}
        if self.mode == AblationMode.scale:
            out["factor"] = self.factor
        return out

    def validate(self, n_layers: int, n_neurons: int) -> None:
        """Raise ValueError when a layer or index lies outside the model (no silent wrap-around)."""
        for layer, idx in self.neurons.items():
            if layer >= n_layers:
                raise ValueError(f"layer {layer} out of range [0, {n_layers})")
            if int(idx[-1]) >= n_neurons:
                raise ValueError(f"layer {layer}: neuron index {int(idx[-1])} out of range [0, {n_neurons})")
        if self.mode == AblationMode.mean and self.means.shape[1] != n_neurons:
            raise ValueError(f"means have {self.means.shape[1]} neurons a layer, the model {n_neurons}")


def as_ablation(spec: Ablation | NeuronSet, *, mode: AblationMode = AblationMode.zero, factor: float = 0.0,
                means: ArrayLike | None = None, hook_point: HookPoint = HookPoint.down_proj_input) -> Ablation:
    """Accept an `Ablation` as is, or build one from a mask / {layer: indices} and the keyword options."""
    if isinstance(spec, Ablation):
        return spec
    return Ablation(spec, mode=mode, factor=factor, means=means, hook_point=hook_point)


def ablation_from_params(params: AblateParams, means: ArrayLike | None = None) -> Ablation:
    """The 'single' experiment's ablation from `AblateParams` (its `scale` is the factor, `hook` the point)."""
    if params.neuron_set is None:
        raise ValueError("AblateParams.neuron_set is required for a single ablation")
    return Ablation(params.neuron_set, mode=params.mode, factor=params.scale, means=means, hook_point=params.hook)


def model_shape(loaded: LoadedModel) -> tuple[int, int]:
    """(n_layers, n_neurons) of a loaded model, the shape of its neuron masks."""
    return loaded.arch.n_layers(loaded.model), loaded.arch.n_neurons(loaded.model)


# ------------------------------------------------------------------------------------ the hook maths


def layer_affine(ablation: Ablation, layer: int,
                 n_neurons: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(keep, fill) vectors of one layer: neuron values become ``x * keep + fill``.

    zero: keep 0, fill 0; scale: keep = factor; mean: keep 0, fill = mean. Unselected: keep 1, fill 0.
    """
    keep = np.ones(n_neurons, dtype=np.float64)
    fill = np.zeros(n_neurons, dtype=np.float64)
    idx = ablation.neurons.get(layer)
    if idx is not None:
        if ablation.mode == AblationMode.scale:
            keep[idx] = ablation.factor
        else:
            keep[idx] = 0.0
        if ablation.mode == AblationMode.mean:
            fill[idx] = ablation.means[layer, idx]
    return keep, fill


def affine_hook_fn(keep: torch.Tensor, fill: torch.Tensor | None) -> NeuronFn:
    """A hook fn returning ``x * keep + fill`` (out of place, so cached tensors are never edited).

    `keep`/`fill` are [n_neurons] (one ablation) or [rows, 1, n_neurons] (one ablation per batch row).
    Scale 1 gives x * 1 == x bit for bit; mean mode gives x * 0 + m == m for finite x.
    """
    cache: dict[tuple[torch.dtype, torch.device], tuple[torch.Tensor, torch.Tensor | None]] = {}

    def fn(x: torch.Tensor) -> torch.Tensor:
        k = (x.dtype, x.device)
        if k not in cache:
            cache[k] = (keep.to(device=x.device, dtype=x.dtype),
                        None if fill is None else fill.to(device=x.device, dtype=x.dtype))
        kk, ff = cache[k]
        if kk.dim() == 3 and kk.shape[0] != x.shape[0]:
            raise RuntimeError(f"row-wise ablation has {kk.shape[0]} rows, the batch {x.shape[0]}")
        y = x * kk
        return y if ff is None else y + ff

    return fn


def hook_fns(ablation: Ablation, n_neurons: int) -> dict[int, NeuronFn]:
    """One affine hook fn per ablated layer."""
    fns: dict[int, NeuronFn] = {}
    for layer in ablation.layers:
        keep, fill = layer_affine(ablation, layer, n_neurons)
        fns[layer] = affine_hook_fn(torch.from_numpy(keep),
                                    torch.from_numpy(fill) if ablation.mode == AblationMode.mean else None)
    return fns


@contextmanager
def ablated(loaded: LoadedModel, ablation: Ablation | NeuronSet | None,
            **options: Any) -> Iterator[Ablation | None]:
    """Install the ablation's hooks for the block; they are removed on exit, even on an exception.

    `ablation` may be an `Ablation` or a mask / {layer: indices} (then `options` are `as_ablation`'s).
    None or an empty set installs nothing. Yields the normalised `Ablation`.
    """
    if ablation is None:
        yield None
        return
    abl = as_ablation(ablation, **options)
    n_layers, n_neurons = model_shape(loaded)
    abl.validate(n_layers, n_neurons)
    with neuron_hooks(loaded.model, hook_fns(abl, n_neurons), abl.hook_point, loaded.arch):
        yield abl


def score_with_ablation(loaded: LoadedModel, texts: Sequence[str], ablation: Ablation | NeuronSet | None, *,
                        max_length: int = 128, batch_size: int = 16, progress: Any = None,
                        **options: Any) -> np.ndarray:
    """Rewards of `texts` (float32, input order) with the ablation applied by a full forward pass."""
    from workers.models.scoring import score_texts

    with ablated(loaded, ablation, **options):
        return score_texts(loaded, texts, max_length=max_length, batch_size=batch_size, progress=progress)
