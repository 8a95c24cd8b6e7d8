"""Export a checkpoint as a directory that plain `transformers` loads and scores exactly as the product does.

`python -m workers.export --store URL --checkpoint ID [--key KEY] DIR` (what `tension export` runs) or
`python -m workers.export --checkpoint-dir PATH DIR`. The directory holds:

- the model (`config.json` with `pad_token_id`, which decoders' heads need to find the last real token;
  weights in float32) and the tokenizer (right padding, left truncation, and for decoders no
  `token_type_ids`, all recorded in tokenizer_config.json), so `AutoModelForSequenceClassification` and
  `AutoTokenizer.from_pretrained(DIR)` need no further settings;
- `README.md`: how the product scores (the text format, the truncation, the reward), with code;
- `tension_export.json`: base model, regime, seed, the training record, and the check made before
  publishing.

The export is refused (ExportError) when DIR exists and is not empty, or the checkpoint is missing. It is
written beside DIR and moved into place once complete, after plain `transformers` has scored a few
preference pairs (padded batch, different lengths, one longer than max_length) like the product did.
Never imports the control plane: the CLI runs this module in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workers.data.text import format_text

__all__ = ["EXPORT_META", "VERIFY_ATOL", "ExportError", "export_checkpoint", "main", "verify_texts"]

EXPORT_META = "tension_export.json"
#: Largest |product reward − plain-transformers reward| an export may show on its check texts.
VERIFY_ATOL = 1e-4
#: The product's scoring jobs (score, evaluate) default to 128 tokens a text.
DEFAULT_SCORE_MAX_LENGTH = 128


class ExportError(Exception):
    """The export is refused: the target is not empty, the checkpoint is missing, or a check failed."""


def verify_texts() -> list[str]:
    """Preference pairs (chosen, rejected, ...) of different lengths, formatted as the product formats them;
    the last chosen text is about 400 tokens, so a shorter max_length (the demo preset's 128) checks left
    truncation too."""
    pairs = [
        ("How do I bake bread?", "Mix flour, water, salt and yeast; knead, let it rise, bake.", "No idea."),
        ("hi", "Hello! How can I help?", "What?"),
        ("\n\nHuman: Tell me a story.\n\nAssistant: About what?\n\nHuman: A robot.",
         "Once upon a time there was a small robot. " * 40, "No."),
    ]
    return [format_text(p, r) for p, c, rj in pairs for r in (c, rj)]


def _check_target(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not an empty directory; choose a new one")


def _readme(info: dict[str, Any]) -> str:
    n = info["max_length"]
    if info["decoder"]:
        inputs = "No `token_type_ids`: the saved tokenizer does not emit them (GPT-2 would add their embedding)."
        readout = "the last non-pad token (`config.pad_token_id`)"
    else:
        inputs = "`token_type_ids` are all zero, the model's default."
        readout = "the pooled first token"

    def cell(value: Any) -> str:
        return "—" if value is None else str(value)

    return f"""# Reward model {info["checkpoint"] or info["base_model"]}

Exported by RM Tension Explorer (`tension export`): a sequence-classification model with one output,
the reward.

| | |
|---|---|
| base model | `{info["base_model"]}` ({info["family"]} family, {info["architecture"]}) |
| regime | {cell(info["regime"])} |
| seed | {cell(info["seed"])} |
| preset | {cell(info["preset"])} |
| max_length | {n} tokens ({info["max_length_from"]}); the product's score jobs default to {DEFAULT_SCORE_MAX_LENGTH} |

## Scoring as the product does

1. **Text**: plain concatenation, no chat template. A prompt that is an HH-RLHF dialogue (it starts with
   `"\\n\\nHuman:"`) is used as is; any other prompt becomes `"\\n\\nHuman: " + prompt`. The text is
   `prompt + "\\n\\nAssistant: " + response`.
2. **Tokens**: this directory's tokenizer with its defaults (special tokens added as it adds them),
   truncated from the LEFT (saved as `truncation_side`) to `max_length` tokens so the final turn
   survives, padded on the right.
   {inputs}
3. **Reward**: `logits[:, 0]`, read by the model's head at {readout}.
   The weights are float32; the product scores in float32 on CPU and in bfloat16 on CUDA, so its GPU
   rewards differ slightly.

```python
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

tok = AutoTokenizer.from_pretrained("THIS_DIR")
model = AutoModelForSequenceClassification.from_pretrained("THIS_DIR").eval()

def text(prompt, response):
    prompt = prompt if prompt.startswith("\\n\\nHuman:") else "\\n\\nHuman: " + prompt
    return prompt + "\\n\\nAssistant: " + response

texts = [text("How do I bake bread?", "Knead, let it rise, bake."), text("How do I bake bread?", "No idea.")]
enc = tok(texts, padding=True, truncation=True, max_length={n}, return_tensors="pt")
with torch.no_grad():
    rewards = model(**enc).logits[:, 0]
```

Checked at export: on {info["verified"]["n_texts"]} texts (a padded batch, one text truncated) this code's
rewards equal the product's to {info["verified"]["max_abs_diff"]:.1e} (at most {VERIFY_ATOL:g} is accepted).
"""


def _plain_rewards(directory: Path, texts: Sequence[str], max_length: int) -> tuple[list[float], list[str]]:
    """Rewards as a user of plain `transformers` gets them from `directory`, and the tokenizer's input names."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(directory))
    model = AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    enc = tok(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**enc).logits
    return [float(v) for v in logits[:, 0].float()], list(enc.keys())


def export_checkpoint(checkpoint_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
                      checkpoint_id: str | None = None) -> dict[str, Any]:
    """Write the checkpoint saved in `checkpoint_dir` to `out_dir` (see the module doc); returns the metadata."""
    import numpy as np

    from workers.models.registry import load_reward_model, read_checkpoint_meta
    from workers.models.scoring import effective_max_length, score_texts

    out = Path(out_dir).expanduser().resolve()
    _check_target(out)
    ckpt = Path(checkpoint_dir)
    if not (ckpt / "config.json").is_file():
        raise ExportError(f"no saved model in checkpoint directory {ckpt}")
    meta = read_checkpoint_meta(ckpt)
    loaded = load_reward_model(str(meta.get("base_model") or ""), checkpoint_dir=ckpt, device="cpu")
    settings = meta.get("settings") or {}
    max_length = effective_max_length(loaded, int(settings.get("max_length") or DEFAULT_SCORE_MAX_LENGTH))

    out.parent.mkdir(parents=True, exist_ok=True)
    staged = out.parent / f".{out.name}.{uuid.uuid4().hex[:8]}.export"
    try:
        loaded.model.save_pretrained(staged)
        loaded.tokenizer.save_pretrained(staged)
        texts = verify_texts()
        product = score_texts(loaded, texts, max_length=max_length)
        plain, input_names = _plain_rewards(staged, texts, max_length)
        diff = float(np.max(np.abs(np.asarray(plain, dtype=np.float64) - product)))
        if not diff <= VERIFY_ATOL:
            raise ExportError(f"plain transformers scores the export differently from the product "
                              f"(max |difference| {diff:.3g} > {VERIFY_ATOL:g}); nothing was written")
        info: dict[str, Any] = {
            "checkpoint": checkpoint_id or meta.get("checkpoint"),
            "base_model": loaded.name,
            "family": loaded.arch.family,
            "architecture": type(loaded.model).__name__,
            "decoder": loaded.arch.is_decoder,
            "regime": meta.get("regime"),
            "seed": meta.get("seed"),
            "preset": meta.get("preset"),
            "max_length": max_length,
            "max_length_from": "training settings" if settings.get("max_length") else "score jobs' default",
            "text_format": {"chat_template": False,
                            "prompt": "as is if it starts with '\\n\\nHuman:', else '\\n\\nHuman: ' + prompt",
                            "text": "prompt + '\\n\\nAssistant: ' + response"},
            "tokenizer": {"truncation_side": "left", "padding_side": "right", "input_names": input_names,
                          "pad_token_id": loaded.tokenizer.pad_token_id},
            "reward": "logits[:, 0]",
            "dtype": "float32",
            "verified": {"n_texts": len(texts), "max_abs_diff": diff, "atol": VERIFY_ATOL},
            "training": meta,
        }
        (staged / EXPORT_META).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        (staged / "README.md").write_text(_readme(info))
        _check_target(out)
        if out.is_dir():
            out.rmdir()
        os.replace(staged, out)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return info


def _resolve_checkpoint(args: argparse.Namespace) -> Path:
    if args.checkpoint_dir:
        return Path(args.checkpoint_dir)
    from workers.contract.artifacts import checkpoint_key
    from workers.storage import ArtifactStore

    try:
        return ArtifactStore(args.store).local_dir(args.key or checkpoint_key(args.checkpoint))
    except FileNotFoundError:
        raise ExportError(f"checkpoint {args.checkpoint!r} is not in the artifact store {args.store}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Exit 0 with the metadata as JSON on stdout; 2 when refused (message on stderr); 1 on a crash."""
    parser = argparse.ArgumentParser(prog="python -m workers.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", help="directory to write (must not exist, or be empty)")
    parser.add_argument("--checkpoint-dir", help="a checkpoint directory on this machine")
    parser.add_argument("--store", help="artifact store URL holding --checkpoint")
    parser.add_argument("--checkpoint", help="checkpoint id in --store")
    parser.add_argument("--key", help="the checkpoint's key in --store (default: checkpoints/ID)")
    args = parser.parse_args(argv)
    if bool(args.checkpoint_dir) == bool(args.checkpoint and args.store):
        parser.error("give --checkpoint-dir, or --store and --checkpoint")
    try:
        _check_target(Path(args.out_dir).expanduser())  # before loading anything
        info = export_checkpoint(_resolve_checkpoint(args), args.out_dir, checkpoint_id=args.checkpoint)
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps({k: info[k] for k in info if k != "training"}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
