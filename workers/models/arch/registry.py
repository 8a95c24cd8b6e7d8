"""THE architecture registry: which family a loaded model belongs to, and hooks on its MLP neurons.

Every family lives in one file of this package (`bert.py`, `gpt2.py`, ...) that declares `SPECS`, a tuple of
`ArchitectureSpec`; this module imports every such file when it is first imported (every module of the package
but `base`, `registry` and names starting with `_`; one without `SPECS` is an error), so supporting a new family
is adding one file, never editing the callers. A model whose family is not registered fails loudly, naming
its class; for the live session's fast path only, an unknown class falls back to full forwards and says so
(`live_fast_path(model).reason`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from workers.contract.vocab import HookPoint
from workers.models.arch.base import ArchitectureSpec, LiveOps, NeuronFn, UnsupportedArchitectureError

__all__ = [
    "LiveFastPath",
    "all_layers",
    "architectures",
    "get_architecture",
    "live_fast_path",
    "neuron_hook",
    "register_architecture",
    "spec_for_model_type",
    "supported_model_types",
]

_REGISTRY: dict[str, ArchitectureSpec] = {}
_BY_MODEL_TYPE: dict[str, ArchitectureSpec] = {}
_LIVE_BY_CLASS: dict[str, ArchitectureSpec] = {}

#: modules of this package that are not families
_NOT_FAMILIES = frozenset({"base", "registry"})

#: attention implementations whose masks the fast path can slice and whose numbers it reproduces
_LIVE_ATTENTION = ("sdpa", "eager")


def register_architecture(spec: ArchitectureSpec, *, overwrite: bool = False) -> ArchitectureSpec:
    """Add a family; its `model_types` (config.model_type values) and `live_classes` then dispatch to it."""
    if spec.family in _REGISTRY and not overwrite:
        raise ValueError(f"architecture family {spec.family!r} is already registered")
    for cls in spec.live_classes:
        owner = _LIVE_BY_CLASS.get(cls)
        if owner is not None and owner.family != spec.family:
            raise ValueError(f"{cls} already has the live fast path of family {owner.family!r}")
    _REGISTRY[spec.family] = spec
    for mt in spec.model_types:
        _BY_MODEL_TYPE[mt] = spec
    for cls in spec.live_classes:
        _LIVE_BY_CLASS[cls] = spec
    return spec


def architectures() -> dict[str, ArchitectureSpec]:
    """All registered families by name."""
    return dict(_REGISTRY)


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def spec_for_model_type(model_type: str) -> ArchitectureSpec | None:
    return _BY_MODEL_TYPE.get(model_type)


def get_architecture(model: nn.Module) -> ArchitectureSpec:
    """The spec for a loaded model, from its config.model_type; unknown families name their class."""
    cfg = getattr(model, "config", None)
    model_type = getattr(cfg, "model_type", None) if cfg is not None else None
    spec = _BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if spec is None:
        raise UnsupportedArchitectureError(
            f"unsupported architecture {type(model).__name__} (model_type={model_type!r}); supported "
            f"model types: {', '.join(supported_model_types())}. Add a family file to "
            f"workers/models/arch/ to support it.")
    return spec


# ----------------------------------------------------------------------------------------- live fast path


@dataclass(frozen=True)
class LiveFastPath:
    """Which path the live session takes for a model: `ops` of `family`, or None and the `reason` why not."""

    family: str | None
    ops: LiveOps | None
    reason: str | None


def live_fast_path(model: nn.Module) -> LiveFastPath:
    """The cached-prefix fast path for this model's class, or why there is none (full forwards instead)."""
    name = type(model).__name__
    spec = _LIVE_BY_CLASS.get(name)
    if spec is None or spec.live_ops is None:
        return LiveFastPath(None, None, f"no fast path for model class {name} (fast-path classes: "
                                        f"{', '.join(sorted(_LIVE_BY_CLASS))}); using full forward passes")
    impl = getattr(model.config, "_attn_implementation", "sdpa")
    if impl not in _LIVE_ATTENTION:
        return LiveFastPath(None, None, f"no fast path for attention implementation {impl!r} of {name} "
                                        f"(only {', '.join(_LIVE_ATTENTION)}); using full forward passes")
    return LiveFastPath(spec.family, spec.live_ops, None)


# ----------------------------------------------------------------------------------------- hooks


def neuron_hook(model: nn.Module, layer: int, hook_point: HookPoint, fn: NeuronFn,
                arch: ArchitectureSpec | None = None) -> RemovableHandle:
    """Call `fn(values [batch, seq, n_neurons])` whenever layer `layer`'s neurons are computed.

    One mechanism for capture and ablation: a PRE-hook on the down projection (its input) or a forward hook
    on the activation module (its output). If `fn` returns a tensor, it replaces the neurons' values
    downstream. Returns the handle; `.remove()` it (or use `workers.neurons.hooks.neuron_hooks`).
    """
    arch = arch or get_architecture(model)
    module = arch.hook_module(model, layer, hook_point)
    if hook_point == HookPoint.down_proj_input:

        def pre_hook(_mod: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            if args:
                new = fn(args[0])
                return None if new is None else ((new, *args[1:]), kwargs)
            key = next(iter(kwargs))  # Linear/Conv1D take one tensor; called by keyword it is the first
            new = fn(kwargs[key])
            return None if new is None else (args, {**kwargs, key: new})

        return module.register_forward_pre_hook(pre_hook, with_kwargs=True)

    def fwd_hook(_mod: nn.Module, _args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
        return fn(output)

    return module.register_forward_hook(fwd_hook)


def all_layers(model: nn.Module, arch: ArchitectureSpec | None = None) -> Iterable[int]:
    return range((arch or get_architecture(model)).n_layers(model))


# ----------------------------------------------------------------------------------------- the families


def _register_families() -> None:
    """Import every family file of this package (sorted by name) and register the specs it declares."""
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name in _NOT_FAMILIES or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        specs = getattr(module, "SPECS", None)
        if not isinstance(specs, tuple) or not specs or \
                not all(isinstance(s, ArchitectureSpec) for s in specs):
            raise TypeError(f"{module.__name__} is in the architecture package but does not declare "
                            f"SPECS, a non-empty tuple of ArchitectureSpec")
        for spec in specs:
            register_architecture(spec)


_register_families()
