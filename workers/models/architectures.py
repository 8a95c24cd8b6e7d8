"""THE architecture registry: where each supported model family keeps its layers and its MLP neurons.

Everything that touches neurons (capture, ablation) asks this module for the module to hook, so a new
family is supported by registering one `ArchitectureSpec` here, never by editing the callers.

Two hook points name the same neurons (METHOD.md §3):

- ``down_proj_input`` (default): the input of the MLP down projection, read with a forward PRE-hook. This
  is the neuron's true value, also in gated MLPs where it is act(gate x) * (up x).
- ``act_output``: the output of the activation-function module, read with a forward hook. This is the
  study's hook; in gated MLPs it is only act(gate x). In ungated MLPs both points give the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = [
    "HOOK_POINTS",
    "ArchitectureSpec",
    "HookPoint",
    "NeuronFn",
    "UnsupportedArchitectureError",
    "all_layers",
    "architectures",
    "get_architecture",
    "neuron_hook",
    "register_architecture",
    "spec_for_model_type",
    "supported_model_types",
]

HookPoint = Literal["down_proj_input", "act_output"]
HOOK_POINTS: tuple[HookPoint, ...] = ("down_proj_input", "act_output")
Readout = Literal["cls", "last"]

#: Called with the neurons' values [batch, seq, n_neurons]; returning a tensor replaces them.
NeuronFn = Callable[[torch.Tensor], torch.Tensor | None]


class UnsupportedArchitectureError(ValueError):
    """The model's family is not registered, so its neurons cannot be located."""


def _get_path(root: Any, path: str) -> Any:
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _body(model: nn.Module) -> nn.Module:
    """The transformer body: `base_model` of a task model, or the model itself when it is already bare."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, nn.Module) else model


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where one family keeps its layers, its two hook points and its reward head.

    Paths are attribute paths: `layers_path` from the body (`model.base_model`), hook paths from one layer,
    `head` from the task model. `intermediate_attrs` are config attributes tried in order for the MLP width.
    """

    family: str
    model_types: tuple[str, ...]
    layers_path: str
    down_proj_path: str
    act_path: str
    readout: Readout
    head: tuple[str, ...]
    intermediate_attrs: tuple[str, ...] = ("intermediate_size",)
    intermediate_factor_attr: str | None = None  # GPT-2: n_inner=None means 4 * n_embd

    @property
    def is_decoder(self) -> bool:
        return self.readout == "last"

    def layers(self, model: nn.Module) -> list[nn.Module]:
        try:
            return list(_get_path(_body(model), self.layers_path))
        except AttributeError as exc:
            raise UnsupportedArchitectureError(
                f"{type(model).__name__} has no '{self.layers_path}' although its config says family "
                f"{self.family!r}") from exc

    def n_layers(self, model: nn.Module) -> int:
        return len(self.layers(model))

    def n_neurons(self, model: nn.Module) -> int:
        """The MLP hidden width (GPT-2 small: 3,072; SmolLM2-135M: 1,536)."""
        cfg = _text_config(model)
        for attr in self.intermediate_attrs:
            value = getattr(cfg, attr, None)
            if value:
                return int(value)
        if self.intermediate_factor_attr is not None:
            return 4 * int(getattr(cfg, self.intermediate_factor_attr))
        raise UnsupportedArchitectureError(f"cannot read the MLP width of {type(model).__name__}")

    def hook_path(self, hook_point: HookPoint) -> str:
        if hook_point == "down_proj_input":
            return self.down_proj_path
        if hook_point == "act_output":
            return self.act_path
        raise ValueError(f"unknown hook point {hook_point!r}; choose one of {HOOK_POINTS}")

    def hook_module(self, model: nn.Module, layer_idx: int, hook_point: HookPoint) -> nn.Module:
        path = self.hook_path(hook_point)
        layers = self.layers(model)
        if not -len(layers) <= layer_idx < len(layers):
            raise IndexError(f"layer {layer_idx} out of range: {type(model).__name__} has "
                             f"{len(layers)} layers")
        try:
            module = _get_path(layers[layer_idx], path)
        except AttributeError as exc:
            raise UnsupportedArchitectureError(
                f"{type(model).__name__} layer {layer_idx} has no '{path}' ({hook_point})") from exc
        if not isinstance(module, nn.Module):
            # e.g. a DeBERTa config whose hidden_act is a plain function: nothing to hook.
            raise UnsupportedArchitectureError(
                f"{type(model).__name__} '{path}' is a {type(module).__name__}, not an nn.Module; "
                f"use hook_point='down_proj_input'")
        return module

    def head_modules(self, model: nn.Module) -> list[nn.Module]:
        """The reward head's modules (`score` for decoders, `classifier` for encoders), if present."""
        out = []
        for path in self.head:
            try:
                out.append(_get_path(model, path))
            except AttributeError:
                continue
        return out


def _text_config(model: nn.Module) -> Any:
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise UnsupportedArchitectureError(f"{type(model).__name__} has no config")
    get_text = getattr(cfg, "get_text_config", None)
    return get_text() if callable(get_text) else cfg


_REGISTRY: dict[str, ArchitectureSpec] = {}
_BY_MODEL_TYPE: dict[str, ArchitectureSpec] = {}


def register_architecture(spec: ArchitectureSpec, *, overwrite: bool = False) -> ArchitectureSpec:
    """Add a family; its `model_types` (config.model_type values) then dispatch to it."""
    if spec.family in _REGISTRY and not overwrite:
        raise ValueError(f"architecture family {spec.family!r} is already registered")
    _REGISTRY[spec.family] = spec
    for mt in spec.model_types:
        _BY_MODEL_TYPE[mt] = spec
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
            f"model types: {', '.join(supported_model_types())}. Register an ArchitectureSpec in "
            f"workers/models/architectures.py to add it.")
    return spec


# ----------------------------------------------------------------------------------------- families

register_architecture(ArchitectureSpec(
    family="bert", model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
    layers_path="encoder.layer", down_proj_path="output.dense", act_path="intermediate.intermediate_act_fn",
    readout="cls", head=("classifier",),
))
register_architecture(ArchitectureSpec(
    family="deberta-v2", model_types=("deberta-v2",),
    layers_path="encoder.layer", down_proj_path="output.dense", act_path="intermediate.intermediate_act_fn",
    readout="cls", head=("classifier",),
))
register_architecture(ArchitectureSpec(
    family="gpt2", model_types=("gpt2",),
    layers_path="h", down_proj_path="mlp.c_proj", act_path="mlp.act",
    readout="last", head=("score",), intermediate_attrs=("n_inner",), intermediate_factor_attr="n_embd",
))
register_architecture(ArchitectureSpec(
    family="gpt_neox", model_types=("gpt_neox",),
    layers_path="layers", down_proj_path="mlp.dense_4h_to_h", act_path="mlp.act",
    readout="last", head=("score",),
))
register_architecture(ArchitectureSpec(
    family="llama", model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2"),
    layers_path="layers", down_proj_path="mlp.down_proj", act_path="mlp.act_fn",
    readout="last", head=("score",),
))


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
    if hook_point == "down_proj_input":

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
