"""The first-order estimator's answers without torch: a numpy table a live worker loads and answers from.

`FirstOrderEstimate` (workers/ablation/estimate.py) needs torch and a model to build, and importing it costs
seconds. Once built, an estimate is only a gather-and-sum over its per-pair, per-neuron sums, so
`FirstOrderEstimate.table()` hands those arrays to an `EstimateTable`, which `to_bytes` stores in the
artifact store and `from_bytes` brings back in a fresh process that has imported numpy and nothing heavy:
estimates are answered well before torch could even be imported.

The maths (see estimate.py's docstring) and the answers are the same as `FirstOrderEstimate.estimate`, bit
for bit: sets are normalised as `Ablation` normalises them (layers sorted, indices sorted and unique, empty
layers dropped) so the sums run in the same order.

Imports: numpy, the standard library and `workers.contract.vocab` (stdlib only). Never torch, transformers
or `workers.ablation.engine`; tests/workers/ablation/test_estimate_table.py checks it in a fresh process.
"""

from __future__ import annotations

import io
import json
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from workers.contract.vocab import AblationMode, HookPoint

#: {layer: neuron indices}; a layer key may be a JSON string ("3"), indices a list or an integer array
Layers = Mapping[Any, Sequence[int] | NDArray[np.integer[Any]]]

__all__ = ["EstimateTable", "Layers", "normalise_set"]

#: bumped when the stored layout changes, so an old cached table is refused rather than misread
FORMAT = 1


def _as_int(value: Any, what: str) -> int:
    """An integer from an int, a numpy integer or (layers only: JSON object keys) a decimal string."""
    if isinstance(value, bool | np.bool_):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str) and what == "layer" and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"{what} must be an integer, got {value!r}")


def normalise_set(layers: Layers, n_layers: int, n_neurons: int) -> dict[int, NDArray[np.int64]]:
    """{layer: sorted unique int64 indices}, layers sorted, empty layers dropped: `Ablation`'s normal form.

    ValueError names the first layer or neuron the model does not have (or a non-integer one). Without
    torch, so it cannot reuse `NeuronIndexSet`/`Ablation`; the checks and the order are theirs.
    """
    if not isinstance(layers, Mapping):
        raise ValueError(f"a neuron set is a mapping {{layer: [neuron indices]}}, got {type(layers).__name__}")
    out: dict[int, NDArray[np.int64]] = {}
    for key, idx in layers.items():
        layer = _as_int(key, "layer")
        if not 0 <= layer < n_layers:
            raise ValueError(f"layer {layer} out of range [0, {n_layers})")
        values = [_as_int(i, f"layer {layer}: neuron index") for i in np.asarray(idx).ravel().tolist()]
        arr = np.unique(np.asarray(values, dtype=np.int64))
        if arr.size and (arr[0] < 0 or arr[-1] >= n_neurons):
            bad = int(arr[0]) if arr[0] < 0 else int(arr[-1])
            raise ValueError(f"layer {layer}: neuron index {bad} out of range [0, {n_neurons})")
        if layer in out:
            raise ValueError(f"layer {layer} appears twice")
        if arr.size:
            out[layer] = arr
    return dict(sorted(out.items()))


def per_objective(margins: NDArray[np.float64], delta: NDArray[np.float64],
                  slices: Mapping[str, slice]) -> dict[str, dict[str, Any]]:
    """An estimate's answer per objective from baseline and estimated Δ margins per pair (one home for the
    keys and the accuracy rule: margin > 0, ties wrong), for `EstimateTable` and `FirstOrderEstimate`."""
    out: dict[str, dict[str, Any]] = {}
    for o, sl in slices.items():
        m, d = margins[sl], delta[sl]
        out[o] = {"n_pairs": int(m.size), "baseline_margins": m, "delta_margins": d,
                  "baseline_mean_margin": float(m.mean()), "baseline_accuracy": float((m > 0).mean()),
                  "delta_margin": float(d.mean()),
                  "delta_accuracy": float(((m + d) > 0).mean() - (m > 0).mean())}
    return out


class EstimateTable:
    """Per-pair baseline margins and per-neuron attribution sums of one RM on one probe set; numpy only.

    `s1`/`s0` are neuron-major float32 [layers * neurons, pairs] (a set's rows are contiguous), the layout of
    `FirstOrderEstimate._s1/_s0`; `margins` float64 [pairs], objectives in order, `slices[o]` their pairs.
    Arrays handed in are kept, not copied (a table from `FirstOrderEstimate.table()` shares its arrays).
    """

    def __init__(self, *, objectives: Sequence[str], slices: Mapping[str, slice], margins: ArrayLike,
                 s1: ArrayLike, s0: ArrayLike, means: ArrayLike | None, n_layers: int, n_neurons: int,
                 hook_point: str = HookPoint.down_proj_input, build_s: float = 0.0) -> None:
        self.objectives: list[str] = [str(o) for o in objectives]
        self.slices: dict[str, slice] = {str(o): slices[o] for o in objectives}
        self.margins: NDArray[np.float64] = np.asarray(margins, dtype=np.float64)
        self.s1: NDArray[np.float32] = np.ascontiguousarray(s1, dtype=np.float32)
        self.s0: NDArray[np.float32] = np.ascontiguousarray(s0, dtype=np.float32)
        self.means: NDArray[np.float64] | None = None if means is None else np.asarray(means, dtype=np.float64)
        self.n_layers = int(n_layers)
        self.n_neurons = int(n_neurons)
        self.hook_point = str(HookPoint(hook_point))
        self.build_s = float(build_s)
        self._check()

    def _check(self) -> None:
        """Refuse inconsistent arrays now (a corrupt or foreign cache entry), not as a wrong answer later."""
        n_pairs = self.margins.shape[0] if self.margins.ndim == 1 else -1
        if n_pairs < 1:
            raise ValueError(f"margins must be a non-empty 1-D array, got shape {self.margins.shape}")
        rows = self.n_layers * self.n_neurons
        for name, arr in (("s1", self.s1), ("s0", self.s0)):
            if arr.shape != (rows, n_pairs):
                raise ValueError(f"{name} has shape {arr.shape}, expected ({rows}, {n_pairs}) "
                                 f"(layers * neurons, pairs)")
        if self.means is not None and self.means.shape != (self.n_layers, self.n_neurons):
            raise ValueError(f"means have shape {self.means.shape}, the model ({self.n_layers}, {self.n_neurons})")
        if len(set(self.objectives)) != len(self.objectives) or not self.objectives:
            raise ValueError(f"objectives must be distinct and non-empty, got {self.objectives}")
        for o, sl in self.slices.items():
            ok = isinstance(sl, slice) and isinstance(sl.start, int) and isinstance(sl.stop, int)
            if not (ok and 0 <= sl.start < sl.stop <= n_pairs and sl.step in (None, 1)):
                raise ValueError(f"objective {o!r}: pair slice {sl} does not lie in [0, {n_pairs})")

    # ------------------------------------------------------------------ views

    @property
    def n_pairs(self) -> int:
        return int(self.margins.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of every array held (the sums dominate: pairs × layers × neurons × 2 × 4 B)."""
        return int(self.margins.nbytes + self.s1.nbytes + self.s0.nbytes
                   + (0 if self.means is None else self.means.nbytes))

    def info(self) -> dict[str, Any]:
        """What the table holds, in the shape of `FirstOrderEstimate.info()` less the model name."""
        return {"n_layers": self.n_layers, "n_neurons": self.n_neurons, "n_pairs": self.n_pairs,
                "objectives": {o: self.slices[o].stop - self.slices[o].start for o in self.objectives},
                "hook_point": self.hook_point, "mb": self.nbytes / 2**20, "build_s": self.build_s}

    # ------------------------------------------------------------------ estimates

    def delta_margins(self, layers: Layers, mode: AblationMode | str = AblationMode.zero,
                      factor: float = 0.0) -> NDArray[np.float64]:
        """Estimated Δ margin of every pair [pairs] (objectives in order): `FirstOrderEstimate.delta_margins`."""
        try:
            mode = AblationMode(mode)
        except ValueError:
            raise ValueError(f"unknown ablation mode {mode!r}; choose one of "
                             f"{[str(m) for m in AblationMode]}") from None
        if mode == AblationMode.mean and self.means is None:
            raise ValueError("mode='mean' needs the captured means, and this estimate table was built without "
                             "them (build the estimator with `means=`)")
        neurons = normalise_set(layers, self.n_layers, self.n_neurons)
        if not neurons:
            return np.zeros(self.n_pairs)
        flat = np.concatenate([layer * self.n_neurons + idx for layer, idx in neurons.items()])
        s1 = self.s1[flat].sum(axis=0, dtype=np.float64)
        if mode == AblationMode.zero:
            return -s1
        if mode == AblationMode.scale:
            return (float(factor) - 1.0) * s1
        assert self.means is not None
        mu = np.concatenate([self.means[layer, idx] for layer, idx in neurons.items()])
        return mu @ self.s0[flat].astype(np.float64) - s1

    def estimate(self, layers: Layers, mode: AblationMode | str = AblationMode.zero,
                 factor: float = 0.0) -> dict[str, dict[str, Any]]:
        """Per objective: the keys and numbers of `FirstOrderEstimate.estimate` (accuracy: margin > 0, ties
        wrong). `layers` is {layer: neuron indices} (layer keys may be JSON strings); `factor` is for 'scale'."""
        return per_objective(self.margins, self.delta_margins(layers, mode, factor),
                             {o: self.slices[o] for o in self.objectives})

    # ------------------------------------------------------------------ storage

    def to_bytes(self) -> bytes:
        """An `.npz` (uncompressed: float sums barely compress, and loading must be fast); no pickles.

        Text (objectives, hook point) travels as one JSON string array, so `allow_pickle=False` loads it.
        """
        meta = {"format": FORMAT, "objectives": self.objectives,
                "slices": [[self.slices[o].start, self.slices[o].stop] for o in self.objectives],
                "n_layers": self.n_layers, "n_neurons": self.n_neurons, "hook_point": self.hook_point,
                "build_s": self.build_s}
        arrays: dict[str, NDArray[Any]] = {"meta": np.array(json.dumps(meta)), "margins": self.margins,
                                           "s1": self.s1, "s0": self.s0}
        if self.means is not None:
            arrays["means"] = self.means
        buf = io.BytesIO()
        np.savez(buf, **arrays)  # type: ignore[arg-type]  # numpy's stub reads **kwds as allow_pickle
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> EstimateTable:
        """The table `to_bytes` wrote; ValueError on another format version or inconsistent arrays."""
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"][()]))
            if meta.get("format") != FORMAT:
                raise ValueError(f"estimate table format {meta.get('format')!r}, this code reads {FORMAT}")
            objectives = [str(o) for o in meta["objectives"]]
            slices = {o: slice(int(a), int(b)) for o, (a, b) in zip(objectives, meta["slices"], strict=True)}
            return cls(objectives=objectives, slices=slices, margins=npz["margins"], s1=npz["s1"], s0=npz["s0"],
                       means=npz["means"] if "means" in npz.files else None, n_layers=int(meta["n_layers"]),
                       n_neurons=int(meta["n_neurons"]), hook_point=str(meta["hook_point"]),
                       build_s=float(meta["build_s"]))
