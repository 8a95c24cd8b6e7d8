"""Recorded live toggles, written straight through the service (`app.ablation.records.record_toggle`).

No model runs: each record says what a live toggle's estimate and exact rounds would have produced. `SETS` is a
small world of finished toggles over two checkpoints (sizes in every bucket, one- and several-layer sets, one
set named with hostile text) beside toggles that must be left out; tests compute every expected number from
`SETS` themselves.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from app.ablation.record_schemas import ToggleRecordIn, ToggleState
from app.ablation.records import record_toggle
from app.core.db import Database
from workers.contract.vocab import AblationMode, Objective

CK_A, CK_B = "a" * 64, "b" * 64
EVIL = "<script>alert(1)</script> shared H ∩ R & \"quoted\""
N_PAIRS = 64


@dataclass(frozen=True)
class SetSpec:
    """One toggle: its estimate and exact (Δ margin, Δ accuracy) per objective, and how it ended."""

    what: str
    layers: dict[str, int]
    estimate: dict[Objective, tuple[float, float]]
    exact: dict[Objective, tuple[float, float]] | None
    checkpoint: str = CK_A
    state: ToggleState = ToggleState.done
    control: dict[Objective, tuple[float, float]] | None = None
    n_pairs_done: int = N_PAIRS
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def n_neurons(self) -> int:
        return sum(self.layers.values())


H, R = Objective.helpful, Objective.harmless
SETS: tuple[SetSpec, ...] = (
    SetSpec("top 1% by A, seed 0", {"3": 5}, {H: (-0.10, -0.02), R: (-0.05, 0.0)},
            {H: (-0.12, -0.03), R: (-0.04, 0.0)}),
    SetSpec("shared H ∩ R at top 10% by A, seed 0", {"1": 20, "4": 30}, {H: (-0.30, -0.05), R: (-0.20, -0.02)},
            {H: (-0.45, -0.08), R: (-0.15, -0.02)}, control={H: (-0.01, 0.0), R: (0.0, 0.0)}),
    SetSpec("helpful-specific at top 20% by C, seed 1", {"0": 100, "5": 400}, {H: (-1.0, -0.10), R: (-0.6, -0.05)},
            {H: (-2.0, -0.25), R: (-0.3, -0.03)}),
    SetSpec("layer 2, all neurons", {"2": 2000}, {H: (0.2, 0.01), R: (0.1, 0.0)}, {H: (-0.5, -0.05), R: (0.4, 0.02)}),
    SetSpec(EVIL, {"5": 8}, {H: (-0.02, 0.0), R: (-0.01, 0.0)}, {H: (-0.03, 0.0), R: (-0.01, -0.015625)}),
    SetSpec("harmless-specific at top 5% by P, seed 0", {"1": 20}, {H: (0.05, 0.0), R: (-0.25, -0.03)},
            {H: (0.04, 0.0), R: (-0.35, -0.05)}, checkpoint=CK_B),
    # left out of the agreement, each for its own reason
    SetSpec("cancelled mid-rounds", {"3": 4}, {H: (-9.0, -0.5)}, {H: (1.0, 0.1)}, state=ToggleState.cancelled,
            n_pairs_done=16),
    SetSpec("superseded by the next toggle", {"3": 4}, {H: (-9.0, -0.5)}, None, state=ToggleState.superseded),
    SetSpec("empty layer slice", {}, {H: (0.0, 0.0), R: (0.0, 0.0)}, {H: (0.0, 0.0), R: (0.0, 0.0)}),
    SetSpec("done without an exact round", {"3": 4}, {H: (-9.0, -0.5)}, None),
    SetSpec("done with a partial exact answer", {"3": 4}, {H: (-9.0, -0.5)}, {H: (1.0, 0.1)}, n_pairs_done=32),
)
COUNTED: tuple[SetSpec, ...] = SETS[:6]
"""The finished, non-empty toggles with complete exact answers: what the agreement is computed over."""


def set_key(layers: dict[str, int], mode: AblationMode = AblationMode.zero, factor: float = 0.0) -> str:
    return hashlib.sha256(json.dumps([layers, str(mode), factor], sort_keys=True).encode()).hexdigest()


def _exact(values: dict[Objective, tuple[float, float]] | None, n_done: int) -> dict[str, Any] | None:
    if values is None:
        return None
    return {str(o): {"delta_margin": m, "delta_accuracy": a, "delta_margin_ci": [m - 0.05, m + 0.05],
                     "delta_accuracy_ci": [a - 0.02, a + 0.02], "n_pairs_done": n_done, "n_pairs": N_PAIRS}
            for o, (m, a) in values.items()}


def toggle_record(spec: SetSpec, **overrides: Any) -> ToggleRecordIn:
    """The record the live path would write for `spec`."""
    body: dict[str, Any] = {
        "id": spec.id, "checkpoint": spec.checkpoint, "base_model": "tiny-bert", "regime": "mixed",
        "what": spec.what, "set_key": set_key(spec.layers), "n_neurons": spec.n_neurons, "layers": spec.layers,
        "mode": "zero", "factor": 0.0, "probe_limit": N_PAIRS, "state": str(spec.state),
        "estimate": {str(o): {"delta_margin": m, "delta_accuracy": a} for o, (m, a) in spec.estimate.items()},
        "exact": _exact(spec.exact, spec.n_pairs_done), "control_exact": _exact(spec.control, N_PAIRS),
        "timings": {"estimate_ms": 4.0, "first_round_ms": 150.0, "exact_ms": 900.0, "total_ms": 1400.0,
                    "startup_ms": None},
    }
    body.update(overrides)
    return ToggleRecordIn.model_validate(body)


def record_sets(db: Database, specs: tuple[SetSpec, ...] = SETS) -> list[str]:
    """Record every spec (oldest first); returns their ids."""
    return [record_toggle(db, toggle_record(s)) for s in specs]
