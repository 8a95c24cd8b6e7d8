"""Loaded models are cached per session: loading is the slow part, the tests only read them."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TINY = ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-bert"]
TEXTS = [
    "Human: How do I bake bread?\n\nAssistant: Mix flour, water, salt and yeast, knead, let it rise, bake.",
    "Human: hi\n\nAssistant: Hello!",
    "Human: Tell me a long story.\n\nAssistant: " + "Once upon a time there was a small robot. " * 30,
    "ok",
]


@pytest.fixture(scope="session")
def load() -> Callable[..., object]:
    from workers.models.registry import load_reward_model

    cache: dict[tuple[str, int], object] = {}

    def get(name: str, seed: int = 0):  # type: ignore[no-untyped-def]
        if (name, seed) not in cache:
            cache[(name, seed)] = load_reward_model(name, device="cpu", seed=seed)
        return cache[(name, seed)]

    return get
