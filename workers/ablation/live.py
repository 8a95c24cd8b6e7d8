"""Interactive ablation: keep an RM and a probe set loaded and answer "what if these neurons were off?" fast.

Why it is fast (each point keeps the answer exact, only skipping work whose result is already known):

* Prefix cache. Ablating neurons of layer L cannot change anything before L's MLP, so the unablated
  residual stream after L's attention ("mid", the MLP block's input) is recorded once, from the model's own
  forward pass, and a toggle recomputes only L's MLP and the layers after it.
* Read-out row. The reward reads one position (CLS for encoders, the last non-pad token for decoders), so the
  last layer computes keys/values for every position but queries, attention output and MLP only for that
  row; everything after attention is position-wise.
* Length-bucketed batches (each padded to its own longest text, as `score_texts` batches), several
  ablations stacked along the batch in one pass (`toggle_many`), and an answer cache keyed by content.

The middle layers are the transformers layer modules called directly, with the exact positional and keyword
arguments (attention mask, rotary embeddings, ...) recorded from the model's own forward, so the masks are
whatever this transformers version builds. Each family's layer internals for this replay
(`LiveOps`) live in its file under `workers/models/arch/`. Classes without one (and masks the fast path cannot
slice) fall back to a full forward with hooks, and `info()["fallback_reason"]` says why; answers are the same,
only slower.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from workers.ablation.engine import Ablation, NeuronSet, as_ablation, layer_affine, model_shape
from workers.contract.vocab import AblationMode, HookPoint, LivePath
from workers.data.text import pair_texts
from workers.models.arch import LiveOps, NeuronFn, live_fast_path
from workers.models.registry import LoadedModel
from workers.models.scoring import Batch, iter_batches, tokenize
from workers.neurons.hooks import neuron_hooks

__all__ = ["LiveAblationSession", "Stopped", "fast_path_family"]

PairLike = Any  # a PreferencePair or a (chosen_text, rejected_text) tuple


#: the fast path's unablated rewards must match the model's own to this (relative) tolerance, else fall back
_GAP_TOLERANCE = 1e-4


class _StopForward(Exception):
    """Raised from a hook once the wanted hidden state is recorded: the rest of the forward is not needed."""


def fast_path_family(model: nn.Module) -> str | None:
    """The fast-path family of a model class, or None when only the full-forward path applies."""
    return live_fast_path(model).family


# ============================================================================ recorded state


def _no_cache(obj: Any) -> Any:
    """Recorded layer arguments without KV caches (replaying a layer must not append to one)."""
    from transformers.cache_utils import Cache

    if isinstance(obj, Cache):
        return None
    if isinstance(obj, tuple):
        return tuple(_no_cache(o) for o in obj)
    return obj


def _tile(obj: Any, times: int, batch: int) -> Any:
    """Repeat every batch-shaped tensor (ndim >= 2, first dim == batch) `times` along the batch."""
    if times == 1:
        return obj
    if isinstance(obj, torch.Tensor):
        if obj.dim() >= 2 and obj.shape[0] == batch:
            return obj.repeat(times, *([1] * (obj.dim() - 1)))
        return obj
    if isinstance(obj, tuple):
        return tuple(_tile(o, times, batch) for o in obj)
    if isinstance(obj, list):
        return [_tile(o, times, batch) for o in obj]
    if isinstance(obj, dict):
        return {k: _tile(v, times, batch) for k, v in obj.items()}
    return obj


@dataclass
class _BatchState:
    """One length bucket: its tokens, read-out rows and the unablated states recorded from the model."""

    pos: int  # index in the session's batch list (and in each cached layer's list of states)
    batch: Batch
    rows: torch.Tensor  # [B] read-out position per sequence
    layer_args: list[tuple[tuple[Any, ...], dict[str, Any]]]  # per layer: args after hidden, kwargs
    last_mask: torch.Tensor | None  # [B, 1, 1, T] row mask of the last layer's read-out queries
    last_extra: dict[str, Any] | None  # the last layer's recorded inputs its row attention needs (rotary)
    last_mid_rows: torch.Tensor | None  # [B, 1, d] unablated mid of the last layer at the read-out rows

    @property
    def size(self) -> int:
        return int(self.batch.input_ids.shape[0])


class _PrefixCache:
    """Unablated mid states per layer (a list over batches) within a byte budget; LRU eviction."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = int(budget_bytes)
        self.used = 0
        self._store: OrderedDict[int, list[torch.Tensor]] = OrderedDict()

    @staticmethod
    def nbytes(states: Sequence[torch.Tensor]) -> int:
        return int(sum(s.numel() * s.element_size() for s in states))

    def get(self, layer: int) -> list[torch.Tensor] | None:
        states = self._store.get(layer)
        if states is not None:
            self._store.move_to_end(layer)
        return states

    def put(self, layer: int, states: list[torch.Tensor]) -> bool:
        size = self.nbytes(states)
        if size > self.budget:
            return False
        while self.used + size > self.budget and self._store:
            _, old = self._store.popitem(last=False)
            self.used -= self.nbytes(old)
        self._store[layer] = states
        self.used += size
        return True

    def layers(self) -> list[int]:
        return sorted(self._store)


# ============================================================================ the session


def _texts_of(pair: PairLike) -> tuple[str, str]:
    if isinstance(pair, tuple | list):
        chosen, rejected = pair
        return str(chosen), str(rejected)
    return pair_texts(pair)


def _summary(chosen: NDArray[np.float64], rejected: NDArray[np.float64]) -> dict[str, float]:
    return {"mean_chosen": float(chosen.mean()), "mean_rejected": float(rejected.mean()),
            "mean_margin": float((chosen - rejected).mean()), "accuracy": float((chosen > rejected).mean())}


class LiveAblationSession:
    """A loaded RM plus probe pairs per objective; `toggle(ablation)` answers the per-objective effect.

    Construction runs the unablated model once (recording the per-layer states the fast path starts from,
    within `prefix_cache_mb`); later toggles recompute only from the first ablated layer. Not for concurrent
    use of the same model from other threads while a toggle runs: the ablation is installed as hooks on it.
    """

    def __init__(self, loaded: LoadedModel, probe_pairs_by_objective: Mapping[str, Sequence[PairLike]],
                 max_length: int = 128, *, batch_size: int = 32, means: Any = None,
                 hook_point: HookPoint = HookPoint.down_proj_input, answer_cache_size: int = 512,
                 prefix_cache_mb: float = 1024.0, max_rows: int = 256, fast: bool = True,
                 round_pairs: int | None = None, round_seed: int = 0) -> None:
        started = time.perf_counter()
        if loaded.model.training:
            raise ValueError("the model is in training mode (dropout): call model.eval() first")
        self.loaded = loaded
        self.model = loaded.model
        self.max_length = int(max_length)
        self.batch_size = int(batch_size)
        self.means = None if means is None else np.asarray(means, dtype=np.float64)
        self.hook_point = hook_point
        self.max_rows = max(1, int(max_rows))
        self.n_layers, self.n_neurons = model_shape(loaded)
        self._layers = loaded.arch.layers(self.model)
        self._lock = threading.RLock()
        self._answers: OrderedDict[str, NDArray[np.float64]] = OrderedDict()
        self._answer_cache_size = int(answer_cache_size)
        self._prefix = _PrefixCache(int(prefix_cache_mb * 2**20))
        self._last_mid_all = torch.empty(0)
        self._last_index = np.empty(0, dtype=np.int64)

        self.objectives: list[str] = []
        texts: list[str] = []
        self._chosen: dict[str, NDArray[np.int64]] = {}
        self._rejected: dict[str, NDArray[np.int64]] = {}
        for objective, pairs in probe_pairs_by_objective.items():
            pairs = list(pairs)
            if not pairs:
                continue
            start = len(texts)
            for pair in pairs:
                texts.extend(_texts_of(pair))
            idx = np.arange(start, len(texts), dtype=np.int64)
            self.objectives.append(str(objective))
            self._chosen[str(objective)] = idx[0::2]
            self._rejected[str(objective)] = idx[1::2]
        if not texts:
            raise ValueError("the probe set is empty")
        self.texts = texts
        self._last_chunk = max(1, 16384 // len(texts))  # ablations per last-layer-only pass (rows are cheap)
        self.n_tokens = 0

        chosen = live_fast_path(self.model)
        self._ops: LiveOps | None = chosen.ops if fast else None
        self.family: str | None = chosen.family if fast else None
        self._states: list[_BatchState] = []
        self.fallback_reason: str | None = chosen.reason if fast else "fast path disabled"
        with torch.inference_mode():
            token_ids = tokenize(loaded, texts, self.max_length)
            self.n_tokens = int(sum(len(t) for t in token_ids))
            batches = self._plan_rounds(token_ids, round_pairs, round_seed)
            try:
                self.baseline_full = self._record(batches)
            except _Unsupported as exc:  # replay is impossible here: answer by full passes instead
                self._ops, self.family, self.fallback_reason = None, None, str(exc)
                self._states, self._prefix = [], _PrefixCache(self._prefix.budget)
                self.baseline_full = self._record(batches)
            self.baseline = self.baseline_full if self._ops is None else self._fast_baseline()
            gap = float(np.max(np.abs(self.baseline - self.baseline_full)))
            if gap > _GAP_TOLERANCE * max(1.0, float(np.max(np.abs(self.baseline_full)))):
                # the replay disagrees with the model itself: never answer from it
                self._ops, self.family, self._prefix = None, None, _PrefixCache(0)
                self.fallback_reason = f"fast path disagreed with the model by {gap:.3g}"
                self.baseline = self.baseline_full
        self.numerics_gap = float(np.max(np.abs(self.baseline - self.baseline_full)))
        self.setup_s = time.perf_counter() - started

    # ------------------------------------------------------------------ rounds

    def _plan_rounds(self, token_ids: Sequence[np.ndarray], round_pairs: int | None, seed: int) -> list[Batch]:
        """The session's batches, grouped into rounds that `toggle_rounds` answers one at a time.

        Without `round_pairs` there is one round: every text, length-bucketed. With it, round r holds
        `round_pairs` pairs of each objective, drawn in a seeded random order (so the running Δ after any
        round is an unbiased sample of the probe set, not its shortest texts), its texts length-bucketed into
        batches of `batch_size` (padding then costs a few per cent over bucketing the whole probe set).
        """
        self.round_pairs: list[dict[str, NDArray[np.int64]]] = []  # per round, pair positions per objective
        self.rounds: list[list[int]] = []  # per round, positions in self._states
        batches: list[Batch] = []
        if not round_pairs:
            batches = list(iter_batches(self.loaded, token_ids, self.batch_size))
            self.round_pairs = [{o: np.arange(self._chosen[o].size) for o in self.objectives}]
            self.rounds = [list(range(len(batches)))]
            return batches
        rng = np.random.default_rng(seed)
        order = {o: rng.permutation(self._chosen[o].size) for o in self.objectives}
        n_rounds = max(-(-self._chosen[o].size // round_pairs) for o in self.objectives)
        for r in range(n_rounds):
            pairs = {o: np.sort(order[o][r * round_pairs:(r + 1) * round_pairs]) for o in self.objectives}
            idx = np.concatenate([np.stack([self._chosen[o][p], self._rejected[o][p]], 1).reshape(-1)
                                  for o, p in pairs.items()])
            start = len(batches)
            for b in iter_batches(self.loaded, [token_ids[i] for i in idx], self.batch_size):
                batches.append(Batch(idx[b.index], b.input_ids, b.attention_mask))
            self.round_pairs.append(pairs)
            self.rounds.append(list(range(start, len(batches))))
        return batches

    # ------------------------------------------------------------------ recording the unablated model

    def _readout_rows(self, batch: Batch) -> torch.Tensor:
        """The position the head reads, by the head's own rule (CLS; or rightmost token != pad_token_id)."""
        ids = batch.input_ids
        if self.loaded.arch.readout == "cls":
            return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
        pad = self.model.config.get_text_config().pad_token_id
        if pad is None:
            return torch.full((ids.shape[0],), ids.shape[1] - 1, dtype=torch.long, device=ids.device)
        non_pad = (ids != pad).to(torch.int32)
        pos = torch.arange(ids.shape[1], device=ids.device, dtype=torch.int32)
        return (pos * non_pad).argmax(-1).to(torch.long)

    def _record(self, batches: list[Batch]) -> NDArray[np.float64]:
        """The unablated model over every batch; keeps what the fast path replays (mids if they fit)."""
        out = np.empty(len(self.texts), dtype=np.float64)
        keep_mids = self._ops is not None and \
            self._estimate_mid_bytes(batches) * (self.n_layers - 1) <= self._prefix.budget
        mids: dict[int, list[torch.Tensor]] = {i: [] for i in range(self.n_layers - 1)}
        for batch in batches:
            out[batch.index] = self._record_batch(batch, mids if keep_mids else None)
        if keep_mids:
            for i in range(self.n_layers - 1):
                self._prefix.put(i, mids[i])
        return out

    def _record_batch(self, batch: Batch, mids: dict[int, list[torch.Tensor]] | None) -> NDArray[np.float64]:
        """One forward of the model itself: rewards, each layer's call arguments, mids, last read-out."""
        n = self.n_layers
        args: list[tuple[tuple[Any, ...], dict[str, Any]]] = [((), {})] * n
        last_in: list[torch.Tensor] = []
        handles = []

        def layer_hook(i: int) -> Callable[..., None]:
            def pre(_m: nn.Module, a: tuple[Any, ...], kw: dict[str, Any]) -> None:
                args[i] = (_no_cache(tuple(a[1:])), {k: _no_cache(v) for k, v in kw.items()})
                if i == n - 1:
                    last_in.append(a[0])
            return pre

        def mid_hook(store: list[torch.Tensor]) -> Callable[..., None]:
            def pre(_m: nn.Module, a: tuple[Any, ...]) -> None:
                store.append(a[0])
            return pre

        try:
            if self._ops is not None:
                for i, layer in enumerate(self._layers):
                    handles.append(layer.register_forward_pre_hook(layer_hook(i), with_kwargs=True))
                    if mids is not None and i < n - 1:
                        mid_mod = self._ops.mid_module(layer)
                        handles.append(mid_mod.register_forward_pre_hook(mid_hook(mids[i])))
            logits = self.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                use_cache=False).logits
        finally:
            for h in handles:
                h.remove()
        state = _BatchState(pos=len(self._states), batch=batch, rows=self._readout_rows(batch),
                            layer_args=args, last_mask=None, last_extra=None, last_mid_rows=None)
        if self._ops is not None:
            if not last_in:
                raise _Unsupported("the last layer was never called by the model's forward")
            state.last_mask = self._row_mask(state, n - 1)
            bound = self._bound(state, n - 1)
            state.last_extra = {k: bound[k] for k in self._ops.row_attention_inputs if k in bound}
            state.last_mid_rows = self._attn_rows(state, last_in[0])
        self._states.append(state)
        return logits[:, 0].double().cpu().numpy()

    def _estimate_mid_bytes(self, batches: Sequence[Batch]) -> int:
        hidden = int(self.model.config.get_text_config().hidden_size)
        elem = torch.finfo(self.loaded.dtype).bits // 8
        return int(sum(b.input_ids.numel() for b in batches) * hidden * elem)

    def _bound(self, state: _BatchState, layer: int) -> dict[str, Any]:
        """The recorded call of `layer` bound to its forward's parameter names."""
        args, kwargs = state.layer_args[layer]
        sig = inspect.signature(self._layers[layer].forward)
        bound = sig.bind_partial(None, *args, **kwargs)
        out = dict(bound.arguments)
        extra = out.pop(next((k for k, p in sig.parameters.items() if p.kind is p.VAR_KEYWORD), ""), None)
        if isinstance(extra, dict):
            out.update(extra)
        return out

    def _row_mask(self, state: _BatchState, layer: int) -> torch.Tensor:
        """[B, 1, 1, T] mask of the read-out queries, sliced from the mask the model gave `layer`."""
        bound = self._bound(state, layer)
        mask = bound.get("attention_mask")
        if isinstance(mask, dict):  # some models pass a mapping per attention type
            mask = mask.get(getattr(self._layers[layer], "attention_type", "full_attention"))
        ids, am = state.batch.input_ids, state.batch.attention_mask.bool()
        b, t = ids.shape
        rows = state.rows
        if mask is None:
            keys = am.clone()
            if self.loaded.arch.is_decoder:
                keys &= torch.arange(t, device=ids.device)[None, :] <= rows[:, None]
            return keys[:, None, None, :]
        if not isinstance(mask, torch.Tensor) or mask.dim() != 4:
            raise _Unsupported(f"attention mask of type {type(mask).__name__} cannot be sliced")
        m = mask.expand(b, -1, -1, -1)
        if m.shape[2] == 1:
            return m[:, :, :1, :]
        return m[torch.arange(b, device=ids.device), :, rows, :].unsqueeze(2)

    def _attn_rows(self, state: _BatchState, h: torch.Tensor, times: int = 1) -> torch.Tensor:
        assert self._ops is not None and state.last_mask is not None and state.last_extra is not None
        last = self.n_layers - 1
        b = state.size
        bound = _tile(state.last_extra, times, b)
        rows = state.rows.repeat(times)
        mask = state.last_mask.repeat(times, 1, 1, 1) if times > 1 else state.last_mask
        return self._ops.attn_rows(self._layers[last], h, rows, bound, mask)

    def _fast_baseline(self) -> NDArray[np.float64]:
        """Unablated rewards through the fast path's own read-out, so a no-op ablation gives Δ = 0 exactly.

        Also stacks every batch's last-layer read-out mid into one tensor: an ablation confined to the last
        layer is then one position-wise pass over all texts at once.
        """
        assert self._ops is not None
        rows = [st.last_mid_rows for st in self._states]
        assert all(r is not None for r in rows)
        self._last_mid_all = torch.cat(rows)  # type: ignore[arg-type]
        self._last_index = np.concatenate([st.batch.index for st in self._states])
        return self._last_layer_pass([])[0]

    def _last_layer_pass(self, ablations: Sequence[Ablation]) -> list[NDArray[np.float64]]:
        """Rewards for ablations whose first layer is the last: its MLP and the head on read-out rows only."""
        assert self._ops is not None
        n = self._last_mid_all.shape[0]
        runs = [list(ablations[s:s + self._last_chunk]) for s in range(0, len(ablations), self._last_chunk)] \
            or [[]]
        out: list[NDArray[np.float64]] = []
        for abls in runs:
            c = max(1, len(abls))
            fns = self._row_hooks(abls, n) if abls else {}
            hook = abls[0].hook_point if abls else HookPoint.down_proj_input
            with neuron_hooks(self.model, fns, hook, self.loaded.arch):  # type: ignore[arg-type]
                mid = self._last_mid_all.repeat(c, 1, 1) if c > 1 else self._last_mid_all
                r = self._ops.head(self.model, self._ops.mlp(self._layers[-1], mid))
            r2 = r.double().cpu().numpy().reshape(c, n)
            for row in range(c):
                res = np.empty(len(self.texts), dtype=np.float64)
                res[self._last_index] = r2[row]
                out.append(res)
        return out

    # ------------------------------------------------------------------ prefix states

    def _mid(self, layer: int, st: _BatchState) -> torch.Tensor:
        """Unablated mid state of `layer` for one batch: from the cache, else computed by the model itself
        (for every batch at once, kept if the layer fits the budget; otherwise for this batch only)."""
        states = self._prefix.get(layer)
        if states is not None:
            return states[st.pos]
        if self._estimate_mid_bytes([x.batch for x in self._states]) <= self._prefix.budget:
            states = [self._compute_mid(layer, x) for x in self._states]
            self._prefix.put(layer, states)
            return states[st.pos]
        return self._compute_mid(layer, st)

    def _compute_mid(self, layer: int, st: _BatchState) -> torch.Tensor:
        """Run the unablated model only up to `layer`'s mid point (a hook records it and stops the pass)."""
        assert self._ops is not None
        got: list[torch.Tensor] = []

        def pre(_m: nn.Module, a: tuple[Any, ...]) -> None:
            got.append(a[0])
            raise _StopForward

        handle = self._ops.mid_module(self._layers[layer]).register_forward_pre_hook(pre)
        try:
            with contextlib.suppress(_StopForward):
                self.model(input_ids=st.batch.input_ids, attention_mask=st.batch.attention_mask,
                           use_cache=False)
        finally:
            handle.remove()
        return got[0]

    # ------------------------------------------------------------------ forward passes

    def _row_hooks(self, ablations: Sequence[Ablation], batch: int) -> dict[int, NeuronFn]:
        """Per layer, one affine hook whose keep/fill differ by row block: block c is ablation c."""
        from workers.ablation.engine import affine_hook_fn

        layers = sorted({layer for a in ablations for layer in a.layers})
        fns: dict[int, NeuronFn] = {}
        for layer in layers:
            keeps, fills = zip(*(layer_affine(a, layer, self.n_neurons) for a in ablations), strict=True)
            keep = torch.from_numpy(np.repeat(np.stack(keeps), batch, axis=0)[:, None, :])
            any_fill = any(a.mode == AblationMode.mean and layer in a.neurons for a in ablations)
            fill = torch.from_numpy(np.repeat(np.stack(fills), batch, axis=0)[:, None, :]) \
                if any_fill else None
            if len(ablations) == 1:  # a single ablation broadcasts a plain vector over the batch
                keep = keep[0, 0]
                fill = None if fill is None else fill[0, 0]
            fns[layer] = affine_hook_fn(keep, fill)
        return fns

    def _fast_pass(self, st: _BatchState, ablations: Sequence[Ablation], first: int) -> torch.Tensor:
        """Rewards [C * B] of one batch under C ablations that all start at layer `first`."""
        assert self._ops is not None
        ops, layers, last = self._ops, self._layers, self.n_layers - 1
        c, b = len(ablations), st.size
        mid = self._mid(first, st) if first < last else None  # before any ablation hook is installed
        fns = self._row_hooks(ablations, b)
        with neuron_hooks(self.model, fns, ablations[0].hook_point, self.loaded.arch):
            if mid is None:
                assert st.last_mid_rows is not None
                mid_rows = st.last_mid_rows.repeat(c, 1, 1) if c > 1 else st.last_mid_rows
            else:
                h = ops.mlp(layers[first], mid.repeat(c, 1, 1) if c > 1 else mid)
                for i in range(first + 1, last):
                    args, kwargs = st.layer_args[i]
                    h = layers[i](h, *_tile(args, c, b), **_tile(kwargs, c, b))
                mid_rows = self._attn_rows(st, h, times=c)
            return ops.head(self.model, ops.mlp(layers[last], mid_rows))

    def _full_pass(self, st: _BatchState, ablations: Sequence[Ablation]) -> torch.Tensor:
        """Rewards [C * B] by the model's own forward with the hooks installed (the reference path)."""
        c = len(ablations)
        ids, am = st.batch.input_ids, st.batch.attention_mask
        fns = self._row_hooks(ablations, st.size)
        with neuron_hooks(self.model, fns, ablations[0].hook_point, self.loaded.arch):
            logits = self.model(input_ids=ids.repeat(c, 1), attention_mask=am.repeat(c, 1),
                                use_cache=False).logits
        return logits[:, 0]

    def _compute(self, ablations: Sequence[Ablation], path: LivePath, states: Sequence[_BatchState] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> list[NDArray[np.float64]]:
        """Per-text rewards for each ablation (all non-empty, same hook point), batched where it helps.

        `states` limits the work to those batches (a round; other texts stay NaN, except that a set confined
        to the last layer is one pass over every text anyway); `should_stop` is asked before each batch and
        raises `Stopped` when it says so."""
        out = [np.full(len(self.texts), np.nan) for _ in ablations]
        use_fast = path == LivePath.fast and self._ops is not None
        groups: dict[int, list[int]] = {}
        for j, a in enumerate(ablations):
            groups.setdefault(int(a.first_layer or 0) if use_fast else 0, []).append(j)
        last = self.n_layers - 1
        with torch.inference_mode():
            for first, members in groups.items():
                if use_fast and first == last:
                    results = self._last_layer_pass([ablations[j] for j in members])
                    for j, r in zip(members, results, strict=True):
                        out[j] = r
                    continue
                for st in self._states if states is None else states:
                    if should_stop is not None and should_stop():
                        raise Stopped("stopped between batches")
                    per_pass = max(1, self.max_rows // st.size)
                    for s in range(0, len(members), per_pass):
                        chunk = members[s:s + per_pass]
                        abls = [ablations[j] for j in chunk]
                        t = self._fast_pass(st, abls, first) if use_fast else self._full_pass(st, abls)
                        r = t.double().cpu().numpy().reshape(len(chunk), st.size)
                        for row, j in enumerate(chunk):
                            out[j][st.batch.index] = r[row]
        return out

    # ------------------------------------------------------------------ public API

    def _as_ablation(self, spec: Ablation | NeuronSet, **options: Any) -> Ablation:
        if not isinstance(spec, Ablation):
            options.setdefault("hook_point", self.hook_point)
            if options.get("mode") == AblationMode.mean and options.get("means") is None:
                options["means"] = self.means
        abl = as_ablation(spec, **options)
        abl.validate(self.n_layers, self.n_neurons)
        return abl

    def rewards(self, ablation: Ablation | NeuronSet | None, *, path: LivePath = LivePath.fast,
                **options: Any) -> NDArray[np.float64]:
        """Reward of every probe text (chosen/rejected interleaved per pair, objectives in order)."""
        if ablation is None:
            return self.baseline.copy()
        return self.rewards_many([self._as_ablation(ablation, **options)], path=path)[0]

    def rewards_many(self, ablations: Sequence[Ablation | NeuronSet], *, path: LivePath = LivePath.fast,
                     **options: Any) -> list[NDArray[np.float64]]:
        """`rewards` for several ablations, computed together (answer cache first, then batched passes)."""
        abls = [self._as_ablation(a, **options) for a in ablations]
        results: list[NDArray[np.float64] | None] = [None] * len(abls)
        todo: dict[str, list[int]] = {}
        with self._lock:
            for j, a in enumerate(abls):
                if a.is_identity:
                    results[j] = self.baseline.copy()
                elif path == LivePath.fast and a.key() in self._answers:
                    self._answers.move_to_end(a.key())
                    results[j] = self._answers[a.key()].copy()
                else:
                    todo.setdefault(a.hook_point, []).append(j)
            for idx in todo.values():
                unique: dict[str, int] = {}
                for j in idx:
                    unique.setdefault(abls[j].key(), j)
                computed = self._compute([abls[j] for j in unique.values()], path)
                by_key = dict(zip(unique, computed, strict=True))
                for j in idx:
                    results[j] = by_key[abls[j].key()].copy()
                if path == LivePath.fast:
                    for key, r in by_key.items():
                        self._remember(key, r)
        return [r for r in results if r is not None]

    def _remember(self, key: str, rewards: NDArray[np.float64]) -> None:
        self._answers[key] = rewards
        self._answers.move_to_end(key)
        while len(self._answers) > self._answer_cache_size:
            self._answers.popitem(last=False)

    def pair_rewards(self, rewards: NDArray[np.float64]) -> dict[str, tuple[NDArray[np.float64],
                                                                             NDArray[np.float64]]]:
        """Split per-text rewards into (chosen, rejected) arrays per objective."""
        return {o: (rewards[self._chosen[o]], rewards[self._rejected[o]]) for o in self.objectives}

    def toggle(self, ablation: Ablation | NeuronSet, *, path: LivePath = LivePath.fast,
               **options: Any) -> dict[str, Any]:
        """What ablating these neurons does, per objective of the probe set.

        Returns ``{"ablation": {key, mode, n_neurons, layers, ...}, "objectives": {name: {"n_pairs",
        "baseline"/"ablated": {mean_chosen, mean_rejected, mean_margin, accuracy}, "delta": {chosen,
        rejected, margin, accuracy}, "flips": {to_wrong, to_right}}}, "timing": {seconds, path,
        first_layer, recomputed_layers, ...}}``. Accuracy is pairwise (r_c > r_r, ties wrong); Δ margin is
        the mean of (r_c − r_r) ablated minus unablated. `path` is 'cached_prefix', 'full', 'answer_cache'
        or 'identity'. `options` build the ablation from a mask or mapping (mode, factor, means).
        """
        return self.toggle_many([ablation], path=path, **options)[0]

    def toggle_many(self, ablations: Sequence[Ablation | NeuronSet], *, path: LivePath = LivePath.fast,
                    **options: Any) -> list[dict[str, Any]]:
        """`toggle` for several ablations in shared passes (one answer each, in order)."""
        started = time.perf_counter()
        abls = [self._as_ablation(a, **options) for a in ablations]
        with self._lock:
            cached = [path == LivePath.fast and (a.is_identity or a.key() in self._answers) for a in abls]
            rewards = self.rewards_many(abls, path=path)
        elapsed = time.perf_counter() - started
        answers = []
        for a, r, hit in zip(abls, rewards, cached, strict=True):
            ans = self.answer(a, r)
            first = a.first_layer
            used = "identity" if a.is_identity else "answer_cache" if hit else \
                ("cached_prefix" if path == LivePath.fast and self._ops is not None else "full")
            ans["timing"] = {"seconds": elapsed, "n_ablations_in_call": len(abls), "path": used,
                             "first_layer": first,
                             "recomputed_layers": 0 if hit or first is None else
                             (self.n_layers - first if used == "cached_prefix" else self.n_layers)}
            answers.append(ans)
        return answers

    def toggle_rounds(self, ablation: Ablation | NeuronSet, *, path: LivePath = LivePath.fast,
                      should_stop: Callable[[], bool] | None = None, **options: Any) -> Iterator[dict[str, Any]]:
        """`toggle`, one round of probe pairs at a time: yields after each round.

        Each item: ``{"round", "n_rounds", "rewards"`` (per text; NaN where not computed yet) ``, "pairs_done":
        {objective: pair positions}, "seconds"`` (since the call) ``, "path", "final"}``. The final item's
        rewards are complete and equal `rewards(ablation)`; they enter the answer cache. Cached answers,
        the identity and sets confined to the last layer (one cheap pass over every text) come as a single
        final round. `should_stop()` is asked before every batch; when it returns true, `Stopped` is raised
        and nothing is cached.
        """
        started = time.perf_counter()
        abl = self._as_ablation(ablation, **options)
        everything = {o: np.arange(self._chosen[o].size) for o in self.objectives}
        n_rounds = len(self.rounds)
        with self._lock:
            hit = path == LivePath.fast and (abl.is_identity or abl.key() in self._answers)
            last_only = path == LivePath.fast and self._ops is not None and abl.first_layer == self.n_layers - 1
            if hit or last_only or n_rounds == 1:
                rewards = self.rewards_many([abl], path=path)[0]
                used = "identity" if abl.is_identity else "answer_cache" if hit else \
                    ("cached_prefix" if path == LivePath.fast and self._ops is not None else "full")
                seconds = time.perf_counter() - started
                yield {"round": n_rounds, "n_rounds": n_rounds, "rewards": rewards, "pairs_done": everything,
                       "seconds": seconds, "path": used, "final": True,
                       "answer": self._timed_answer(abl, rewards, seconds, used, hit)}
                return
            used = "cached_prefix" if path == LivePath.fast and self._ops is not None else "full"
            rewards = np.full(len(self.texts), np.nan)
            done: dict[str, list[NDArray[np.int64]]] = {o: [] for o in self.objectives}
            for r, positions in enumerate(self.rounds):
                part = self._compute([abl], path, [self._states[i] for i in positions], should_stop)[0]
                got = ~np.isnan(part)
                rewards[got] = part[got]
                for o, p in self.round_pairs[r].items():
                    done[o].append(p)
                final = r == n_rounds - 1
                if final and path == LivePath.fast:
                    self._remember(abl.key(), rewards.copy())
                seconds = time.perf_counter() - started
                yield {"round": r + 1, "n_rounds": n_rounds, "rewards": rewards,
                       "pairs_done": {o: np.concatenate(v) for o, v in done.items()},
                       "seconds": seconds, "path": used, "final": final,
                       "answer": self._timed_answer(abl, rewards, seconds, used, False) if final else None}

    def _timed_answer(self, abl: Ablation, rewards: NDArray[np.float64], seconds: float, used: str,
                      hit: bool) -> dict[str, Any]:
        ans = self.answer(abl, rewards)
        first = abl.first_layer
        ans["timing"] = {"seconds": seconds, "n_ablations_in_call": 1, "path": used, "first_layer": first,
                         "recomputed_layers": 0 if hit or first is None else
                         (self.n_layers - first if used == "cached_prefix" else self.n_layers)}
        return ans

    def pair_margins(self, rewards: NDArray[np.float64], objective: str,
                     pairs: NDArray[np.int64] | None = None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(baseline, ablated) margins of an objective's pairs (all, or those at `pairs` positions)."""
        c, r = self._chosen[objective], self._rejected[objective]
        if pairs is not None:
            c, r = c[pairs], r[pairs]
        return self.baseline[c] - self.baseline[r], rewards[c] - rewards[r]

    def answer(self, ablation: Ablation, rewards: NDArray[np.float64]) -> dict[str, Any]:
        """The toggle answer for per-text `rewards` of `ablation` (no timing)."""
        objectives: dict[str, Any] = {}
        for o in self.objectives:
            c_idx, r_idx = self._chosen[o], self._rejected[o]
            bc, br = self.baseline[c_idx], self.baseline[r_idx]
            ac, ar = rewards[c_idx], rewards[r_idx]
            base, abl = _summary(bc, br), _summary(ac, ar)
            was, now = bc > br, ac > ar
            objectives[o] = {
                "n_pairs": int(c_idx.size),
                "baseline": base,
                "ablated": abl,
                "delta": {"chosen": float((ac - bc).mean()), "rejected": float((ar - br).mean()),
                          "margin": float(((ac - ar) - (bc - br)).mean()),
                          "accuracy": abl["accuracy"] - base["accuracy"]},
                "flips": {"to_wrong": int((was & ~now).sum()), "to_right": int((~was & now).sum())},
            }
        return {"ablation": ablation.describe(), "objectives": objectives}

    def info(self) -> dict[str, Any]:
        """What the session holds: sizes, fast-path family, cache use, set-up time."""
        return {"model": self.loaded.name, "family": self.family, "fast_path": self._ops is not None,
                "n_layers": self.n_layers, "n_neurons": self.n_neurons, "n_texts": len(self.texts),
                "n_tokens": self.n_tokens, "n_batches": len(self._states),
                "objectives": {o: int(self._chosen[o].size) for o in self.objectives},
                "prefix_cache_layers": self._prefix.layers(), "prefix_cache_mb": self._prefix.used / 2**20,
                "answer_cache_entries": len(self._answers), "setup_s": self.setup_s,
                "fallback_reason": self.fallback_reason,
                "numerics_gap": self.numerics_gap}

    def clear_cache(self) -> None:
        """Forget cached answers (the prefix states stay: they do not depend on any ablation)."""
        with self._lock:
            self._answers.clear()

    @classmethod
    def from_pairs(cls, loaded: LoadedModel, pairs: Sequence[Any], per_objective: int = 64,
                   **kwargs: Any) -> LiveAblationSession:
        """Group `PreferencePair`s by objective, keeping the first `per_objective` of each."""
        grouped: dict[str, list[Any]] = {}
        for p in pairs:
            bucket = grouped.setdefault(p.objective, [])
            if len(bucket) < per_objective:
                bucket.append(p)
        return cls(loaded, grouped, **kwargs)


class Stopped(Exception):
    """A streamed toggle was cancelled (superseded or abandoned) between two batches."""


class _Unsupported(RuntimeError):
    """The fast path cannot replay this model (e.g. a mask it cannot slice); the session uses full passes."""
