"""Llama-style decoders: Llama (SmolLM2), Mistral, Qwen2/3, Gemma/Gemma2, OLMo/OLMo2 (family 'llama').

Pre-norm layers `layers`, gated MLP: `mlp.down_proj`'s input is act(gate x) * (up x), `mlp.act_fn`'s
output only act(gate x). The reward is `score` on the final norm at the last non-pad token. The live fast
path replays Llama, Qwen2 and Mistral exactly; the others differ inside the layer (Gemma2's extra norms,
Qwen3's q/k norms, ...) and take the full path.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from workers.models.arch.base import ArchitectureSpec, LiveOps, gather_rows, row_attention

__all__ = ["SPECS", "LlamaLiveOps"]


class LlamaLiveOps(LiveOps):
    """Llama / Qwen2 / Mistral: pre-norm, rotary embeddings, gated MLP, `score` on the final norm."""

    def mid_module(self, layer: Any) -> nn.Module:
        return layer.post_attention_layernorm

    def mlp(self, layer: Any, mid: torch.Tensor) -> torch.Tensor:
        return mid + layer.mlp(layer.post_attention_layernorm(mid))

    def attn_rows(self, layer: Any, h: torch.Tensor, rows: torch.Tensor, bound: Mapping[str, Any],
                  mask: torch.Tensor) -> torch.Tensor:
        attn = layer.self_attn
        rope = sys.modules[type(attn).__module__].apply_rotary_pos_emb
        n, t, _ = h.shape
        x = layer.input_layernorm(h)
        hd = attn.head_dim
        q = attn.q_proj(gather_rows(x, rows)).view(n, 1, -1, hd).transpose(1, 2)
        k = attn.k_proj(x).view(n, t, -1, hd).transpose(1, 2)
        v = attn.v_proj(x).view(n, t, -1, hd).transpose(1, 2)
        cos, sin = bound["position_embeddings"]
        cos, sin = cos.expand(n, -1, -1), sin.expand(n, -1, -1)
        q, _ = rope(q, q, gather_rows(cos, rows), gather_rows(sin, rows))
        k, _ = rope(k, k, cos, sin)
        o = row_attention(q, k, v, mask, attn.scaling).transpose(1, 2).reshape(n, 1, -1)
        return gather_rows(h, rows) + attn.o_proj(o)

    def head(self, model: Any, h_rows: torch.Tensor) -> torch.Tensor:
        return model.score(model.base_model.norm(h_rows))[:, 0, 0]


SPECS = (
    ArchitectureSpec(
        family="llama", model_types=("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2"),
        layers_path="layers", down_proj_path="mlp.down_proj", act_path="mlp.act_fn",
        readout="last", head=("score",),
        live_ops=LlamaLiveOps(),
        live_classes=("LlamaForSequenceClassification", "Qwen2ForSequenceClassification",
                      "MistralForSequenceClassification"),
    ),
)
