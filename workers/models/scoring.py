"""Reward texts with a loaded model: left-truncated, length-bucketed, in the caller's order.

The batching helpers are shared with neuron capture so both see exactly the same tokens.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
import torch

from workers.models.registry import LoadedModel, max_positions

__all__ = [
    "Batch", "ProgressLike", "effective_max_length", "iter_batches", "n_batches", "score_texts", "tokenize",
]


class ProgressLike(Protocol):
    def update(self, fraction: float, message: str = ...) -> None: ...


class Batch:
    """One right-padded batch: `index` maps its rows back to positions in the caller's text list."""

    __slots__ = ("attention_mask", "index", "input_ids")

    def __init__(self, index: np.ndarray, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> None:
        self.index = index
        self.input_ids = input_ids
        self.attention_mask = attention_mask


def effective_max_length(loaded: LoadedModel, max_length: int) -> int:
    """`max_length` capped at the model's position limit (BERT/GPT-2 crash beyond it)."""
    limit = max_positions(loaded.model)
    return min(int(max_length), limit) if limit else int(max_length)


TOKENIZE_CHUNK = 32


def tokenize(loaded: LoadedModel, texts: Sequence[str], max_length: int) -> list[np.ndarray]:
    """Token ids per text (int32 arrays), truncated on the LEFT (the tokenizer is configured so) to keep the
    final turn.

    Texts are tokenised a chunk at a time and only the kept ids survive: a fast tokenizer's full encodings
    (every token of a long conversation, with offsets) would otherwise all be alive at once, and the peak
    memory of scoring or capture would grow with the data.
    """
    limit = effective_max_length(loaded, max_length)
    out: list[np.ndarray] = []
    for start in range(0, len(texts), TOKENIZE_CHUNK):
        enc = loaded.tokenizer(list(texts[start:start + TOKENIZE_CHUNK]), truncation=True, max_length=limit,
                               padding=False, return_attention_mask=False, return_token_type_ids=False)
        out.extend(np.asarray(ids, dtype=np.int32) for ids in enc["input_ids"])
    return out


def iter_batches(loaded: LoadedModel, token_ids: Sequence[Sequence[int] | np.ndarray],
                 batch_size: int) -> Iterator[Batch]:
    """Length-bucketed batches: longest first (an OOM shows at once), each padded only to its own longest."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    lengths = np.fromiter((len(t) for t in token_ids), dtype=np.int64, count=len(token_ids))
    order = np.argsort(-lengths, kind="stable")
    pad = loaded.tokenizer.pad_token_id
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        width = max(1, int(lengths[idx].max()))
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for row, i in enumerate(idx):
            n = int(lengths[i])
            if n:
                ids[row, :n] = torch.as_tensor(np.asarray(token_ids[i]), dtype=torch.long)
                mask[row, :n] = 1
        yield Batch(idx, ids.to(loaded.device), mask.to(loaded.device))


def n_batches(n_texts: int, batch_size: int) -> int:
    return -(-n_texts // batch_size)


def score_texts(loaded: LoadedModel, texts: Sequence[str], *, max_length: int = 128, batch_size: int = 16,
                progress: ProgressLike | Any | None = None) -> np.ndarray:
    """The scalar reward of each text (float32, in input order).

    Decoders' rewards are read by the HF head at the last non-pad token, encoders' at the pooled [CLS];
    right padding keeps positions identical to an unbatched pass, so a reward does not depend on its batch.
    """
    token_ids = tokenize(loaded, texts, max_length)
    out = np.empty(len(token_ids), dtype=np.float32)
    total = n_batches(len(token_ids), batch_size)
    model = loaded.model
    with torch.inference_mode():
        for b, batch in enumerate(iter_batches(loaded, token_ids, batch_size)):
            logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
            out[batch.index] = logits[:, 0].float().cpu().numpy()
            if progress is not None:
                n_done = min((b + 1) * batch_size, len(out))
                progress.update((b + 1) / total, f"scored {n_done}/{len(out)} texts")
    return out
