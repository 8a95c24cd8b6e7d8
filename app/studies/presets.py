"""Study presets: how big a whole study is (model, seeds, data sizes, ablation grids) for each purpose.

`smoke` is for tests (a tiny random model, under two minutes), `demo` is the best study that fits in about
fifteen minutes on two CPU cores (chosen by `python -m bench train`, see bench/results/train.md), `paper`
is METHOD.md §1 for a real model on a GPU. Torch-free: the control plane shows these values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from workers.contract.vocab import Preset


@dataclass(frozen=True)
class StudyPreset:
    """Everything a study runs with besides its model override and seeds."""

    name: str
    description: str
    model: str
    train_preset: Preset
    seeds: tuple[int, ...]
    train_limit: int | None  # training pairs per objective (None: the training preset's own cap)
    eval_limit: int | None  # test pairs per objective (None: all)
    capture_limit: int | None  # training pairs per objective streamed through each RM for neuron statistics
    ablate_limit: int | None  # test pairs per objective probed by experiments A-C
    max_length: int
    dose_percents: tuple[float, ...]
    random_seeds: tuple[int, ...]
    expected_minutes: float  # measured on this machine's class (2 cores) or stated for a GPU
    hardware: str = "2 CPU cores"
    train_overrides: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["train_preset"] = str(self.train_preset)
        return out


SMOKE = StudyPreset(
    name="smoke", description="a tiny random model on a few pairs: checks the pipeline end to end, not the science",
    model="tiny-bert", train_preset=Preset.smoke, seeds=(0,), train_limit=24, eval_limit=12, capture_limit=12,
    ablate_limit=8, max_length=64, dose_percents=(0.0, 10.0, 100.0), random_seeds=(0,), expected_minutes=1.5,
)

DEMO = StudyPreset(
    name="demo", description="MiniLM-L6 on the bundled HH-RLHF and RM-Bench pairs, sized for two CPU cores",
    model="minilm-l6", train_preset=Preset.demo, seeds=(0,), train_limit=None, eval_limit=None, capture_limit=128,
    ablate_limit=64, max_length=128, dose_percents=(0.0, 10.0, 20.0, 30.0, 100.0), random_seeds=(0, 1),
    expected_minutes=13.0,  # 12.7 min measured on an idle 2-core machine (closing note of issue 11)
)

PAPER = StudyPreset(
    name="paper", description="METHOD.md §1: three seeds, full data, 1024 tokens; for SmolLM2 or any HF id on a GPU",
    model="smollm2-135m", train_preset=Preset.paper, seeds=(0, 1, 2), train_limit=None, eval_limit=None,
    capture_limit=None, ablate_limit=None, max_length=1024,
    dose_percents=(0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 15.0, 20.0, 25.0, 30.0, 100.0), random_seeds=(0, 1, 2),
    expected_minutes=60.0, hardware="one GPU",
)

STUDY_PRESETS: dict[str, StudyPreset] = {p.name: p for p in (SMOKE, DEMO, PAPER)}
