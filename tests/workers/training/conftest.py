"""A learnable preference fixture and settings small enough that a tiny RM trains in about a second."""

from __future__ import annotations

import os
import random
from dataclasses import replace

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from workers.data.schema import PreferencePair  # noqa: E402
from workers.training.presets import PRESETS, TrainSettings  # noqa: E402

WORDS = ("the", "a", "cat", "dog", "sky", "blue", "red", "green", "house", "tree", "water", "river", "stone",
         "light", "dark", "small", "big", "fast", "slow", "bread", "garden", "window", "music", "paper")
#: What the chosen response adds, per objective: a rule a two-layer random model can find in a few steps.
MARKER = {"helpful": "thanks", "harmless": "sorry"}


def make_pairs(n_per_objective: int = 64, seed: int = 0, split: str = "train") -> list[PreferencePair]:
    """Chosen = rejected + the objective's marker word; every prompt distinct, objectives interleaved."""
    rng = random.Random(seed)
    out = []
    for i in range(2 * n_per_objective):
        objective = "helpful" if i % 2 == 0 else "harmless"
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10)))
        prompt = f"question {i}: " + " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))
        out.append(PreferencePair(
            pair_id=f"{split}-{seed}-{objective[:4]}-{i}", prompt=prompt,
            chosen=f"{body} {MARKER[objective]}", rejected=body, objective=objective, source="fixture",
            subset=f"fixture/{objective}", split=split))
    return out


#: Settings for the tests: 'custom' preset, short texts, a high lr for random tiny models.
FAST_SETTINGS: TrainSettings = replace(PRESETS["custom"], learning_rate=1e-2, epochs=3.0, batch_size=16,
                                       max_length=48, eval_fraction=0.15, evals_per_epoch=2)




class RecordingProgress:
    """Keeps every update, so a test can check what a user would have seen."""

    def __init__(self) -> None:
        self.updates: list[tuple[float, str, dict[str, object]]] = []

    def update(self, fraction: float, message: str = "", force: bool = False, **metrics: object) -> None:
        self.updates.append((fraction, message, metrics))


@pytest.fixture
def pairs_factory():  # type: ignore[no-untyped-def]
    return make_pairs


@pytest.fixture
def fast() -> TrainSettings:
    return FAST_SETTINGS


@pytest.fixture
def recorder() -> RecordingProgress:
    return RecordingProgress()
