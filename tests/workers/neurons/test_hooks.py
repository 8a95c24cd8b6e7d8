"""Neuron hooks: record every layer, replace selected neurons, and always clean up."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from workers.models.architectures import HOOK_POINTS
from workers.models.registry import LoadedModel, load_reward_model
from workers.models.scoring import score_texts
from workers.neurons.hooks import ablate_neurons, neuron_hooks, record_neurons

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TEXTS = ["Human: what is two plus two?\n\nAssistant: Four.", "Human: hi\n\nAssistant: Hello, how can I help?",
         "short"]


@pytest.fixture(scope="module", params=["tiny-llama", "tiny-gpt2", "tiny-bert"])
def lm(request: pytest.FixtureRequest) -> LoadedModel:
    return load_reward_model(request.param, device="cpu", seed=0)


def _hooks_left(lm: LoadedModel) -> int:
    n = 0
    for layer in range(lm.arch.n_layers(lm.model)):
        for hp in HOOK_POINTS:
            mod = lm.arch.hook_module(lm.model, layer, hp)
            n += len(mod._forward_pre_hooks) + len(mod._forward_hooks)
    return n


def _enc(lm: LoadedModel) -> dict[str, torch.Tensor]:
    return dict(lm.tokenizer(TEXTS, padding=True, return_tensors="pt", return_token_type_ids=False))


@pytest.mark.parametrize("hook_point", HOOK_POINTS)
def test_record_sees_every_layer_with_the_neuron_width(lm: LoadedModel, hook_point: str) -> None:
    enc = _enc(lm)
    seen: dict[int, torch.Size] = {}
    with torch.no_grad(), record_neurons(lm.model, lambda i, v: seen.__setitem__(i, v.shape), hook_point):
        lm.model(**enc)
    b, s = enc["input_ids"].shape
    assert seen == {i: torch.Size((b, s, 128)) for i in range(2)}
    assert _hooks_left(lm) == 0


def test_hooks_are_removed_on_error(lm: LoadedModel) -> None:
    def boom(_values: torch.Tensor) -> None:
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"), neuron_hooks(lm.model, {0: boom}), torch.no_grad():
        lm.model(**_enc(lm))
    assert _hooks_left(lm) == 0


@pytest.mark.parametrize("hook_point", HOOK_POINTS)
def test_ablation_zeroes_exactly_the_selected_neurons(lm: LoadedModel, hook_point: str) -> None:
    enc = _enc(lm)
    clean: dict[int, torch.Tensor] = {}
    ablated: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        with record_neurons(lm.model, lambda i, v: clean.__setitem__(i, v.clone()), hook_point, layers=[0]):
            lm.model(**enc)
        with ablate_neurons(lm.model, {"0": [1, 5, 77]}, hook_point), \
                record_neurons(lm.model, lambda i, v: ablated.__setitem__(i, v.clone()), hook_point, [0]):
            lm.model(**enc)
    assert torch.count_nonzero(ablated[0][..., [1, 5, 77]]) == 0
    keep = [i for i in range(128) if i not in (1, 5, 77)]
    torch.testing.assert_close(ablated[0][..., keep], clean[0][..., keep], rtol=0, atol=0)
    assert _hooks_left(lm) == 0


def test_ablation_modes(lm: LoadedModel) -> None:
    base = score_texts(lm, TEXTS)
    with ablate_neurons(lm.model, {0: [], 1: []}):
        np.testing.assert_array_equal(score_texts(lm, TEXTS), base)
    with ablate_neurons(lm.model, {0: list(range(128))}, mode="scale", scale=1.0):
        np.testing.assert_allclose(score_texts(lm, TEXTS), base, atol=1e-6)
    all_neurons = {i: np.arange(128) for i in range(2)}
    with ablate_neurons(lm.model, all_neurons):
        zeroed = score_texts(lm, TEXTS)
    with ablate_neurons(lm.model, all_neurons, mode="scale", scale=0.0):
        np.testing.assert_allclose(score_texts(lm, TEXTS), zeroed, atol=1e-6)
    with ablate_neurons(lm.model, all_neurons, mode="mean", means={i: np.zeros(128) for i in range(2)}):
        np.testing.assert_allclose(score_texts(lm, TEXTS), zeroed, atol=1e-6)
    assert not np.allclose(zeroed, base, atol=1e-6)
    with pytest.raises(ValueError, match="means"), ablate_neurons(lm.model, all_neurons, mode="mean"):
        pass
    with pytest.raises(ValueError, match="mode"), \
            ablate_neurons(lm.model, all_neurons, mode="nope"):  # type: ignore[arg-type]
        pass
    assert _hooks_left(lm) == 0


def test_zeroing_gated_neurons_is_the_same_at_both_points() -> None:
    """act(gate x) = 0 and act(gate x) * up x = 0 both leave the down projection nothing (METHOD.md §3)."""
    lm = load_reward_model("tiny-llama", device="cpu", seed=0)
    base = score_texts(lm, TEXTS)
    for neuron_set in ({i: list(range(128)) for i in range(2)}, {0: [3, 40], 1: [7]}):
        with ablate_neurons(lm.model, neuron_set, "down_proj_input"):
            a = score_texts(lm, TEXTS)
        with ablate_neurons(lm.model, neuron_set, "act_output"):
            b = score_texts(lm, TEXTS)
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert not np.allclose(a, base, atol=1e-7)
