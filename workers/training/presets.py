"""Training presets: the paper's recipe, a CPU-sized demo, and a custom starting point.

A preset fixes every knob of a reward-training run; the optional fields of `TrainParams`
override it one by one, so a job records exactly which settings produced its checkpoint.
Torch-free on purpose: the control plane may show these values without loading a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from workers.contract.jobs import TrainParams

Truncation = Literal["left", "drop"]


@dataclass(frozen=True)
class TrainSettings:
    """Every setting of one reward-training run, after the preset and the overrides are merged."""

    preset: str
    learning_rate: float
    epochs: float
    batch_size: int
    max_length: int
    truncation: Truncation  # 'left': keep the final turn; 'drop': drop pairs longer than max_length
    freeze_layers: int  # >0 freezes the embeddings and this many of the lowest transformer layers
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    eval_fraction: float = 0.1
    evals_per_epoch: int = 1
    eval_on_start: bool = True
    max_pairs_per_objective: int | None = None  # None: every pair the dataset reference yields
    append_eos: bool = True
    bf16: bool = True  # autocast on a GPU that supports it
    cpu_bf16: bool = False  # also autocast on a CPU with native bf16 (AVX512-BF16/AMX); off: fp32 on CPUs
    gradient_checkpointing: bool = False
    eval_batch_size: int = 32
    logging_steps: int | None = None  # None: about 50 log points per run

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# METHOD.md §1: TRL RewardTrainer, lr 1e-4 linear decay, no warm-up, weight decay 0, AdamW, 2 epochs,
# batch 16, bf16, max length 1024 with longer pairs dropped, EOS appended, best checkpoint by eval loss.
PAPER = TrainSettings(
    preset="paper", learning_rate=1e-4, epochs=2.0, batch_size=16, max_length=1024, truncation="drop",
    freeze_layers=0, evals_per_epoch=4, append_eos=True, bf16=True, gradient_checkpointing=True,
)

# Sized for 2 CPU cores and MiniLM-L6 (~22M parameters) by measurement (`python -m bench train`, table in
# bench/results/train.md): 128 tokens with left truncation (most HH-RLHF dialogues exceed 128 tokens, dropping
# them would leave almost nothing), up to 1,300 pairs per objective (every helpful pair of the bundled data:
# at 300 the helpful RM stayed below the longer-wins baseline on helpful subsets), one epoch at lr 2e-4, no
# frozen layers (freezing saved ~20% of a step but made the lowest layers' neurons identical across RMs),
# two evaluations and none at step 0 (evaluation was 19% of a job), and bf16 autocast on CPUs with native
# bf16, which trains ~1.3x faster here at the same accuracy within noise.
DEMO = TrainSettings(
    preset="demo", learning_rate=2e-4, epochs=1.0, batch_size=16, max_length=128, truncation="left",
    freeze_layers=0, evals_per_epoch=2, eval_on_start=False, max_pairs_per_objective=1000, append_eos=False,
    bf16=True, cpu_bf16=True, gradient_checkpointing=False,
)

# 'custom' starts from the paper's optimisation recipe but truncates instead of dropping and skips
# gradient checkpointing, so a run sized only by its overrides also works on a CPU.
CUSTOM = replace(PAPER, preset="custom", truncation="left", gradient_checkpointing=False, evals_per_epoch=2)

# For tests of the whole pipeline on a tiny random model: one short epoch, one evaluation at the end.
SMOKE = TrainSettings(
    preset="smoke", learning_rate=1e-3, epochs=1.0, batch_size=8, max_length=64, truncation="left",
    freeze_layers=0, evals_per_epoch=1, eval_on_start=False, max_pairs_per_objective=24, append_eos=False,
    bf16=False, eval_batch_size=16,
)

PRESETS: dict[str, TrainSettings] = {"paper": PAPER, "demo": DEMO, "custom": CUSTOM, "smoke": SMOKE}


def resolve_settings(params: TrainParams) -> TrainSettings:
    """The preset named by `params`, with each `TrainParams` field that is set taking precedence."""
    base = PRESETS[params.preset]
    overrides: dict[str, Any] = {
        "learning_rate": params.learning_rate,
        "epochs": params.epochs,
        "batch_size": params.batch_size,
        "max_length": params.max_length,
        "freeze_layers": params.freeze_layers,
    }
    settings = replace(base, eval_fraction=params.eval_fraction,
                       **{k: v for k, v in overrides.items() if v is not None})
    validate_settings(settings)
    return settings


def validate_settings(s: TrainSettings) -> None:
    """Fail before any model is loaded, with a message a user can act on."""
    problems = []
    if not s.learning_rate > 0:
        problems.append(f"learning_rate must be > 0, got {s.learning_rate}")
    if not s.epochs > 0:
        problems.append(f"epochs must be > 0, got {s.epochs}")
    if s.batch_size < 1:
        problems.append(f"batch_size must be >= 1, got {s.batch_size}")
    if s.max_length < 8:
        problems.append(f"max_length must be >= 8, got {s.max_length}")
    if s.freeze_layers < 0:
        problems.append(f"freeze_layers must be >= 0, got {s.freeze_layers}")
    if not 0.0 <= s.eval_fraction < 1.0:
        problems.append(f"eval_fraction must be in [0, 1), got {s.eval_fraction}")
    if s.truncation not in ("left", "drop"):
        problems.append(f"truncation must be 'left' or 'drop', got {s.truncation!r}")
    if problems:
        raise ValueError("invalid training settings: " + "; ".join(problems))
