"""What every architecture family declares (`ArchitectureSpec`) and the base of its live fast path (`LiveOps`).

A family file (`workers/models/arch/<family>.py`) builds its specs from these pieces; the registry
(`workers.models.arch.registry`) dispatches a loaded model to its spec. Nothing here knows a family.

Two hook points name the same neurons (METHOD.md §3):

- ``down_proj_input`` (default): the input of the MLP down projection, read with a forward PRE-hook. This
  is the neuron's true value, also in gated MLPs where it is act(gate x) * (up x).
- ``act_output``: the output of the activation-function module, read with a forward hook. This is the
  study's hook; in gated MLPs it is only act(gate x). In ungated MLPs both points give the same values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from workers.contract.vocab import HookPoint

__all__ = [
    "ArchitectureSpec",
    "LiveOps",
    "NeuronFn",
    "Readout",
    "UnsupportedArchitectureError",
    "gather_rows",
    "row_attention",
]

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


def _text_config(model: nn.Module) -> Any:
    cfg = getattr(model, "config", None)
    if cfg is None:
        raise UnsupportedArchitectureError(f"{type(model).__name__} has no config")
    get_text = getattr(cfg, "get_text_config", None)
    return get_text() if callable(get_text) else cfg


# ============================================================================ the live fast path


class LiveOps:
    """What the live session's cached-prefix fast path needs from a family (`workers.ablation.live`).

    Where "mid" is (the residual after attention, the MLP block's input), the MLP half of a layer, the last
    layer's attention at one read-out row per sequence, and the reward head. Each method must compute exactly
    what the model's own forward does: the session compares its unablated rewards with the model's and
    refuses the fast path when they disagree.
    """

    #: recorded keyword inputs of the last layer that `attn_rows` reads (the mask is sliced separately)
    row_attention_inputs: tuple[str, ...] = ("position_embeddings", "position_ids")

    def mid_module(self, layer: Any) -> nn.Module:
        """The module whose (first) input is the layer's mid state (residual after attention)."""
        raise NotImplementedError

    def mlp(self, layer: Any, mid: torch.Tensor) -> torch.Tensor:
        """The layer's output from its mid state (position-wise; the neuron hooks fire in here)."""
        raise NotImplementedError

    def attn_rows(self, layer: Any, h: torch.Tensor, rows: torch.Tensor, bound: Mapping[str, Any],
                  mask: torch.Tensor) -> torch.Tensor:
        """Mid state [N, 1, d] at one row per sequence: queries only there, keys/values over all positions."""
        raise NotImplementedError

    def head(self, model: Any, h_rows: torch.Tensor) -> torch.Tensor:
        """Reward [N] from the final layer's read-out rows [N, 1, d], exactly as the model's head does."""
        raise NotImplementedError


def row_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                  scale: float) -> torch.Tensor:
    """[N, H, 1, hd] attention output for one query row; mask is bool (True = attend) or additive float."""
    if k.shape[1] != q.shape[1]:  # grouped-query attention: repeat each kv head for its query heads
        rep = q.shape[1] // k.shape[1]
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype) if mask.dtype != torch.bool
                                          else mask, scale=scale)


def gather_rows(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """x[n, rows[n]] as [N, 1, ...]."""
    return x[torch.arange(x.shape[0], device=x.device), rows].unsqueeze(1)


# ============================================================================ the spec


@dataclass(frozen=True)
class ArchitectureSpec:
    """Where one family keeps its layers, its two hook points, its reward head and its live fast path.

    Paths are attribute paths: `layers_path` from the body (`model.base_model`), hook paths from one layer,
    `head` from the task model. `intermediate_attrs` are config attributes tried in order for the MLP width.
    `live_ops` serves the model classes named in `live_classes` (class names, since the fast path replays a
    class's exact forward); other classes of the family take the live session's full-forward path.
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
    live_ops: LiveOps | None = None
    live_classes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if bool(self.live_classes) != (self.live_ops is not None):
            raise ValueError(f"family {self.family!r}: live_ops and live_classes come together")

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
        if hook_point == HookPoint.down_proj_input:
            return self.down_proj_path
        if hook_point == HookPoint.act_output:
            return self.act_path
        raise ValueError(f"unknown hook point {hook_point!r}; choose one of {[str(h) for h in HookPoint]}")

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
