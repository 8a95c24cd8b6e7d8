"""Every word of the domain, declared once. Torch-free; both planes import it.

A StrEnum member *is* its string, so rows, JSON and URLs carry plain strings while code gets
exhaustive, typo-proof names. Add a word here, never as a string literal or `Literal[...]` elsewhere.
"""

from __future__ import annotations

from enum import StrEnum


class Word(StrEnum):
    """A domain word: a string everywhere (JSON, SQL, URLs, f-strings), its repr that of the string."""

    def __repr__(self) -> str:
        return repr(self.value)


class Objective(Word):
    """What a preference pair tests."""

    helpful = "helpful"
    harmless = "harmless"


class Regime(Word):
    """What a reward model was trained on."""

    helpful = "helpful"
    harmless = "harmless"
    mixed = "mixed"


OBJECTIVES: tuple[Objective, ...] = tuple(Objective)
REGIMES: tuple[Regime, ...] = tuple(Regime)
REGIME_OBJECTIVES: dict[Regime, tuple[Objective, ...]] = {
    Regime.helpful: (Objective.helpful,),
    Regime.harmless: (Objective.harmless,),
    Regime.mixed: (Objective.helpful, Objective.harmless),
}
"""The objectives a regime's RM is trained and judged on (its 'own' test set)."""

SINGLE_REGIMES: tuple[Regime, ...] = (Regime.helpful, Regime.harmless)


def objectives_of(regime: str) -> tuple[Objective, ...]:
    """The objectives of a regime; an unknown regime (a foreign checkpoint) counts as both."""
    try:
        return REGIME_OBJECTIVES[Regime(regime)]
    except ValueError:
        return OBJECTIVES


class Split(Word):
    train = "train"
    test = "test"
    all = "all"


class Side(Word):
    chosen = "chosen"
    rejected = "rejected"


class DatasetFormat(Word):
    """A dataset file's layout (workers/data/loaders.py); `auto` detects it from the records."""

    auto = "auto"
    canonical = "canonical"
    hh_rlhf = "hh-rlhf"
    rm_bench = "rm-bench"
    rewardbench = "rewardbench"
    trl_implicit = "trl-implicit"
    """TRL standard implicit prompt: `chosen` and `rejected` texts that each hold the prompt."""
    trl_conversational = "trl-conversational"
    """TRL conversational: `prompt`, `chosen` and `rejected` lists of {role, content} messages."""
    trl_conversational_implicit = "trl-conversational-implicit"
    """TRL conversational implicit prompt: `chosen` and `rejected` whole conversations that share a prompt."""


class Device(Word):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Preset(Word):
    """Training recipes (values in workers/training/presets.py)."""

    paper = "paper"
    demo = "demo"
    custom = "custom"
    smoke = "smoke"


class BonMode(Word):
    """How best-of-n items are formed in evaluation (see workers/evaluation)."""

    pairs = "pairs"
    aligned = "aligned"
    full = "full"


class HookPoint(Word):
    """Where an MLP neuron is read: the input of the down projection (default) or the activation's output."""

    down_proj_input = "down_proj_input"
    act_output = "act_output"


class Stat(Word):
    """Neuron statistics of METHOD.md §3: A mean activation, C squared change vs base, P fraction positive."""

    A = "A"
    C = "C"
    P = "P"


STAT_COLUMN: dict[Stat, str] = {Stat.A: "mean", Stat.C: "mean_sq_change", Stat.P: "frac_pos"}
"""The `neuron_stats` column each statistic is computed from."""


class Scope(Word):
    """Which objectives' data a neuron score averages over."""

    own = "own"
    helpful = "helpful"
    harmless = "harmless"
    all = "all"


class SharedMode(Word):
    """How 'shared' neurons are defined: H ∩ R, or the study's per-layer rule."""

    intersection = "intersection"
    per_layer = "per_layer"


class OverlapPart(Word):
    """The named neuron groups of the overlap analysis."""

    helpful = "helpful"
    harmless = "harmless"
    mixed = "mixed"
    helpful_specific = "helpful_specific"
    harmless_specific = "harmless_specific"
    shared = "shared"


class AblationMode(Word):
    """What an ablated neuron is set to: 0, its mean activation, or its value times a factor."""

    zero = "zero"
    mean = "mean"
    scale = "scale"


class Experiment(Word):
    """Ablation experiments of METHOD.md §4 (A dose-response, B per subset, C specific vs shared) or one set."""

    single = "single"
    A = "A"
    B = "B"
    C = "C"


class SelectionMethod(Word):
    """What top-p% neurons are ranked by in experiment A."""

    magnitude = "magnitude"
    change = "change"


class LivePath(Word):
    """Live toggle computation: cached prefix (fast) or a full forward (reference)."""

    fast = "fast"
    full = "full"


class JobKind(Word):
    score = "score"
    train = "train"
    evaluate = "evaluate"
    capture = "capture"
    ablate = "ablate"


class JobStatus(Word):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


ACTIVE_STATUSES: tuple[JobStatus, ...] = (JobStatus.queued, JobStatus.running)
FINISHED_STATUSES: tuple[JobStatus, ...] = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class ExecutorName(Word):
    local = "local"
    ray = "ray"
