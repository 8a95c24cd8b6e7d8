"""Neuron hooks: record every layer and always clean up (ablation's own tests: tests/workers/ablation/)."""

from __future__ import annotations

import os

import pytest
import torch

from tests.workers.hook_probes import encode, hooks_left
from workers.contract.vocab import HookPoint
from workers.models.registry import LoadedModel, load_reward_model
from workers.neurons.hooks import neuron_hooks, record_neurons

os.environ.setdefault("HF_HUB_OFFLINE", "1")

@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2", "tiny-bert"])
def lm(request: pytest.FixtureRequest) -> LoadedModel:
    return load_reward_model(request.param, device="cpu", seed=0)


@pytest.mark.parametrize("hook_point", list(HookPoint))
def test_record_sees_every_layer_with_the_neuron_width(lm: LoadedModel, hook_point: str) -> None:
    enc = encode(lm)
    seen: dict[int, torch.Size] = {}
    with torch.no_grad(), record_neurons(lm.model, lambda i, v: seen.__setitem__(i, v.shape), hook_point):
        lm.model(**enc)
    b, s = enc["input_ids"].shape
    assert seen == {i: torch.Size((b, s, 128)) for i in range(2)}
    assert hooks_left(lm) == 0


def test_hooks_are_removed_on_error(lm: LoadedModel) -> None:
    def boom(_values: torch.Tensor) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), neuron_hooks(lm.model, {0: boom}), torch.no_grad():
        lm.model(**encode(lm))
    assert hooks_left(lm) == 0
