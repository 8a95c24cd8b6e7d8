"""Tiny random models and a small probe set shared by the ablation tests (loaded once per session)."""

from __future__ import annotations

from typing import Any

import pytest

TINY = ("tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-bert")


@pytest.fixture(scope="session")
def probe_pairs() -> list[Any]:
    from workers.contract.jobs import DatasetRef
    from workers.data.loaders import load_dataset

    return list(load_dataset(DatasetRef(source="bundled", split="test", limit=6)))


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Any]:
    from workers.models.registry import load_reward_model

    return {name: load_reward_model(name, device="cpu", seed=0) for name in TINY}
