"""The ablation engine: what each mode does to the neurons, and that hooks never outlive their block.

The one ablation implementation: the tests of the former `workers.neurons.hooks.ablate_neurons` (exact zeroing,
modes, both hook points on a gated MLP) now run against `ablated` here.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from tests.workers.hook_probes import TEXTS, encode, hooks_left
from workers.ablation.engine import Ablation, ablated, ablation_from_params, as_ablation, score_with_ablation
from workers.contract.jobs import AblateParams, NeuronIndexSet
from workers.contract.vocab import AblationMode, HookPoint
from workers.data.text import pair_texts
from workers.models.scoring import score_texts
from workers.neurons.hooks import record_neurons

MAX_LEN = 48


def _texts(pairs: list[Any], n: int = 6) -> list[str]:
    out: list[str] = []
    for p in pairs[:n]:
        out.extend(pair_texts(p))
    return out


def _mutable(loaded: Any) -> Any:
    """A private copy of a shared model, for tests that edit weights."""
    return dataclasses.replace(loaded, model=copy.deepcopy(loaded.model))


def _hook_count(loaded: Any) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in loaded.model.modules())


# ------------------------------------------------------------------------------------ the Ablation value


def test_ablation_normalises_masks_and_mappings_to_one_content_key() -> None:
    mask = np.zeros((3, 8), dtype=bool)
    mask[0, [1, 5]] = True
    mask[2, 7] = True
    a = Ablation(mask)
    b = Ablation({"2": [7], "0": [5, 1, 5]})
    assert a == b and a.key() == b.key()
    assert a.layers == [0, 2] and a.first_layer == 0 and a.n_neurons == 3
    assert np.array_equal(a.to_mask((3, 8)), mask)
    assert a.to_dict() == {"0": [1, 5], "2": [7]}
    assert Ablation(mask, mode="scale", factor=0.5).key() != Ablation(mask, mode="scale", factor=0.25).key()
    assert Ablation(mask, mode="scale", factor=0.5).key() != a.key()
    means = np.zeros((3, 8))
    other = means.copy()
    other[0, 1] = 1.0
    assert Ablation(mask, mode="mean", means=means).key() != Ablation(mask, mode="mean", means=other).key()
    other[1, 0] = 9.0  # a mean of an unselected neuron does not change the ablation
    same = Ablation(mask, mode="mean", means=other.copy())
    assert Ablation(mask, mode="mean", means=other).key() == same.key()
    assert as_ablation(a) is a


def test_ablation_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="mode"):
        Ablation({0: [1]}, mode="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="means"):
        Ablation({0: [1]}, mode="mean")
    with pytest.raises(ValueError, match="out of range"):
        Ablation({0: [-1]})
    with pytest.raises(ValueError, match="out of range"):
        Ablation({-1: [0]})
    with pytest.raises(ValueError, match="integer"):
        Ablation({"a": [0]})
    with pytest.raises(ValueError, match="integers"):
        Ablation({0: np.array([True, False])})  # a bool row is not a list of indices
    with pytest.raises(ValueError, match="integers"):
        Ablation({0: [1.5]})
    with pytest.raises(ValueError, match="hook point"):
        Ablation({0: [1]}, hook_point="mlp_out")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bool mask"):
        Ablation(np.zeros((2, 3), dtype=int))
    with pytest.raises(ValueError, match="out of range"):
        Ablation({5: [0]}).validate(2, 8)
    with pytest.raises(ValueError, match="out of range"):
        Ablation({0: [8]}).validate(2, 8)
    assert Ablation({}).is_identity and Ablation({0: [1]}, mode="scale", factor=1.0).is_identity


def test_ablation_from_params_reads_the_job_spec() -> None:
    params = AblateParams.model_validate({"checkpoint": "c", "neuron_set": {"1": [3, 2]}, "mode": "scale",
                                          "scale": 0.5, "hook": "act_output"})
    a = ablation_from_params(params)
    assert a.neurons[1].tolist() == [2, 3] and a.mode == "scale" and a.factor == 0.5
    assert a.hook_point == HookPoint.act_output


def test_contract_words_and_index_sets_are_accepted_as_they_are() -> None:
    """A `NeuronIndexSet` and the vocabulary's enums build the same ablation as plain JSON-ish values."""
    plain = Ablation({"0": [5, 1]}, mode="scale", factor=0.5, hook_point="act_output")  # type: ignore[arg-type]
    typed = Ablation(NeuronIndexSet.model_validate({0: [1, 5]}), mode=AblationMode.scale, factor=0.5,
                     hook_point=HookPoint.act_output)
    assert plain == typed and plain.key() == typed.key()
    assert plain.mode is AblationMode.scale and plain.hook_point is HookPoint.act_output
    assert plain.describe()["mode"] == "scale" and plain.to_dict() == {"0": [1, 5]}


# ------------------------------------------------------------------------------------ what the hooks do


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-bert"])
@pytest.mark.parametrize("hook_point", ["down_proj_input", "act_output"])
def test_zeroing_a_whole_layer_leaves_only_the_down_projection_bias(tiny_models: dict[str, Any],
                                                                    probe_pairs: list[Any], name: str,
                                                                    hook_point: str) -> None:
    loaded = _mutable(tiny_models[name])
    arch, model = loaded.arch, loaded.model
    n_layers, n_neurons = arch.n_layers(model), arch.n_neurons(model)
    down = [arch.hook_module(model, i, "down_proj_input") for i in range(n_layers)]
    gen = torch.Generator().manual_seed(1)
    for d in down:  # tiny models start with zero biases: make the bias visible
        if getattr(d, "bias", None) is not None:
            with torch.no_grad():
                d.bias.copy_(torch.randn(d.bias.shape, generator=gen))
    outputs: dict[int, torch.Tensor] = {}
    handles = [d.register_forward_hook(lambda _m, _a, out, i=i: outputs.__setitem__(i, out.detach()))
               for i, d in enumerate(down)]
    try:
        layer = n_layers - 1
        with ablated(loaded, {layer: list(range(n_neurons))}, hook_point=hook_point):
            score_texts(loaded, _texts(probe_pairs, 2), max_length=MAX_LEN)
    finally:
        for h in handles:
            h.remove()
    out = outputs[layer]
    bias = getattr(down[layer], "bias", None)
    expected = torch.zeros_like(out) if bias is None else bias.detach().expand_as(out)
    if name == "tiny-llama":
        assert bias is None  # no bias: the MLP's output is exactly zero
    assert torch.equal(out, expected)
    assert not torch.equal(outputs[0], torch.zeros_like(outputs[0])) or layer == 0


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-llama", "tiny-qwen2", "tiny-bert"])
def test_scale_one_is_bit_identical_and_other_modes_change_rewards(tiny_models: dict[str, Any],
                                                                   probe_pairs: list[Any], name: str) -> None:
    loaded = tiny_models[name]
    texts = _texts(probe_pairs)
    base = score_texts(loaded, texts, max_length=MAX_LEN)
    every = {0: list(range(128)), 1: list(range(128))}
    same = score_with_ablation(loaded, texts, every, mode="scale", factor=1.0, max_length=MAX_LEN)
    assert np.array_equal(same, base)
    zero = score_with_ablation(loaded, texts, every, max_length=MAX_LEN)
    half = score_with_ablation(loaded, texts, every, mode="scale", factor=0.5, max_length=MAX_LEN)
    assert np.abs(zero - base).max() > 1e-6 and np.abs(half - base).max() > 1e-6
    assert np.array_equal(score_texts(loaded, texts, max_length=MAX_LEN), base)  # hooks gone


def test_mean_mode_with_true_means_keeps_rewards_where_neurons_are_constant(tiny_models: dict[str, Any],
                                                                             probe_pairs: list[Any]) -> None:
    """Neurons whose input weights are zero are constant (GELU of their bias): their true mean is that
    constant, so mean ablation changes nothing; for ordinary neurons the true mean does change rewards."""
    loaded = _mutable(tiny_models["tiny-gpt2"])
    model, arch = loaded.model, loaded.arch
    const = np.arange(0, 128, 3)
    gen = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for block in arch.layers(model):
            block.mlp.c_fc.weight[:, const] = 0.0
            block.mlp.c_fc.bias.copy_(torch.randn(block.mlp.c_fc.bias.shape, generator=gen))
    texts = _texts(probe_pairs)
    base = score_texts(loaded, texts, max_length=MAX_LEN)
    sums = np.zeros((2, 128))
    counts = np.zeros(2)

    def on_values(layer: int, values: torch.Tensor) -> None:
        sums[layer] += values.reshape(-1, values.shape[-1]).double().sum(0).numpy()
        counts[layer] += values.shape[0] * values.shape[1]

    with record_neurons(model, on_values):
        score_texts(loaded, texts, max_length=MAX_LEN)
    means = sums / counts[:, None]
    kept = score_with_ablation(loaded, texts, {0: const, 1: const}, mode="mean", means=means,
                               max_length=MAX_LEN)
    np.testing.assert_allclose(kept, base, atol=1e-6)
    others = np.setdiff1d(np.arange(128), const)
    moved = score_with_ablation(loaded, texts, {0: others, 1: others}, mode="mean", means=means,
                                max_length=MAX_LEN)
    assert np.abs(moved - base).max() > 1e-4


def test_hooks_are_removed_even_when_the_block_raises(tiny_models: dict[str, Any],
                                                      probe_pairs: list[Any]) -> None:
    loaded = tiny_models["tiny-llama"]
    texts = _texts(probe_pairs, 2)
    base = score_texts(loaded, texts, max_length=MAX_LEN)
    before = _hook_count(loaded)
    with pytest.raises(RuntimeError, match="boom"), ablated(loaded, {0: [1, 2, 3], 1: [4]}):
        assert _hook_count(loaded) == before + 2
        raise RuntimeError("boom")
    assert _hook_count(loaded) == before
    assert np.array_equal(score_texts(loaded, texts, max_length=MAX_LEN), base)
    with pytest.raises(ValueError, match="out of range"), ablated(loaded, {7: [0]}):
        pass
    assert _hook_count(loaded) == before


# ------------------------------------------------------------------------------------ exact neuron edits
# (moved from tests/workers/neurons/test_hooks.py when `ablate_neurons` was folded into this engine)

@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert"])
@pytest.mark.parametrize("hook_point", list(HookPoint))
def test_ablation_zeroes_exactly_the_selected_neurons(tiny_models: dict[str, Any], name: str,
                                                      hook_point: HookPoint) -> None:
    lm = tiny_models[name]
    enc = encode(lm)
    clean: dict[int, torch.Tensor] = {}
    ablated_values: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        with record_neurons(lm.model, lambda i, v: clean.__setitem__(i, v.clone()), hook_point, layers=[0]):
            lm.model(**enc)
        with ablated(lm, {"0": [1, 5, 77]}, hook_point=hook_point), \
                record_neurons(lm.model, lambda i, v: ablated_values.__setitem__(i, v.clone()), hook_point, [0]):
            lm.model(**enc)
    assert torch.count_nonzero(ablated_values[0][..., [1, 5, 77]]) == 0
    keep = [i for i in range(128) if i not in (1, 5, 77)]
    torch.testing.assert_close(ablated_values[0][..., keep], clean[0][..., keep], rtol=0, atol=0)
    assert hooks_left(lm) == 0


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-gpt2", "tiny-bert"])
def test_ablation_modes(tiny_models: dict[str, Any], name: str) -> None:
    lm = tiny_models[name]
    base = score_texts(lm, TEXTS)
    with ablated(lm, {0: [], 1: []}):
        np.testing.assert_array_equal(score_texts(lm, TEXTS), base)
    with ablated(lm, {0: list(range(128))}, mode="scale", factor=1.0):
        np.testing.assert_allclose(score_texts(lm, TEXTS), base, atol=1e-6)
    all_neurons = {i: np.arange(128) for i in range(2)}
    with ablated(lm, all_neurons):
        zeroed = score_texts(lm, TEXTS)
    with ablated(lm, all_neurons, mode="scale", factor=0.0):
        np.testing.assert_allclose(score_texts(lm, TEXTS), zeroed, atol=1e-6)
    with ablated(lm, all_neurons, mode="mean", means=np.zeros((2, 128))):
        np.testing.assert_allclose(score_texts(lm, TEXTS), zeroed, atol=1e-6)
    assert not np.allclose(zeroed, base, atol=1e-6)
    with pytest.raises(ValueError, match="means"), ablated(lm, all_neurons, mode="mean"):
        pass
    with pytest.raises(ValueError, match="mode"), ablated(lm, all_neurons, mode="nope"):
        pass
    assert hooks_left(lm) == 0


def test_zeroing_gated_neurons_is_the_same_at_both_points(tiny_models: dict[str, Any]) -> None:
    """act(gate x) = 0 and act(gate x) * up x = 0 both leave the down projection nothing (METHOD.md §3)."""
    lm = tiny_models["tiny-llama"]
    base = score_texts(lm, TEXTS)
    for neuron_set in ({i: list(range(128)) for i in range(2)}, {0: [3, 40], 1: [7]}):
        a = score_with_ablation(lm, TEXTS, neuron_set, hook_point="down_proj_input")
        b = score_with_ablation(lm, TEXTS, neuron_set, hook_point="act_output")
        np.testing.assert_allclose(a, b, atol=1e-6)
        assert not np.allclose(a, base, atol=1e-7)
