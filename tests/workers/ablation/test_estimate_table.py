"""`EstimateTable`: the first-order estimator's answers without torch, identical to `FirstOrderEstimate`'s,
through a byte round trip too, and importable in a process that never loads torch."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workers.ablation.engine import model_shape
from workers.ablation.estimate import FirstOrderEstimate
from workers.ablation.estimate_table import EstimateTable

NAMES = ["tiny-bert", "tiny-gpt2", "tiny-llama"]
MAX_LEN = 48
ROOT = Path(__file__).resolve().parents[3]
MODES = [("zero", 0.0), ("mean", 0.0), ("scale", 3.0), ("scale", 0.5), ("scale", 1.0)]


@pytest.fixture(scope="module")
def estimators(tiny_models: dict[str, Any], probe_pairs: list[Any]) -> dict[str, FirstOrderEstimate]:
    grouped: dict[str, list[Any]] = {}
    for p in probe_pairs:
        grouped.setdefault(p.objective, []).append(p)
    out = {}
    for name in NAMES:
        loaded = tiny_models[name]
        means = np.random.default_rng(7).normal(size=model_shape(loaded))
        out[name] = FirstOrderEstimate(loaded, grouped, max_length=MAX_LEN, batch_size=5, means=means)
    return out


def _sets(n_layers: int, n_neurons: int) -> list[dict[Any, Any]]:
    rng = np.random.default_rng(3)
    return [
        {},
        {0: [3]},
        {n_layers - 1: [n_neurons - 1]},
        {0: [9, 1, 1, 5], n_layers - 1: [0, n_neurons - 1]},  # unsorted, a duplicate
        {str(n_layers - 1): [2, 3]},  # a JSON object key
        {0: list(range(n_neurons))},
        {layer: rng.choice(n_neurons, 11, replace=False) for layer in range(n_layers)},  # numpy indices
        {1: [], 0: [4, 7]},  # an empty layer
    ]


def _assert_same(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]]) -> None:
    assert list(got) == list(want)
    for o, w in want.items():
        g = got[o]
        assert set(g) == set(w) == {"n_pairs", "baseline_margins", "delta_margins", "baseline_mean_margin",
                                     "baseline_accuracy", "delta_margin", "delta_accuracy"}
        for key, value in w.items():
            if isinstance(value, np.ndarray):
                np.testing.assert_array_equal(g[key], value, err_msg=f"{o}.{key}")
            else:
                assert g[key] == value and type(g[key]) is type(value), (o, key, g[key], value)


@pytest.mark.parametrize("name", NAMES)
def test_the_table_answers_as_the_estimator_does(estimators: dict[str, FirstOrderEstimate], name: str) -> None:
    est = estimators[name]
    table = est.table()
    assert (table.n_layers, table.n_neurons, table.n_pairs) == (est.n_layers, est.n_neurons, est.n_pairs)
    assert table.objectives == est.objectives and table.hook_point == str(est.hook_point)
    assert table.nbytes >= est.nbytes and table.build_s == est.build_s
    restored = EstimateTable.from_bytes(table.to_bytes())
    for neurons in _sets(est.n_layers, est.n_neurons):
        for mode, factor in MODES:
            want = est.estimate(neurons, mode=mode, factor=factor)
            _assert_same(table.estimate(neurons, mode=mode, factor=factor), want)
            _assert_same(restored.estimate(neurons, mode=mode, factor=factor), want)
    assert np.array_equal(table.delta_margins({}), np.zeros(est.n_pairs))
    assert any(v["delta_margin"] != 0 for v in table.estimate({0: [1, 2, 3]}).values())


def test_a_round_trip_keeps_every_array_and_field(estimators: dict[str, FirstOrderEstimate]) -> None:
    table = estimators["tiny-gpt2"].table()
    data = table.to_bytes()
    assert isinstance(data, bytes) and data[:2] == b"PK"  # an .npz (a zip)
    back = EstimateTable.from_bytes(data)
    for attr in ("margins", "s1", "s0", "means"):
        a, b = getattr(table, attr), getattr(back, attr)
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert back.slices == table.slices and back.info() == table.info()
    # and without means
    no_means = EstimateTable(objectives=table.objectives, slices=table.slices, margins=table.margins, s1=table.s1,
                             s0=table.s0, means=None, n_layers=table.n_layers, n_neurons=table.n_neurons,
                             hook_point="act_output", build_s=1.5)
    back = EstimateTable.from_bytes(no_means.to_bytes())
    assert back.means is None and back.hook_point == "act_output" and back.build_s == 1.5


def _random_table(means: bool = True) -> EstimateTable:
    rng = np.random.default_rng(0)
    n_layers, n_neurons, n_pairs = 2, 16, 5
    return EstimateTable(objectives=["helpful", "harmless"], slices={"helpful": slice(0, 3),
                                                                     "harmless": slice(3, 5)},
                         margins=rng.normal(size=n_pairs),
                         s1=rng.normal(size=(n_layers * n_neurons, n_pairs)),
                         s0=rng.normal(size=(n_layers * n_neurons, n_pairs)),
                         means=rng.normal(size=(n_layers, n_neurons)) if means else None,
                         n_layers=n_layers, n_neurons=n_neurons)


@pytest.mark.parametrize(("neurons", "mode", "message"), [
    ({2: [0]}, "zero", r"layer 2 out of range \[0, 2\)"),
    ({-1: [0]}, "zero", r"layer -1 out of range"),
    ({1: [3, 16]}, "zero", r"layer 1: neuron index 16 out of range \[0, 16\)"),
    ({0: [-1, 3]}, "scale", r"layer 0: neuron index -1 out of range"),
    ({0: [1.5]}, "zero", r"layer 0: neuron index must be an integer"),
    ({0: [True]}, "zero", r"layer 0: neuron index must be an integer"),
    ({"x": [1]}, "zero", r"layer must be an integer"),
    ({0: [1]}, "median", r"unknown ablation mode 'median'"),
])
def test_bad_sets_name_what_is_wrong(neurons: dict[Any, Any], mode: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _random_table().estimate(neurons, mode=mode)


def test_mean_mode_without_means_says_so() -> None:
    table = _random_table(means=False)
    with pytest.raises(ValueError, match="mode='mean' needs the captured means"):
        table.estimate({0: [1]}, mode="mean")
    table.estimate({0: [1]}, mode="zero")  # the other modes still answer


def test_inconsistent_arrays_are_refused() -> None:
    t = _random_table()
    assert t.means is not None
    with pytest.raises(ValueError, match=r"s1 has shape \(31, 5\)"):
        EstimateTable(objectives=t.objectives, slices=t.slices, margins=t.margins, s1=t.s1[:-1], s0=t.s0,
                      means=t.means, n_layers=2, n_neurons=16)
    with pytest.raises(ValueError, match="means have shape"):
        EstimateTable(objectives=t.objectives, slices=t.slices, margins=t.margins, s1=t.s1, s0=t.s0,
                      means=t.means[:, :8], n_layers=2, n_neurons=16)
    with pytest.raises(ValueError, match="pair slice"):
        EstimateTable(objectives=["helpful"], slices={"helpful": slice(0, 9)}, margins=t.margins, s1=t.s1,
                      s0=t.s0, means=None, n_layers=2, n_neurons=16)
    with np.load(io.BytesIO(t.to_bytes())) as npz:  # a table of a future layout
        arrays = {k: npz[k] for k in npz.files}
    meta = json.loads(str(arrays["meta"][()]))
    arrays["meta"] = np.array(json.dumps({**meta, "format": 999}))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with pytest.raises(ValueError, match="estimate table format 999"):
        EstimateTable.from_bytes(buf.getvalue())


def test_the_modules_import_without_torch() -> None:
    code = ("import sys; import workers.ablation.estimate_table, workers.ablation.live_stats; "
            "heavy = [m for m in ('torch', 'transformers', 'workers.ablation.engine', 'workers.ablation.estimate') "
            "if m in sys.modules]; assert not heavy, heavy")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_a_table_loaded_in_a_fresh_process_answers_without_torch(tmp_path: Path) -> None:
    table = _random_table()
    path = tmp_path / "table.npz"
    path.write_bytes(table.to_bytes())
    want = table.estimate({0: [1, 2], 1: [15]}, mode="mean")["helpful"]["delta_margin"]
    code = ("import sys; from pathlib import Path; from workers.ablation.estimate_table import EstimateTable; "
            f"t = EstimateTable.from_bytes(Path({str(path)!r}).read_bytes()); "
            "print(repr(t.estimate({'0': [2, 1], 1: [15]}, mode='mean')['helpful']['delta_margin'])); "
            "assert 'torch' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) == want
