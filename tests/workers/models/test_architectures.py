"""The architecture registry finds each family's layers, hook modules, head and live fast path, and names
what it can't."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoConfig, AutoModelForSequenceClassification

from workers.contract.vocab import HookPoint
from workers.models import names
from workers.models.arch import (
    ArchitectureSpec,
    UnsupportedArchitectureError,
    architectures,
    get_architecture,
    live_fast_path,
    neuron_hook,
    register_architecture,
    spec_for_model_type,
    supported_model_types,
)

HOOK_POINTS = tuple(HookPoint)


def _tiny(model_type: str, **extra: object) -> nn.Module:
    if model_type == "gpt2":
        kw: dict[str, object] = {"n_embd": 32, "n_layer": 3, "n_head": 2, "n_inner": 48}
    else:
        kw = {"hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 48}
        if model_type not in ("bert", "roberta", "xlm-roberta", "camembert", "electra", "deberta-v2",
                              "gpt_neox"):
            kw.update(num_key_value_heads=2, head_dim=16)
        if model_type == "electra":
            kw["embedding_size"] = 32
    kw.update(vocab_size=64, num_labels=1, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    kw.update(extra)
    torch.manual_seed(0)
    return AutoModelForSequenceClassification.from_config(AutoConfig.for_model(model_type, **kw)).eval()


EXPECTED = {
    # model_type: (family, layer list, down_proj_input module, act_output module, readout)
    "bert": ("bert", lambda m: m.bert.encoder.layer, lambda layer: layer.output.dense,
             lambda layer: layer.intermediate.intermediate_act_fn, "cls"),
    "gpt2": ("gpt2", lambda m: m.transformer.h, lambda layer: layer.mlp.c_proj,
             lambda layer: layer.mlp.act, "last"),
    "llama": ("llama", lambda m: m.model.layers, lambda layer: layer.mlp.down_proj,
              lambda layer: layer.mlp.act_fn, "last"),
    "qwen2": ("llama", lambda m: m.model.layers, lambda layer: layer.mlp.down_proj,
              lambda layer: layer.mlp.act_fn, "last"),
    "gpt_neox": ("gpt_neox", lambda m: m.gpt_neox.layers, lambda layer: layer.mlp.dense_4h_to_h,
                 lambda layer: layer.mlp.act, "last"),
    "deberta-v2": ("deberta-v2", lambda m: m.deberta.encoder.layer, lambda layer: layer.output.dense,
                   lambda layer: layer.intermediate.intermediate_act_fn, "cls"),
}


@pytest.mark.parametrize("model_type", list(EXPECTED))
def test_hook_modules_are_the_documented_submodules(model_type: str) -> None:
    model = _tiny(model_type)
    family, layers_of, down_of, act_of, readout = EXPECTED[model_type]
    arch = get_architecture(model)
    assert arch.family == family and arch.readout == readout
    layers = list(layers_of(model))
    assert arch.layers(model) == layers and arch.n_layers(model) == 3
    assert arch.n_neurons(model) == 48
    for i, layer in enumerate(layers):
        assert arch.hook_module(model, i, "down_proj_input") is down_of(layer)
        assert arch.hook_module(model, i, "act_output") is act_of(layer)
        assert isinstance(act_of(layer), nn.Module)
    head = arch.head_modules(model)
    assert head and head[0] is getattr(model, "score" if readout == "last" else "classifier")


def test_gpt2_width_defaults_to_four_times_hidden() -> None:
    model = _tiny("gpt2", n_inner=None)
    assert get_architecture(model).n_neurons(model) == 4 * 32


@pytest.mark.parametrize("model_type", supported_model_types())
def test_every_registered_model_type_hooks_both_points(model_type: str) -> None:
    model = _tiny(model_type)
    arch = get_architecture(model)
    seen: dict[str, tuple[int, ...]] = {}
    handles = [neuron_hook(model, 1, hp, lambda t, hp=hp: seen.__setitem__(hp, tuple(t.shape)))
               for hp in HOOK_POINTS]
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 6, 7]]))
    for h in handles:
        h.remove()
    assert seen == {hp: (1, 4, arch.n_neurons(model)) for hp in HOOK_POINTS}


def test_unsupported_class_names_itself() -> None:
    model = AutoModelForSequenceClassification.from_config(
        AutoConfig.for_model("distilbert", dim=32, n_layers=1, n_heads=2, hidden_dim=48, vocab_size=64))
    with pytest.raises(UnsupportedArchitectureError, match="DistilBertForSequenceClassification"):
        get_architecture(model)
    with pytest.raises(UnsupportedArchitectureError, match="Linear"):
        get_architecture(nn.Linear(2, 2))


def test_bad_hook_point_and_layer() -> None:
    model = _tiny("llama")
    arch = get_architecture(model)
    with pytest.raises(ValueError, match="hook point"):
        arch.hook_module(model, 0, "mlp_out")  # type: ignore[arg-type]
    with pytest.raises(IndexError, match="3 layers"):
        arch.hook_module(model, 3, "down_proj_input")


def test_pre_hook_replaces_the_down_projection_input() -> None:
    """A returned tensor replaces the neurons: zeroing all of a Llama layer removes its MLP output."""
    model = _tiny("llama")
    mlp_out: list[torch.Tensor] = []
    model.model.layers[0].mlp.register_forward_hook(lambda _m, _a, out: mlp_out.append(out))
    handle = neuron_hook(model, 0, "down_proj_input", torch.zeros_like)
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 6]]))
    handle.remove()
    assert torch.count_nonzero(mlp_out[-1]) == 0  # Llama's down_proj has no bias
    with torch.no_grad():
        model(input_ids=torch.tensor([[1, 5, 6]]))
    assert torch.count_nonzero(mlp_out[-1]) > 0


def test_gated_mlp_points_differ_ungated_agree() -> None:
    ids = torch.tensor([[1, 5, 6, 9]])
    for model_type, same in (("gpt2", True), ("bert", True), ("llama", False)):
        model = _tiny(model_type)
        got: dict[str, torch.Tensor] = {}
        hs = [neuron_hook(model, 0, hp, lambda t, hp=hp, got=got: got.__setitem__(hp, t.clone()))
              for hp in HOOK_POINTS]
        with torch.no_grad():
            model(input_ids=ids)
        for h in hs:
            h.remove()
        assert torch.allclose(got["down_proj_input"], got["act_output"]) is same, model_type


def test_names_module_families_match_the_registry() -> None:
    """names.py is torch-free, so it keeps its own copy of model_type -> family; it must not drift."""
    assert set(names._FAMILY_OF_TYPE) == set(supported_model_types())
    for mt, family in names._FAMILY_OF_TYPE.items():
        spec = spec_for_model_type(mt)
        assert spec is not None and spec.family == family
        assert (family in names._ENCODER_FAMILIES) == (spec.readout == "cls")
    assert set(architectures()) == set(names._FAMILY_OF_TYPE.values())


def test_every_family_file_is_registered_and_holds_its_own_fast_path() -> None:
    """One file per family under workers/models/arch/: its SPECS are exactly what the registry serves."""
    import importlib
    import pkgutil

    import workers.models.arch as arch_pkg

    files = sorted(m.name for m in pkgutil.iter_modules(arch_pkg.__path__))
    families = [f for f in files if f not in ("base", "registry")]
    assert families == ["bert", "gpt2", "gpt_neox", "llama"]
    declared = {spec.family: spec for f in families
                for spec in importlib.import_module(f"workers.models.arch.{f}").SPECS}
    assert declared == architectures()
    live = {cls: spec.family for spec in declared.values() for cls in spec.live_classes}
    assert live == {"BertForSequenceClassification": "bert", "GPT2ForSequenceClassification": "gpt2",
                    "LlamaForSequenceClassification": "llama", "Qwen2ForSequenceClassification": "llama",
                    "MistralForSequenceClassification": "llama"}


@pytest.mark.parametrize(("model_type", "family"), [("bert", "bert"), ("gpt2", "gpt2"), ("llama", "llama"),
                                                    ("qwen2", "llama"), ("mistral", "llama")])
def test_live_fast_path_by_class(model_type: str, family: str) -> None:
    chosen = live_fast_path(_tiny(model_type))
    assert chosen.family == family and chosen.reason is None
    assert chosen.ops is architectures()[family].live_ops


@pytest.mark.parametrize("model_type", ["gpt_neox", "roberta", "deberta-v2", "qwen3"])
def test_registered_classes_without_a_fast_path_say_so(model_type: str) -> None:
    model = _tiny(model_type)
    get_architecture(model)  # the family is supported ...
    chosen = live_fast_path(model)  # ... but the live session replays only the classes it knows
    assert chosen.ops is None and chosen.family is None
    assert type(model).__name__ in str(chosen.reason) and "full forward" in str(chosen.reason)


def test_an_attention_implementation_without_fast_path_says_so() -> None:
    model = _tiny("llama")
    model.config._attn_implementation = "flash_attention_2"
    chosen = live_fast_path(model)
    assert chosen.ops is None and "flash_attention_2" in str(chosen.reason)


def test_a_family_registers_once() -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_architecture(architectures()["gpt2"])
    with pytest.raises(ValueError, match="live_ops and live_classes"):
        ArchitectureSpec(family="x", model_types=("x",), layers_path="layers", down_proj_path="mlp.down",
                         act_path="mlp.act", readout="last", head=("score",), live_classes=("XModel",))
