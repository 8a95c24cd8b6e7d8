"""Hooks on MLP neurons, built on the architecture registry: record them, or replace them (ablation).

Every hook goes through `workers.models.architectures.neuron_hook`, so capture and ablation see the same
values at the same place (`down_proj_input` by default, or the study's `act_output`), and hooks are always
removed when the `with` block ends, even on error.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Literal

import numpy as np
import torch
from torch import nn

from workers.models.architectures import (
    ArchitectureSpec,
    HookPoint,
    NeuronFn,
    get_architecture,
    neuron_hook,
)

__all__ = ["AblationMode", "ablate_neurons", "neuron_hooks", "record_neurons"]

AblationMode = Literal["zero", "mean", "scale"]


@contextmanager
def neuron_hooks(model: nn.Module, fns: Mapping[int, NeuronFn], hook_point: HookPoint = "down_proj_input",
                 arch: ArchitectureSpec | None = None) -> Iterator[None]:
    """Install `fns[layer]` on each layer's neurons for the duration of the block."""
    arch = arch or get_architecture(model)
    handles = []
    try:
        for layer, fn in fns.items():
            handles.append(neuron_hook(model, int(layer), hook_point, fn, arch))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def record_neurons(model: nn.Module, on_values: Callable[[int, torch.Tensor], None],
                   hook_point: HookPoint = "down_proj_input", layers: Iterable[int] | None = None,
                   arch: ArchitectureSpec | None = None) -> Iterator[None]:
    """Call `on_values(layer, values [batch, seq, n_neurons])` as each layer computes its neurons.

    A callback rather than a stored dict lets callers reduce each layer at once, so a whole model's
    activations never have to sit in memory together.
    """
    arch = arch or get_architecture(model)
    idx = range(arch.n_layers(model)) if layers is None else layers

    def make(layer: int) -> NeuronFn:
        def fn(values: torch.Tensor) -> None:
            on_values(layer, values.detach())

        return fn

    with neuron_hooks(model, {i: make(i) for i in idx}, hook_point, arch):
        yield


def _as_index(neurons: Sequence[int] | np.ndarray | torch.Tensor, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(neurons, dtype=np.int64), device=device)


@contextmanager
def ablate_neurons(model: nn.Module, neuron_set: Mapping[int | str, Sequence[int] | np.ndarray],
                   hook_point: HookPoint = "down_proj_input", *, mode: AblationMode = "zero",
                   scale: float = 0.0, means: Mapping[int, torch.Tensor | np.ndarray] | None = None,
                   arch: ArchitectureSpec | None = None) -> Iterator[None]:
    """Replace the selected neurons at every token position, in every listed layer (METHOD.md §5).

    `neuron_set` maps layer (int or its string, as job specs carry it) -> neuron indices. Modes: 'zero';
    'mean' sets each neuron to `means[layer][neuron]` (a per-neuron vector of that layer, e.g. the captured
    mean A); 'scale' multiplies by `scale`. Values are cloned, never edited in place.
    """
    if mode not in ("zero", "mean", "scale"):
        raise ValueError(f"unknown ablation mode {mode!r}")
    arch = arch or get_architecture(model)
    device = next(model.parameters()).device
    if mode == "mean" and means is None:
        raise ValueError("mode='mean' needs `means` (layer -> per-neuron mean activations)")
    fns: dict[int, NeuronFn] = {}
    for key, neurons in neuron_set.items():
        layer = int(key)
        if len(neurons) == 0:
            continue
        index = _as_index(neurons, device)
        fill = None
        if mode == "mean":
            assert means is not None
            fill = torch.as_tensor(np.asarray(means[layer]), device=device)[index]

        def fn(values: torch.Tensor, index: torch.Tensor = index,
               fill: torch.Tensor | None = fill) -> torch.Tensor:
            out = values.clone()
            if mode == "zero":
                out[..., index] = 0
            elif mode == "scale":
                out[..., index] = out[..., index] * scale
            else:
                assert fill is not None
                out[..., index] = fill.to(out.dtype)
            return out

        fns[layer] = fn
    with neuron_hooks(model, fns, hook_point, arch):
        yield
