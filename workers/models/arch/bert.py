"""BERT-style encoders: BERT, RoBERTa, XLM-R, CamemBERT, ELECTRA (family 'bert') and DeBERTa-v2.

Post-LayerNorm layers `encoder.layer`; the neurons are the input of `output.dense` or the output of
`intermediate.intermediate_act_fn`; the reward is read at [CLS] by `classifier`. The live fast path covers
`BertForSequenceClassification` (MiniLM): RoBERTa's and DeBERTa's heads differ, so they take the full path.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from workers.models.arch.base import ArchitectureSpec, LiveOps, gather_rows, row_attention

__all__ = ["SPECS", "BertLiveOps"]


class BertLiveOps(LiveOps):
    """BERT (MiniLM): post-LayerNorm; mid is the attention block's output; pooler + classifier on [CLS]."""

    def mid_module(self, layer: Any) -> nn.Module:
        return layer.intermediate

    def mlp(self, layer: Any, mid: torch.Tensor) -> torch.Tensor:
        return layer.output(layer.intermediate(mid), mid)

    def attn_rows(self, layer: Any, h: torch.Tensor, rows: torch.Tensor, bound: Mapping[str, Any],
                  mask: torch.Tensor) -> torch.Tensor:
        sa = layer.attention.self
        n, t, _ = h.shape
        hd = sa.attention_head_size
        h_r = gather_rows(h, rows)
        q = sa.query(h_r).view(n, 1, -1, hd).transpose(1, 2)
        k = sa.key(h).view(n, t, -1, hd).transpose(1, 2)
        v = sa.value(h).view(n, t, -1, hd).transpose(1, 2)
        o = row_attention(q, k, v, mask, sa.scaling).transpose(1, 2).reshape(n, 1, -1)
        return layer.attention.output(o, h_r)

    def head(self, model: Any, h_rows: torch.Tensor) -> torch.Tensor:
        return model.classifier(model.dropout(model.bert.pooler(h_rows)))[:, 0]


SPECS = (
    ArchitectureSpec(
        family="bert", model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
        layers_path="encoder.layer", down_proj_path="output.dense",
        act_path="intermediate.intermediate_act_fn", readout="cls", head=("classifier",),
        live_ops=BertLiveOps(), live_classes=("BertForSequenceClassification",),
    ),
    ArchitectureSpec(
        family="deberta-v2", model_types=("deberta-v2",),
        layers_path="encoder.layer", down_proj_path="output.dense",
        act_path="intermediate.intermediate_act_fn", readout="cls", head=("classifier",),
    ),
)
