"""The resource-sizing rule (app.jobs.sizing) and the model sizes it reads (workers.models.names)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.jobs.sizing import GIB, default_request, memory_bytes
from workers.models.names import PARAMETER_COUNTS, parameter_count


def test_memory_is_the_runtime_plus_bytes_per_parameter_of_the_kind() -> None:
    assert memory_bytes("score", 0) == GIB
    assert memory_bytes("train", 22_713_601) == GIB + 20 * 22_713_601  # minilm-l6: ~1.45 GB
    assert memory_bytes("capture", 134_515_008) == GIB + 12 * 134_515_008  # smollm2-135m: ~2.69 GB
    assert memory_bytes("evaluate", 1000) == memory_bytes("score", 1000) < memory_bytes("ablate", 1000)
    with pytest.raises(ValueError):
        memory_bytes("nope", 1)


def test_default_request_adds_memory_when_the_size_is_known_and_a_gpu_when_asked() -> None:
    assert default_request("score", None, gpu=False) == {"CPU": 1.0}
    assert default_request("train", 2_057_601, gpu=True) == {"CPU": 1.0, "GPU": 1.0,
                                                             "memory": float(GIB + 20 * 2_057_601)}


def test_parameter_counts_of_registered_local_and_hub_models(tmp_path: Path) -> None:
    assert parameter_count("tiny-bert") == 2_057_601 and parameter_count("minilm-l6") == 22_713_601
    assert set(PARAMETER_COUNTS) >= {"tiny-bert", "tiny-gpt2", "tiny-llama", "tiny-qwen2", "minilm-l6",
                                     "smollm2-135m"}
    # all-MiniLM-L6-v2's own config: within 2 % of the 22.7 M counted with torch
    d = tmp_path / "minilm"
    d.mkdir()
    d.joinpath("config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 384,
                                                     "num_hidden_layers": 6, "vocab_size": 30522,
                                                     "intermediate_size": 1536}))
    n = parameter_count(str(d))
    assert n is not None and abs(n - 22_713_601) / 22_713_601 < 0.02
    assert parameter_count("openai-community/gpt2") is None  # a hub id: unknown here, settings decide
    d.joinpath("config.json").write_text("{}")
    assert parameter_count(str(d)) is None
