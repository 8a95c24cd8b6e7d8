"""Helpers shared by the hook and ablation tests: probe texts, their encoding, and a count of hooks left."""

from __future__ import annotations

from typing import Any

import torch

from workers.contract.vocab import HookPoint

TEXTS = ["Human: what is two plus two?\n\nAssistant: Four.", "Human: hi\n\nAssistant: Hello, how can I help?",
         "short"]


def hooks_left(lm: Any) -> int:
    """Forward (pre-)hooks still registered on every hook module of every layer: 0 after a clean exit."""
    n = 0
    for layer in range(lm.arch.n_layers(lm.model)):
        for hp in HookPoint:
            mod = lm.arch.hook_module(lm.model, layer, hp)
            n += len(mod._forward_pre_hooks) + len(mod._forward_hooks)
    return n


def encode(lm: Any) -> dict[str, torch.Tensor]:
    return dict(lm.tokenizer(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False))
