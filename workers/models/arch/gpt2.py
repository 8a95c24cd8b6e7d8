"""GPT-2: pre-LayerNorm blocks `h`, fused Conv1D qkv, ungated MLP (`mlp.c_proj` input / `mlp.act` output).

The MLP width is `n_inner`, or 4 * `n_embd` when the config leaves it unset; the reward is `score` on `ln_f`
at the last non-pad token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from workers.models.arch.base import ArchitectureSpec, LiveOps, gather_rows, row_attention

__all__ = ["SPECS", "GPT2LiveOps"]


class GPT2LiveOps(LiveOps):
    """GPT-2: pre-LayerNorm, fused Conv1D qkv, ungated MLP, `score` on ln_f."""

    def mid_module(self, layer: Any) -> nn.Module:
        return layer.ln_2

    def mlp(self, layer: Any, mid: torch.Tensor) -> torch.Tensor:
        return mid + layer.mlp(layer.ln_2(mid))

    def attn_rows(self, layer: Any, h: torch.Tensor, rows: torch.Tensor, bound: Mapping[str, Any],
                  mask: torch.Tensor) -> torch.Tensor:
        attn = layer.attn
        n, t, d = h.shape
        hd = attn.head_dim
        x = layer.ln_1(h)
        w, b = attn.c_attn.weight, attn.c_attn.bias  # Conv1D: y = x @ w + b, w is [d, 3d]
        q = torch.addmm(b[:d], gather_rows(x, rows).reshape(n, d), w[:, :d])
        kv = torch.addmm(b[d:], x.reshape(n * t, d), w[:, d:]).view(n, t, 2 * d)
        k, v = kv.split(d, dim=-1)
        q = q.view(n, 1, -1, hd).transpose(1, 2)
        k = k.reshape(n, t, -1, hd).transpose(1, 2)
        v = v.reshape(n, t, -1, hd).transpose(1, 2)
        o = row_attention(q, k, v, mask, attn.scaling).transpose(1, 2).reshape(n, 1, d)
        return attn.c_proj(o) + gather_rows(h, rows)

    def head(self, model: Any, h_rows: torch.Tensor) -> torch.Tensor:
        return model.score(model.transformer.ln_f(h_rows))[:, 0, 0]


SPECS = (
    ArchitectureSpec(
        family="gpt2", model_types=("gpt2",),
        layers_path="h", down_proj_path="mlp.c_proj", act_path="mlp.act",
        readout="last", head=("score",), intermediate_attrs=("n_inner",), intermediate_factor_attr="n_embd",
        live_ops=GPT2LiveOps(), live_classes=("GPT2ForSequenceClassification",),
    ),
)
