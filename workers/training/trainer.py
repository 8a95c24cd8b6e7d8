"""Bradley-Terry reward training, L = -mean log σ(r_chosen - r_rejected), on one regime's pairs.

Built on TRL's `RewardTrainer` (trl 1.16), the trainer the paper used, because it can honour both
things this product needs beyond the paper's recipe:

- left truncation: TRL only *drops* pairs longer than `max_length` (its `_prepare_dataset` filter),
  but it skips its own tokenisation when the dataset already has `chosen_ids`/`rejected_ids`. So we
  tokenise here (left truncation keeps the final assistant turn, which is what the pair disagrees
  on) and pass `max_length=None` so TRL's filter is off; the paper's drop rule is applied here too.
- length-bucketed batches: `train_sampling_strategy="group_by_length"` with a precomputed `length`
  column (max of the chosen and rejected lengths, since both halves pad together). TRL's signature
  columns would strip `length` before the sampler sees it, hence `remove_unused_columns=False`; its
  collator ignores extra keys.

Done beside TRL rather than through it: the best weights by eval loss are kept in memory by a
callback (no checkpoint directories written and re-read mid-run; the step-0 evaluation is a reference
point, never the kept model); the eval split is made here so it is prompt-disjoint from the training
pairs; the model trains in fp32 (bf16 autocast on a GPU, and on a CPU with native bf16 when the
preset asks) even when the registry loaded bf16 weights.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import torch
import torch.nn as nn
from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback
from trl import RewardConfig, RewardTrainer

from workers.contract.vocab import REGIME_OBJECTIVES, REGIMES, Regime, objectives_of
from workers.data.text import pair_texts, tokenize_left
from workers.models.scoring import effective_max_length
from workers.training.presets import TrainSettings

if TYPE_CHECKING:
    from workers.data.schema import PreferencePair
    from workers.models.registry import LoadedModel


class ProgressLike(Protocol):
    def update(self, fraction: float, message: str = "", force: bool = False, **metrics: Any) -> None: ...


@dataclass
class EncodedPairs:
    """Token ids of each kept pair, plus how many pairs the drop rule removed."""

    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    kept: list[int]  # indices into the input pairs
    n_dropped: int = 0

    def __len__(self) -> int:
        return len(self.kept)


@dataclass
class TrainResult:
    """What a run produced: the per-step history and the metrics of the kept (best) weights."""

    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    n_train: int
    n_eval: int
    settings: dict[str, Any] = field(default_factory=dict)


def select_regime(pairs: Sequence[PreferencePair], regime: str) -> list[PreferencePair]:
    """The pairs a regime trains on: one objective's pairs, or the union for 'mixed'."""
    if regime not in REGIMES:
        raise ValueError(f"unknown regime {regime!r}; expected one of {sorted(REGIMES)}")
    wanted = REGIME_OBJECTIVES[Regime(regime)]
    return [p for p in pairs if p.objective in wanted]


def _group_keys(pairs: Sequence[PreferencePair]) -> list[int]:
    """Union-find over item ids and prompts: pairs sharing either end up in one group."""
    parent = list(range(len(pairs)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_seen: dict[str, int] = {}
    for i, p in enumerate(pairs):
        for key in (f"item:{p.item_id}" if p.item_id else None, "prompt:" + " ".join(p.prompt.split())):
            if key is None:
                continue
            if key in first_seen:
                a, b = find(i), find(first_seen[key])
                if a != b:
                    parent[max(a, b)] = min(a, b)
            else:
                first_seen[key] = i
    return [find(i) for i in range(len(pairs))]


def _rank(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def split_train_eval(pairs: Sequence[PreferencePair], eval_fraction: float
                     ) -> tuple[list[PreferencePair], list[PreferencePair]]:
    """Hold out about `eval_fraction` of the pairs, per objective, with no prompt on both sides.

    Groups are ranked by a hash of their contents, not by the run's seed, so every seed and every
    regime trained from the same data sees the same held-out prompts (mixed's eval set is the union
    of the single-objective ones).
    """
    if eval_fraction <= 0 or len(pairs) < 2:
        return list(pairs), []
    roots = _group_keys(pairs)
    groups: dict[int, list[int]] = {}
    for i, root in enumerate(roots):
        groups.setdefault(root, []).append(i)
    if len(groups) < 2:
        return list(pairs), []
    by_objective: dict[str, list[list[int]]] = {}
    for members in groups.values():
        objectives = sorted(pairs[i].objective for i in members)
        majority = max(set(objectives), key=lambda o: (objectives.count(o), o))
        by_objective.setdefault(majority, []).append(members)
    held: set[int] = set()
    for members_list in by_objective.values():
        n_obj = sum(len(m) for m in members_list)
        target = max(1, round(eval_fraction * n_obj))
        ranked = sorted(members_list, key=lambda m: min(_rank(f"{pairs[i].item_id}|{pairs[i].prompt}")
                                                        for i in m))
        taken = 0
        for members in ranked[:-1]:  # always leave one group for training
            if taken >= target:
                break
            held.update(members)
            taken += len(members)
    train = [p for i, p in enumerate(pairs) if i not in held]
    evals = [p for i, p in enumerate(pairs) if i in held]
    return train, evals


def encode_pairs(tokenizer: Any, pairs: Sequence[PreferencePair], settings: TrainSettings) -> EncodedPairs:
    """Token ids for each pair's chosen and rejected text, truncated on the left or dropped if too long."""
    chosen = [pair_texts(p)[0] for p in pairs]
    rejected = [pair_texts(p)[1] for p in pairs]
    eos = getattr(tokenizer, "eos_token_id", None) if settings.append_eos else None
    if settings.truncation == "drop":  # the paper's rule: tokenise whole, drop what does not fit
        c_ids = tokenizer(chosen)["input_ids"] if pairs else []
        r_ids = tokenizer(rejected)["input_ids"] if pairs else []
    else:  # leave room for the EOS appended below
        room = settings.max_length - (1 if eos is not None else 0)
        c_ids = tokenize_left(tokenizer, chosen, room, padding=False)["input_ids"] if pairs else []
        r_ids = tokenize_left(tokenizer, rejected, room, padding=False)["input_ids"] if pairs else []
    out = EncodedPairs([], [], [])
    for i, (c, r) in enumerate(zip(c_ids, r_ids, strict=True)):
        c, r = list(c), list(r)
        if eos is not None:
            c = c if c and c[-1] == eos else [*c, eos]
            r = r if r and r[-1] == eos else [*r, eos]
        if len(c) > settings.max_length or len(r) > settings.max_length:
            out.n_dropped += 1
            continue
        out.chosen_ids.append(c)
        out.rejected_ids.append(r)
        out.kept.append(i)
    return out


def _layer_list(model: Any) -> Any:
    """The transformer blocks: the longest `nn.ModuleList` in the backbone (h, layers, encoder.layer)."""
    backbone = getattr(model, "base_model", model)
    best = None
    for _, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and (best is None or len(module) > len(best)):
            best = module
    if best is None:
        raise ValueError(f"cannot find the transformer layers of {type(model).__name__}")
    return best


def freeze_lower_layers(model: Any, n_layers: int, layers: Sequence[nn.Module] | None = None
                        ) -> list[nn.Parameter]:
    """Freeze the embeddings and the lowest `n_layers` blocks; returns the parameters it froze.

    Lower layers hold general features; freezing them saves most of the backward pass on a CPU.
    `layers` are the transformer blocks (the architecture registry's list), found here if not given.
    """
    if n_layers <= 0:
        return []
    backbone = getattr(model, "base_model", model)
    layers = list(layers) if layers is not None else list(_layer_list(model))
    frozen: list[Any] = []
    for name, child in backbone.named_children():
        if "emb" in name.lower() or name in ("wte", "wpe") or isinstance(child, nn.Embedding):
            frozen += list(child.parameters())
    for block in list(layers)[: min(n_layers, len(layers))]:
        frozen += list(block.parameters())
    frozen = [p for p in frozen if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    return frozen


def _as_dataset(enc: EncodedPairs) -> Any:
    """A `datasets.Dataset` TRL accepts as already tokenised, with the length the sampler groups by."""
    from datasets import Dataset

    return Dataset.from_dict({
        "chosen_ids": enc.chosen_ids,
        "rejected_ids": enc.rejected_ids,
        "length": [max(len(c), len(r)) for c, r in zip(enc.chosen_ids, enc.rejected_ids, strict=True)],
    })


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX512-BF16 or AMX), where bf16 autocast is faster.

    Elsewhere bf16 is emulated and slower than fp32, so the flag stays off there.
    """
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


def _device_flags(loaded: LoadedModel, cpu_bf16: bool = False) -> tuple[bool, bool]:
    """(use_cpu, bf16): bf16 autocast on a GPU that has it, and on a CPU only when asked and native."""
    on_cpu = not str(getattr(loaded, "device", "cpu")).startswith("cuda")
    if on_cpu:
        return True, cpu_bf16 and cpu_has_native_bf16()
    return False, torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _reward_config(settings: TrainSettings, *, seed: int, output_dir: str, max_steps: int,
                   eval_every: int | None, use_cpu: bool, bf16: bool) -> RewardConfig:
    """The paper's TRL recipe, with this module's tokenisation, sampling and checkpoint policy."""
    has_eval = eval_every is not None
    return RewardConfig(
        output_dir=output_dir, seed=seed, optim="adamw_torch_fused", learning_rate=settings.learning_rate,
        lr_scheduler_type=settings.lr_scheduler, warmup_steps=settings.warmup_ratio,
        weight_decay=settings.weight_decay, num_train_epochs=settings.epochs, max_steps=max_steps,
        per_device_train_batch_size=settings.batch_size, per_device_eval_batch_size=settings.eval_batch_size,
        gradient_accumulation_steps=1, activation_checkpointing=settings.gradient_checkpointing,
        use_cpu=use_cpu, bf16=bf16, fp16=False, disable_dropout=True,
        # Tokenised and truncated here; TRL's drop filter stays off, the length column feeds the sampler.
        max_length=None, remove_unused_columns=False, dataloader_num_workers=0,
        train_sampling_strategy="group_by_length", length_column_name="length",
        eval_strategy="steps" if has_eval else "no", eval_steps=eval_every,
        eval_on_start=has_eval and settings.eval_on_start,
        save_strategy="no",  # the best weights are kept in memory by _Recorder
        logging_strategy="steps", logging_steps=settings.logging_steps or max(1, max_steps // 50),
        report_to="none", disable_tqdm=True,
    )


def train_reward_model(loaded: LoadedModel, pairs: Sequence[PreferencePair], settings: TrainSettings, *,
                       regime: str = "mixed", seed: int = 0, progress: ProgressLike | None = None,
                       work_dir: str | None = None) -> TrainResult:
    """Train `loaded.model` in place on `regime`'s pairs; it ends holding the best weights by eval loss.

    `pairs` may hold both objectives; the regime picks its own and the eval split is carved from them.
    `work_dir` only hosts the trainer's (empty) output directory.
    """
    started = time.time()
    regime_pairs = select_regime(pairs, regime)
    if not regime_pairs:
        raise ValueError(f"no pairs for regime {regime!r} (objectives {list(objectives_of(regime))})")
    train_pairs, eval_pairs = split_train_eval(regime_pairs, settings.eval_fraction)
    tok = loaded.tokenizer
    # Never beyond the model's position limit (absolute position embeddings crash there).
    settings = replace(settings, max_length=effective_max_length(loaded, settings.max_length))
    train_enc = encode_pairs(tok, train_pairs, settings)
    eval_enc = encode_pairs(tok, eval_pairs, settings)
    if len(train_enc) == 0:
        raise ValueError(f"all {len(train_pairs)} training pairs are longer than "
                         f"max_length={settings.max_length}")

    model: Any = loaded.model
    arch = getattr(loaded, "arch", None)
    blocks = arch.layers(model) if arch is not None else None
    frozen = freeze_lower_layers(model, settings.freeze_layers, blocks)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    use_cpu, bf16 = _device_flags(loaded, cpu_bf16=settings.cpu_bf16)
    bf16 = bf16 and settings.bf16
    # The registry loads bf16 weights on a GPU; AdamW needs fp32 master weights (bf16 rounds away most
    # lr-1e-4 updates), so train in fp32 under bf16 autocast and cast back to the loaded dtype at the end.
    loaded_dtype = next(model.parameters()).dtype
    model.to(torch.float32)
    steps_per_epoch = math.ceil(len(train_enc) / settings.batch_size)
    max_steps = max(1, math.ceil(steps_per_epoch * settings.epochs))
    eval_every = max(1, math.ceil(steps_per_epoch / max(1, settings.evals_per_epoch))) if eval_enc else None
    recorder = _Recorder(progress, max_steps, regime)
    try:
        with tempfile.TemporaryDirectory(prefix="rm-train-", dir=work_dir) as tmp:
            args = _reward_config(settings, seed=seed, output_dir=tmp, max_steps=max_steps,
                                  eval_every=eval_every, use_cpu=use_cpu, bf16=bf16)
            trainer = RewardTrainer(
                model=model, args=args, train_dataset=_as_dataset(train_enc),
                eval_dataset=_as_dataset(eval_enc) if eval_every else None, processing_class=tok,
                callbacks=[recorder],
            )
            trainer.remove_callback(PrinterCallback)  # progress goes through `progress`, not stdout
            trainer.train()
            if eval_every and recorder.last_eval_step != trainer.state.global_step:
                trainer.evaluate()  # so the end of training is a candidate for the kept weights too
            steps = trainer.state.global_step
            del trainer  # drop the optimizer state before the caller saves or scores
        recorder.restore_best(model)
    finally:
        # Mixed precision wraps the model's forward in autocast (accelerate); unwrap it, so whatever scores
        # this model next in the same process does so in its own precision, not silently in bf16.
        from accelerate.utils import extract_model_from_parallel

        extract_model_from_parallel(model, keep_fp32_wrapper=False)
        for p in frozen:
            p.requires_grad_(True)
        model.to(loaded_dtype)
        model.eval()
        if not use_cpu:
            torch.cuda.empty_cache()
    history = recorder.rows()
    best = recorder.best_row or {}
    last_train: dict[str, Any] = next((r for r in reversed(history) if r["train_loss"] is not None), {})
    metrics = {
        "final_eval_loss": best.get("eval_loss"),
        "final_eval_acc": best.get("eval_acc"),
        "best_step": best.get("step", steps),
        "final_train_loss": last_train.get("train_loss"),
        "final_train_acc": last_train.get("train_acc"),
        "steps": steps,
        "n_dropped_train": train_enc.n_dropped,
        "n_dropped_eval": eval_enc.n_dropped,
        "n_frozen_params": sum(p.numel() for p in frozen),
        "n_trainable_params": n_trainable,
        "bf16": bf16,
        "max_length": settings.max_length,
        "wall_s": time.time() - started,
    }
    if progress is not None:
        progress.update(1.0, f"{regime}: trained {metrics['steps']} steps", force=True,
                        eval_loss=metrics["final_eval_loss"], eval_acc=metrics["final_eval_acc"])
    return TrainResult(history=history, metrics=metrics, n_train=len(train_enc), n_eval=len(eval_enc),
                       settings=settings.as_dict())


class _Recorder(TrainerCallback):
    """Turns TRL's logs into history rows, streams progress, and keeps the best weights by eval loss."""

    def __init__(self, progress: ProgressLike | None, max_steps: int, regime: str) -> None:
        self.progress = progress
        self.max_steps = max_steps
        self.regime = regime
        self._rows: dict[int, dict[str, Any]] = {}
        self.best_row: dict[str, Any] | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_eval_step = -1

    def _row(self, step: int, epoch: float | None) -> dict[str, Any]:
        row = self._rows.setdefault(step, {"step": step, "epoch": None, "train_loss": None, "train_acc": None,
                                           "eval_loss": None, "eval_acc": None})
        if epoch is not None:
            row["epoch"] = float(epoch)
        return row

    def _report(self, step: int, message: str, force: bool = False, **metrics: Any) -> None:
        if self.progress is not None:
            self.progress.update(step / self.max_steps, f"{self.regime}: {message}", force, **metrics)

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._report(state.global_step, f"step {state.global_step}/{self.max_steps}")

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, float] | None = None,
               **kw: Any) -> None:
        if not logs or "loss" not in logs or "eval_loss" in logs:
            return  # eval logs arrive through on_evaluate; the end-of-run summary has no "loss"
        row = self._row(state.global_step, state.epoch)
        row["train_loss"] = float(logs["loss"])
        row["train_acc"] = float(logs["accuracy"]) if "accuracy" in logs else None
        message = f"step {state.global_step}/{self.max_steps} loss {row['train_loss']:.4f}"
        self._report(state.global_step, message, loss=row["train_loss"], acc=row["train_acc"])

    def on_evaluate(self, args: Any, state: Any, control: Any, metrics: dict[str, float] | None = None,
                    model: Any = None, **kw: Any) -> None:
        if not metrics or "eval_loss" not in metrics:
            return
        step = self.last_eval_step = state.global_step
        row = self._row(step, state.epoch or 0.0)
        row["eval_loss"] = float(metrics["eval_loss"])
        row["eval_acc"] = float(metrics["eval_accuracy"]) if "eval_accuracy" in metrics else None
        # The untrained model (step 0) is a reference point, not a candidate for the kept weights.
        improved = self.best_row is None or row["eval_loss"] < self.best_row["eval_loss"]
        if step > 0 and model is not None and improved:
            self.best_row = dict(row)
            self.best_state = {n: p.detach().to("cpu", copy=True)
                               for n, p in model.named_parameters() if p.requires_grad}
        self._report(step, f"eval at step {step}: loss {row['eval_loss']:.4f}", force=True,
                     eval_loss=row["eval_loss"], eval_acc=row["eval_acc"])

    def restore_best(self, model: Any) -> None:
        """Copy the best weights back into `model` (only the trained ones were kept)."""
        if self.best_state is None:
            return
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in self.best_state.items():
                params[name].copy_(value.to(params[name].device, params[name].dtype))

    def rows(self) -> list[dict[str, Any]]:
        return [dict(self._rows[s]) for s in sorted(self._rows)]
