"""Hooks on MLP neurons, built on the architecture registry: install functions on them, or record them.

Every hook goes through `workers.models.arch.neuron_hook`, so capture and ablation see the same values at
the same place (`down_proj_input` by default, or the study's `act_output`), and hooks are always removed
when the `with` block ends, even on error. Ablation (replacing values) is `workers.ablation.engine`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

from workers.contract.vocab import HookPoint
from workers.models.arch import ArchitectureSpec, NeuronFn, get_architecture, neuron_hook

__all__ = ["neuron_hooks", "record_neurons"]


@contextmanager
def neuron_hooks(model: nn.Module, fns: Mapping[int, NeuronFn],
                 hook_point: HookPoint = HookPoint.down_proj_input,
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
                   hook_point: HookPoint = HookPoint.down_proj_input, layers: Iterable[int] | None = None,
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
