"""First-order (attribution-patching) estimates of an ablation's effect on the probe set's margins.

Exact answers (`LiveAblationSession.toggle`) recompute the model from the first ablated layer, seconds for a
set spanning all layers on a CPU. This module answers any set instantly, to first order: one forward and
backward per batch at build time stores, for every pair p and neuron n = (layer, index),

    S1[p, n] = Σ_tokens a · g    and    S0[p, n] = Σ_tokens g,    g = ∂m_p / ∂a,

over both texts of the pair (m_p = r(chosen) − r(rejected), so rejected texts enter with a minus sign through
m). Every ablation mode is one affine map per neuron (x → x·keep + fill, see `engine.layer_affine`), so the
first-order change of m_p is Σ_n Σ_tokens g·(fill − (1 − keep)·a):

* zero:            Δm̂_p = −Σ_{n∈N} S1[p, n]
* mean (fill μ_n): Δm̂_p = Σ_{n∈N} (μ_n · S0[p, n] − S1[p, n])
* scale by f:      Δm̂_p = (f − 1) · Σ_{n∈N} S1[p, n]

An estimate is then a gather-and-sum over the set's neurons, well under a millisecond for MiniLM; it is
exact for scale factors near 1 and additive over neurons (interactions between ablated neurons are what it
misses, so large sets are a ranking signal, not a measurement).

Memory: two float32 arrays of pairs × layers × neurons; MiniLM (6 × 1536 neurons) on 64 pairs per objective
(128 pairs) holds 128 × 9216 × 2 × 4 B ≈ 9.4 MB. They are stored neuron-major ([layers, neurons, pairs]) so
a set's rows are contiguous; `s1`/`s0` give the [pairs, layers, neurons] views.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from workers.ablation.engine import Ablation, NeuronSet, as_ablation, model_shape
from workers.ablation.estimate_table import EstimateTable, per_objective
from workers.contract.vocab import AblationMode, HookPoint
from workers.data.text import pair_texts
from workers.models.registry import LoadedModel
from workers.models.scoring import iter_batches, tokenize
from workers.neurons.hooks import neuron_hooks

if TYPE_CHECKING:
    from workers.ablation.live import LiveAblationSession

__all__ = ["FirstOrderEstimate"]


def _texts_of(pair: Any) -> tuple[str, str]:
    if isinstance(pair, tuple | list):
        chosen, rejected = pair
        return str(chosen), str(rejected)
    return pair_texts(pair)


class FirstOrderEstimate:
    """Per-pair, per-neuron attribution sums of one RM on one probe set; `estimate(neurons)` answers fast.

    Built once per live session (`from_session`, or from a model and probe pairs by objective). Building
    leaves the model as it was: no weight, mode or `requires_grad` changes, no hooks, no `.grad` (gradients
    are taken with `torch.autograd.grad` with respect to the hooked activations only).
    """

    def __init__(self, loaded: LoadedModel, probe_pairs_by_objective: Mapping[str, Sequence[Any]],
                 max_length: int = 128, *, batch_size: int = 16, means: ArrayLike | None = None,
                 hook_point: HookPoint = HookPoint.down_proj_input,
                 baseline: NDArray[np.float64] | None = None) -> None:
        started = time.perf_counter()
        if loaded.model.training:
            raise ValueError("the model is in training mode (dropout): call model.eval() first")
        self.loaded = loaded
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.hook_point = HookPoint(hook_point)
        self.means = None if means is None else np.asarray(means, dtype=np.float64)
        self.n_layers, self.n_neurons = model_shape(loaded)

        self.objectives: list[str] = []
        self._slices: dict[str, slice] = {}
        texts: list[str] = []
        for objective, pairs in probe_pairs_by_objective.items():
            pairs = list(pairs)
            if not pairs:
                continue
            start = len(texts) // 2
            for pair in pairs:
                texts.extend(_texts_of(pair))
            self.objectives.append(str(objective))
            self._slices[str(objective)] = slice(start, len(texts) // 2)
        if not texts:
            raise ValueError("the probe set is empty")
        self.texts = texts
        self.n_pairs = len(texts) // 2
        rewards, s1, s0 = self._build(texts)
        if baseline is not None:  # a session's own baseline, so accuracies agree with its answers exactly
            rewards = np.asarray(baseline, dtype=np.float64)
            if rewards.shape != (len(texts),):
                raise ValueError(f"baseline has shape {rewards.shape}, the probe set {len(texts)} texts")
        self.rewards = rewards
        self.margins = rewards[0::2] - rewards[1::2]  # [pairs]
        self._s1 = s1  # [layers * neurons, pairs] float32, neuron-major
        self._s0 = s0
        self.build_s = time.perf_counter() - started

    @classmethod
    def from_session(cls, session: LiveAblationSession, *, batch_size: int = 16) -> FirstOrderEstimate:
        """The estimator of a live session's model, probe texts, hook point, means and baseline."""
        by_objective: dict[str, list[tuple[str, str]]] = {}
        for o in session.objectives:
            c_idx, r_idx = session._chosen[o], session._rejected[o]
            by_objective[o] = [(session.texts[c], session.texts[r]) for c, r in zip(c_idx, r_idx, strict=True)]
        return cls(session.loaded, by_objective, session.max_length, batch_size=batch_size, means=session.means,
                   hook_point=session.hook_point, baseline=session.baseline)

    # ------------------------------------------------------------------ build

    def _build(self, texts: list[str]) -> tuple[NDArray[np.float64], NDArray[np.float32], NDArray[np.float32]]:
        """One forward + backward per batch: rewards and the per-text sums, folded into per-pair sums."""
        loaded, model = self.loaded, self.loaded.model
        n_layers, n_neurons = self.n_layers, self.n_neurons
        rewards = np.empty(len(texts), dtype=np.float64)
        s1 = torch.zeros((self.n_pairs, n_layers, n_neurons), dtype=torch.float32)
        s0 = torch.zeros_like(s1)
        with torch.inference_mode():
            token_ids = tokenize(loaded, texts, self.max_length)
        acts: dict[int, torch.Tensor] = {}

        def grab(layer: int) -> Callable[[torch.Tensor], torch.Tensor | None]:
            def fn(x: torch.Tensor) -> torch.Tensor | None:
                if x.requires_grad:  # part of the graph already (trainable weights): watch it, change nothing
                    acts[layer] = x
                    return None
                leaf = x.detach().requires_grad_(True)  # frozen weights: the same values as a graph leaf
                acts[layer] = leaf
                return leaf
            return fn

        fns = {layer: grab(layer) for layer in range(n_layers)}
        for batch in iter_batches(loaded, token_ids, self.batch_size):
            acts.clear()
            idx = torch.as_tensor(batch.index, dtype=torch.long)
            sign = 1.0 - 2.0 * (idx % 2).to(torch.float32)  # chosen texts are even, rejected odd
            pair = idx // 2
            with torch.enable_grad(), neuron_hooks(model, fns, self.hook_point, loaded.arch):
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               use_cache=False).logits[:, 0]
                if len(acts) != n_layers:
                    raise RuntimeError(f"hooks saw {len(acts)} of {n_layers} layers' neurons")
                order = sorted(acts)
                objective = (logits.float() * sign.to(logits.device)).sum()
                grads = torch.autograd.grad(objective, [acts[i] for i in order])
            rewards[batch.index] = logits.detach().double().cpu().numpy()
            mask = batch.attention_mask.to(torch.float32)[:, :, None]
            for layer, g in zip(order, grads, strict=True):
                gf = g.float() * mask
                a = acts[layer].detach().float()
                s1[:, layer].index_add_(0, pair, (a * gf).sum(1).cpu())
                s0[:, layer].index_add_(0, pair, gf.sum(1).cpu())
            acts.clear()
        flat = (self.n_pairs, n_layers * n_neurons)
        return (rewards, np.ascontiguousarray(s1.reshape(flat).numpy().T),
                np.ascontiguousarray(s0.reshape(flat).numpy().T))

    # ------------------------------------------------------------------ views

    @property
    def s1(self) -> NDArray[np.float32]:
        """Σ_tokens a·∂m/∂a, [pairs, layers, neurons] (a view)."""
        return self._s1.reshape(self.n_layers, self.n_neurons, self.n_pairs).transpose(2, 0, 1)

    @property
    def s0(self) -> NDArray[np.float32]:
        """Σ_tokens ∂m/∂a, [pairs, layers, neurons] (a view)."""
        return self._s0.reshape(self.n_layers, self.n_neurons, self.n_pairs).transpose(2, 0, 1)

    @property
    def nbytes(self) -> int:
        return int(self._s1.nbytes + self._s0.nbytes)

    # ------------------------------------------------------------------ estimates

    def _ablation(self, neurons: Ablation | NeuronSet, mode: AblationMode | str, factor: float,
                  means: ArrayLike | None) -> Ablation:
        if isinstance(neurons, Ablation):
            abl = neurons
        else:
            if AblationMode(mode) == AblationMode.mean and means is None:
                means = self.means
            abl = as_ablation(neurons, mode=AblationMode(mode), factor=factor, means=means,
                              hook_point=self.hook_point)
        abl.validate(self.n_layers, self.n_neurons)
        return abl

    def delta_margins(self, neurons: Ablation | NeuronSet, mode: AblationMode | str = AblationMode.zero,
                      factor: float = 0.0, means: ArrayLike | None = None) -> NDArray[np.float64]:
        """Estimated Δ margin of every pair [pairs] (objectives in order) under the ablation.

        `neurons` is a mask, a {layer: indices} mapping or an `Ablation` (whose own mode, factor and means
        are then used). Mode 'mean' without `means` uses the ones the estimator was built with.
        """
        abl = self._ablation(neurons, mode, factor, means)
        if not abl.neurons:
            return np.zeros(self.n_pairs)
        flat = np.concatenate([layer * self.n_neurons + idx for layer, idx in abl.neurons.items()])
        s1 = self._s1[flat].sum(axis=0, dtype=np.float64)
        if abl.mode == AblationMode.zero:
            return -s1
        if abl.mode == AblationMode.scale:
            return (abl.factor - 1.0) * s1
        mu = np.concatenate([abl.means[layer, idx] for layer, idx in abl.neurons.items()])
        return mu @ self._s0[flat].astype(np.float64) - s1

    def estimate(self, neurons: Ablation | NeuronSet, mode: AblationMode | str = AblationMode.zero,
                 factor: float = 0.0, means: ArrayLike | None = None) -> dict[str, dict[str, Any]]:
        """Per objective: baseline margins, estimated Δ margin per pair, Δ mean margin, Δ accuracy, n_pairs.

        Accuracy is the live session's rule (pairwise, chosen > rejected, ties wrong): the fraction of
        pairs with m + Δm̂ > 0 minus the fraction with m > 0.
        """
        slices = {o: self._slices[o] for o in self.objectives}
        return per_objective(self.margins, self.delta_margins(neurons, mode, factor, means), slices)

    def table(self) -> EstimateTable:
        """Its answers as a numpy-only `EstimateTable` (arrays shared, not copied): cache it with `to_bytes`
        and answer from it in a process that has not imported torch."""
        return EstimateTable(objectives=self.objectives, slices=self._slices, margins=self.margins, s1=self._s1,
                             s0=self._s0, means=self.means, n_layers=self.n_layers, n_neurons=self.n_neurons,
                             hook_point=self.hook_point, build_s=self.build_s)

    def info(self) -> dict[str, Any]:
        """What the estimator holds and how long it took to build."""
        return {"model": self.loaded.name, "n_layers": self.n_layers, "n_neurons": self.n_neurons,
                "n_pairs": self.n_pairs, "objectives": {o: self._slices[o].stop - self._slices[o].start
                                                        for o in self.objectives},
                "hook_point": str(self.hook_point), "mb": self.nbytes / 2**20, "build_s": self.build_s}
