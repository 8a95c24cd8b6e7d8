"""Running Δs with bootstrap intervals, and layer-matched random controls with stable seeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workers.ablation.live_stats import control_seed, layer_matched_control, running_delta

ROOT = Path(__file__).resolve().parents[3]

BASE = np.array([1.0, -0.5, 2.0, 0.0, -1.0])
ABLATED = np.array([-0.5, 0.5, 1.0, 0.2, -2.0])


def test_running_delta_by_hand() -> None:
    out = running_delta(BASE, ABLATED, n_total=40)
    # Δ margins −1.5, 1.0, −1.0, 0.2, −1.0; right before: pairs 0, 2 (a tie of 0 is wrong), after: 1, 2, 3
    assert out["n_done"] == 5 and out["n_total"] == 40
    assert out["delta_margin"] == pytest.approx(-0.46)
    assert out["delta_accuracy"] == pytest.approx(3 / 5 - 2 / 5)
    assert out["flips_to_wrong"] == 1 and out["flips_to_right"] == 2
    for key in ("delta_margin", "delta_accuracy"):
        lo, hi = out[f"{key}_ci"]
        assert isinstance(lo, float) and lo <= out[key] <= hi
    # a resample's Δ accuracy is a mean of per-pair changes in {−1, 0, 1}
    assert -1.0 <= out["delta_accuracy_ci"][0] < out["delta_accuracy_ci"][1] <= 1.0


def test_intervals_contain_the_mean_shrink_with_pairs_and_are_seeded() -> None:
    rng = np.random.default_rng(5)
    base = rng.normal(0.5, 1.0, 2000)
    ablated = base + rng.normal(-0.3, 0.5, 2000)
    widths = []
    for n in (20, 200, 2000):
        out = running_delta(base[:n], ablated[:n], n_total=2000, seed=1)
        for key in ("delta_margin", "delta_accuracy"):
            lo, hi = out[f"{key}_ci"]
            assert lo <= out[key] <= hi
        widths.append(out["delta_margin_ci"][1] - out["delta_margin_ci"][0])
    assert widths[0] > widths[1] > widths[2] > 0
    # the interval covers the true shift here (−0.3) once enough pairs are done
    lo, hi = running_delta(base, ablated, n_total=2000)["delta_margin_ci"]
    assert lo < -0.3 < hi
    again = running_delta(base[:200], ablated[:200], n_total=2000, seed=1)
    assert again == running_delta(base[:200], ablated[:200], n_total=2000, seed=1)
    assert again["delta_margin_ci"] != running_delta(base[:200], ablated[:200], n_total=2000,
                                                     seed=2)["delta_margin_ci"]
    narrow = running_delta(base[:200], ablated[:200], n_total=2000, seed=1, level=0.5)["delta_margin_ci"]
    assert again["delta_margin_ci"][0] < narrow[0] < narrow[1] < again["delta_margin_ci"][1]


def test_no_pairs_and_one_pair() -> None:
    none = running_delta([], [], n_total=10)
    assert none == {"n_done": 0, "n_total": 10, "delta_margin": None, "delta_margin_ci": None,
                    "delta_accuracy": None, "delta_accuracy_ci": None, "flips_to_wrong": 0, "flips_to_right": 0}
    one = running_delta([0.5], [-0.25], n_total=10)
    assert one["delta_margin"] == -0.75 and one["delta_accuracy"] == -1.0 and one["flips_to_wrong"] == 1
    assert one["delta_margin_ci"] is None and one["delta_accuracy_ci"] is None


@pytest.mark.parametrize(("base", "ablated", "kwargs", "message"), [
    ([1.0, 2.0], [1.0], {"n_total": 5}, "one length"),
    ([[1.0]], [[1.0]], {"n_total": 5}, "1-D"),
    ([1.0, 2.0], [1.0, 2.0], {"n_total": 1}, "n_total 1 is less than the 2 pairs done"),
    ([1.0, 2.0], [1.0, 2.0], {"n_total": 2, "level": 1.0}, "level"),
    ([1.0, 2.0], [1.0, 2.0], {"n_total": 2, "n_boot": 0}, "n_boot"),
])
def test_running_delta_refuses_bad_input(base: Any, ablated: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        running_delta(base, ablated, **kwargs)


SET = {3: [40, 2, 17, 2], 0: [5, 9, 11, 100, 64]}


def test_the_control_matches_layers_and_counts_and_avoids_the_set() -> None:
    control = layer_matched_control(SET, 128, seed=11)
    assert list(control) == [0, 3]
    for layer, idx in control.items():
        chosen = set(SET[layer])
        assert len(idx) == len(chosen) and idx == sorted(idx) and len(set(idx)) == len(idx)
        assert not chosen & set(idx) and all(0 <= i < 128 for i in idx)
        assert all(type(i) is int for i in idx)
    assert control == layer_matched_control(SET, 128, seed=11)
    assert control != layer_matched_control(SET, 128, seed=12)
    # a layer's control does not depend on the other layers of the set
    assert layer_matched_control({0: SET[0]}, 128, seed=11) == {0: control[0]}


def test_a_crowded_layer_gets_its_free_neurons() -> None:
    control = layer_matched_control({0: list(range(12)), 1: [0], 2: []}, 16, seed=0)
    assert control[0] == [12, 13, 14, 15] and len(control[1]) == 1 and 2 not in control
    assert layer_matched_control({0: list(range(16))}, 16, seed=0) == {}


def test_the_control_refuses_bad_sets() -> None:
    with pytest.raises(ValueError, match=r"layer 1: neuron index 16 out of range \[0, 16\)"):
        layer_matched_control({1: [3, 16]}, 16, seed=0)
    with pytest.raises(ValueError, match="layer 0: neuron index -2 is negative"):
        layer_matched_control({0: [-2]}, 16, seed=0)
    with pytest.raises(ValueError, match="integers"):
        layer_matched_control({0: [1.5]}, 16, seed=0)  # type: ignore[list-item]


def test_control_seed_is_canonical_and_stable_across_processes() -> None:
    seed = control_seed(SET, "zero", 0.0)
    assert 0 <= seed < 2**63
    assert seed == control_seed({"0": [100, 64, 11, 9, 5], 3: np.array([17, 2, 40]), 5: []}, "zero", 0.7)
    assert seed != control_seed(SET, "mean", 0.0) and seed != control_seed({0: [5]}, "zero", 0.0)
    assert control_seed(SET, "scale", 0.5) != control_seed(SET, "scale", 2.0)
    code = ("import sys; from workers.ablation.live_stats import control_seed; "
            "print(control_seed({3: [40, 2, 17, 2], 0: [5, 9, 11, 100, 64]}, 'zero', 0.0)); "
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) == seed
    # and one seed gives the control a process draws for that set
    assert layer_matched_control(SET, 128, seed=seed) == layer_matched_control(dict(reversed(SET.items())), 128,
                                                                             seed=seed)


def test_the_module_imports_without_torch() -> None:
    code = ("import sys; import workers.ablation.live_stats; "
            "heavy = [m for m in ('torch', 'transformers', 'workers.ablation.engine') if m in sys.modules]; "
            "assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
