"""The text a reward model scores, and tokenization that keeps the end of it. Torch-free at import."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.data.schema import PreferencePair

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
SYSTEM = "\n\nSystem:"
"""The turn of a system message (TRL conversations, see workers/data/layouts.py); HH-RLHF has none."""


def is_dialogue(prompt: str) -> bool:
    """True for an HH-RLHF style prompt (`"\\n\\nHuman: ..."` turns, perhaps after a `"\\n\\nSystem: ..."` turn)
    rather than a bare question."""
    return prompt.startswith((HUMAN, SYSTEM))


def dialogue_prompt(prompt: str) -> str:
    """The prompt as dialogue turns: unchanged for HH-RLHF prompts, one Human turn for a bare question."""
    return prompt if is_dialogue(prompt) else f"{HUMAN} {prompt}"


def format_text(prompt: str, response: str) -> str:
    """The dialogue a reward model scores.

    For an HH-RLHF prompt (everything before the final `"\\n\\nAssistant:"` turn) this rebuilds the
    original dialogue: `prompt + "\\n\\nAssistant: " + response`. A single-turn prompt becomes
    `"\\n\\nHuman: {prompt}\\n\\nAssistant: {response}"`.
    """
    return f"{dialogue_prompt(prompt)}{ASSISTANT} {response}"


def split_dialogue(text: str) -> tuple[str, str]:
    """Inverse of `format_text` for one HH-RLHF dialogue: (prompt, final assistant response).

    One leading space of the response is dropped (format_text puts it back). ValueError if the text
    has no Assistant turn.
    """
    idx = text.rfind(ASSISTANT)
    if idx < 0:
        raise ValueError("no '\\n\\nAssistant:' turn")
    return text[:idx], _drop_space(text[idx + len(ASSISTANT):])


def _drop_space(s: str) -> str:
    return s[1:] if s.startswith(" ") else s


def pair_texts(pair: PreferencePair) -> tuple[str, str]:
    """(chosen text, rejected text) as the reward model sees them."""
    return format_text(pair.prompt, pair.chosen), format_text(pair.prompt, pair.rejected)


def tokenize_left(tokenizer: Any, texts: Sequence[str], max_length: int,
                  padding: bool = True) -> dict[str, Any]:
    """Tokenize, truncating from the LEFT so the final turns (the responses) survive.

    With `padding=True` (pad to the longest text) the values are `torch.Tensor`s; with `padding=False`
    they are lists of token ids, one per text. The tokenizer's own `truncation_side` is restored after.
    """
    old_side = getattr(tokenizer, "truncation_side", "right")
    tokenizer.truncation_side = "left"
    try:
        enc = tokenizer(list(texts), truncation=True, max_length=max_length,
                        padding="longest" if padding else False,
                        return_tensors="pt" if padding else None)
    finally:
        tokenizer.truncation_side = old_side
    return dict(enc)
