"""Stream texts through a reward model and reduce its MLP neurons to per-neuron statistics (METHOD.md §3).

Per group of texts (e.g. 'helpful/chosen') and per (layer, neuron), over every NON-PAD token, token-weighted
(each batch reduced in float32, running totals in float64): mean activation A, mean squared change from the
base model C = mean (a_RM − a_base)² on the same tokens, fraction positive P, variance (population, ddof=0,
merged batch by batch with Chan's formula so it does not cancel), max, token count; plus each neuron's top-k
activating texts.

Memory does not grow with the data: each layer's values are reduced inside its hook; only the base model's
values of the current batch wait ([batch, seq, neurons] per layer) for the RM's pass over the same batch.
Cost: about ten elementwise passes over each layer's values, all into one reused buffer, no per-layer
allocations; `python -m bench bench_capture` measures memory over 1x/4x/16x the data and time against
plain forward passes (bench/results/capture.json).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from workers.contract.vocab import HookPoint
from workers.models.registry import LoadedModel
from workers.models.scoring import Batch, ProgressLike, iter_batches, n_batches, tokenize
from workers.neurons.hooks import record_neurons

__all__ = ["STAT_NAMES", "CaptureResult", "GroupStats", "capture_statistics"]

STAT_NAMES = ("mean", "mean_sq_change", "frac_pos", "var", "max")


@dataclass
class GroupStats:
    """One group's statistics, arrays [n_layers, n_neurons]; top-k arrays [k, n_layers, n_neurons].

    `top_text` indexes the group's texts (-1 where the group has fewer than k non-empty texts), `top_pos` is
    the token position in the model's (left-truncated) input, `top_token` the token id there.
    """

    n_texts: int
    n_tokens: int
    mean: np.ndarray
    mean_sq_change: np.ndarray | None
    frac_pos: np.ndarray
    var: np.ndarray
    max: np.ndarray
    top_values: np.ndarray
    top_text: np.ndarray
    top_pos: np.ndarray
    top_token: np.ndarray


class _Scratch:
    """Reusable buffers of one capture: per-layer work writes into them instead of allocating.

    Fresh [batch, seq, neurons] temporaries cost page faults on every layer of every batch (on CPU that
    alone was as slow as the arithmetic) and fragment the allocator, so memory crept up with the data.
    """

    def __init__(self) -> None:
        self.bufs: dict[object, torch.Tensor] = {}

    def like(self, x: torch.Tensor, key: object = "work", dtype: torch.dtype | None = None,
             device: torch.device | None = None) -> torch.Tensor:
        return self.buffer(x.shape, key, dtype or x.dtype, device or x.device)

    def buffer(self, shape: tuple[int, ...] | torch.Size, key: object, dtype: torch.dtype,
               device: torch.device) -> torch.Tensor:
        buf, n = self.bufs.get(key), int(np.prod(shape))
        if buf is None or buf.numel() < n or buf.dtype != dtype or buf.device != device:
            buf = torch.empty(max(n, 0 if buf is None else buf.numel()), dtype=dtype, device=device)
            self.bufs[key] = buf
        return buf[:n].view(shape)


class _TextMax:
    """Each text's max per neuron over its valid tokens [B, N], and on demand the first position of it.

    Positions by argmax over the sequence are slow on CPU (a strided reduction with indices), so the core is
    cut into blocks of BLOCK tokens: block maxima give the text max in one pass, and only the block that
    holds the max is searched. Positions are needed only when a text enters some neuron's top-k.
    """

    BLOCK = 16

    def __init__(self, x4: torch.Tensor, core: int, valid: torch.Tensor) -> None:
        """`x4` [layers, B, S, N] (or [B, S, N]); `valid` [B, S]; the first `core` positions valid in all rows."""
        if x4.dim() == 3:
            x4 = x4[None]
        self.layers = x4.shape[0]
        x = x4.flatten(0, 1)  # [layers * B, S, N]: every layer's rows side by side
        valid = valid.repeat(self.layers, 1)
        b, s, n = x.shape
        self.x, self.shape = x, (b, s, n)
        self.nblk = core // self.BLOCK
        self.c16 = self.nblk * self.BLOCK
        self.core_max: torch.Tensor | None = None
        self.slab: torch.Tensor | None = None
        if self.nblk:
            self.blocks = x[:, :self.c16].unflatten(1, (self.nblk, self.BLOCK))
            self.bmax = self.blocks.amax(2)  # [rows, blocks, N]
            self.core_max = self.bmax.amax(1)
        if self.c16 < s:
            self.slab = x[:, self.c16:].masked_fill(~valid[:, self.c16:, None], -torch.inf)
            self.slab_max = self.slab.amax(1)
        if self.core_max is None:
            flat = self.slab_max
        elif self.slab is None:
            flat = self.core_max
        else:
            flat = torch.maximum(self.core_max, self.slab_max)
        self.value = flat.unflatten(0, (self.layers, -1))  # [layers, B, N]

    @staticmethod
    def _first(hit_of: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Index along dim 1 of the first entry equal to `target` (weights L − i, the largest wins)."""
        length = hit_of.shape[1]
        weight = torch.arange(length, 0, -1, dtype=hit_of.dtype, device=hit_of.device)[None, :, None]
        first = length - torch.where(hit_of == target[:, None], weight, 0).amax(1)
        return first.to(torch.int64).clamp_(0, length - 1)

    def positions(self) -> torch.Tensor:
        """[layers, B, N] token positions of `value`."""
        b, _, n = self.shape
        pos = torch.zeros((b, n), dtype=torch.int64, device=self.x.device)
        if self.core_max is not None:
            blk = self._first(self.bmax, self.core_max)  # [rows, N]
            index = blk[:, None, None, :].expand(b, 1, self.BLOCK, n)
            in_block = self.blocks.gather(1, index).squeeze(1)  # [rows, BLOCK, N]
            pos = blk * self.BLOCK + self._first(in_block, self.core_max)
        if self.slab is not None:
            slab_pos = self.c16 + self._first(self.slab, self.slab_max)
            pos = slab_pos if self.core_max is None else torch.where(self.slab_max > self.core_max, slab_pos, pos)
        return pos.unflatten(0, (self.layers, -1))


def _sum_tokens(x: torch.Tensor) -> torch.Tensor:
    """Sum over the token dims of [layers, rows, tokens, N] -> [layers, N]: batched matrix-vector products
    with ones (BLAS; about 2.5x faster on CPU than a strided `sum`), float32 within a row, float64 across."""
    flat = x.flatten(0, 1)
    ones = torch.ones((flat.shape[0], 1, flat.shape[1]), dtype=x.dtype, device=x.device)
    return torch.bmm(ones, flat).view(x.shape[0], x.shape[1], x.shape[3]).to(torch.float64).sum(1)


class _Accumulator:
    """Running statistics for one group, on the model's device.

    Each batch is reduced in the activations' own precision (float32; half precision is upcast) with
    out-of-place work done in one reusable buffer; the running totals are float64 and batches are merged
    with Chan's formula, so the result does not depend on how the data was batched.
    """

    def __init__(self, n_layers: int, n_neurons: int, top_k: int, device: torch.device, with_change: bool,
                 scratch: _Scratch):
        z = lambda: torch.zeros((n_layers, n_neurons), dtype=torch.float64, device=device)  # noqa: E731
        self.n_layers, self.n_neurons, self.top_k, self.scratch = n_layers, n_neurons, top_k, scratch
        self.mean, self.m2, self.pos = z(), z(), z()
        self.sq_change = z() if with_change else None
        self.max = torch.full((n_layers, n_neurons), -torch.inf, dtype=torch.float64, device=device)
        self.layer_n = [0] * n_layers
        # running top-k per group of layers reduced together (keyed by the group's first layer):
        # values [layers, k, N] float64, text / position / token ids [layers, k, N] int64
        self.top: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def fold(self, layers: slice, x: torch.Tensor, base_x: torch.Tensor | None) -> None:
        """Fold one chunk of valid tokens `x` [layers, rows, tokens, N] into the running mean, M2, P and C."""
        nb = x.shape[1] * x.shape[2]
        if nb == 0:
            return
        work = self.scratch.like(x)
        mean_b = _sum_tokens(x) / nb  # [layers, N]
        shift = mean_b.to(x.dtype)
        torch.sub(x, shift[:, None, None, :], out=work)
        # Σ(x − m̃)² = Σ(x − m)² + n(m − m̃)²: take out the rounding of the shift exactly, in float64.
        m2_b = _sum_tokens(work.square_()) - nb * (mean_b - shift.to(torch.float64)).square()
        torch.gt(x, 0, out=work)
        self.pos[layers] += _sum_tokens(work)
        if self.sq_change is not None:
            assert base_x is not None
            torch.sub(x, base_x, out=work)
            self.sq_change[layers] += _sum_tokens(work.square_())
        n = self.layer_n[layers.start]  # the layers of one group have seen the same tokens
        total = n + nb
        delta = mean_b - self.mean[layers]
        self.mean[layers] += delta * (nb / total)
        self.m2[layers] += m2_b + delta.square() * (n * nb / total)
        for layer in range(layers.start, layers.stop):
            self.layer_n[layer] = total

    def fold_text_max(self, layers: slice, text_max: _TextMax, input_ids: torch.Tensor,
                      text_index: torch.Tensor) -> None:
        """Update max and the running top-k from each text's max token per neuron [layers, B, N]."""
        value = text_max.value
        torch.maximum(self.max[layers], value.amax(1).to(torch.float64), out=self.max[layers])
        if self.top_k == 0:
            return
        g, b, n = value.shape
        if layers.start not in self.top:
            empty_i = torch.empty((g, 0, n), dtype=torch.int64, device=value.device)
            self.top[layers.start] = (torch.empty((g, 0, n), dtype=torch.float64, device=value.device),
                                      empty_i, empty_i, empty_i)
        old_v, old_t, old_p, old_k = self.top[layers.start]
        n_old = old_v.shape[1]
        top_v, sel = torch.topk(torch.cat([old_v, value.to(torch.float64)], dim=1), min(self.top_k, n_old + b),
                                dim=1)
        is_new = sel >= n_old
        # Skipping the position search when nothing entered pays on CPU; on a GPU the check would stall the
        # stream, which costs more than the search.
        if value.device.type == "cpu" and not bool(is_new.any()):
            self.top[layers.start] = (top_v, old_t.gather(1, sel), old_p.gather(1, sel), old_k.gather(1, sel))
            return
        pos = text_max.positions()  # [layers, B, N]
        tok = input_ids[None].expand(g, -1, -1).gather(2, pos)
        rows = (sel - n_old).clamp(min=0)
        new_t, new_p, new_k = text_index[rows], pos.gather(1, rows), tok.gather(1, rows)
        if n_old:
            keep = sel.clamp(max=n_old - 1)
            new_t = torch.where(is_new, new_t, old_t.gather(1, keep))
            new_p = torch.where(is_new, new_p, old_p.gather(1, keep))
            new_k = torch.where(is_new, new_k, old_k.gather(1, keep))
        self.top[layers.start] = (top_v, new_t, new_p, new_k)

    def finish(self, n_texts: int) -> GroupStats:
        n = self.layer_n[0] if self.n_layers else 0
        shape = (self.n_layers, self.n_neurons)
        nan = np.full(shape, np.nan)
        k = min(self.top_k, n_texts)
        top_v = np.full((k, *shape), -np.inf)
        top_t = np.full((k, *shape), -1, dtype=np.int64)
        top_p = np.full((k, *shape), -1, dtype=np.int64)
        top_k_ = np.full((k, *shape), -1, dtype=np.int64)
        for start, (v, t, p, tk) in self.top.items():
            rows, span = v.shape[1], slice(start, start + v.shape[0])
            top_v[:rows, span] = v.transpose(0, 1).cpu().numpy()
            top_t[:rows, span] = t.transpose(0, 1).cpu().numpy()
            top_p[:rows, span] = p.transpose(0, 1).cpu().numpy()
            top_k_[:rows, span] = tk.transpose(0, 1).cpu().numpy()
        empty = ~np.isfinite(top_v)  # texts without tokens never rank
        top_t[empty], top_p[empty], top_k_[empty] = -1, -1, -1
        if n == 0:
            return GroupStats(n_texts, 0, nan, None if self.sq_change is None else nan.copy(), nan.copy(),
                              nan.copy(), nan.copy(), top_v, top_t, top_p, top_k_)
        return GroupStats(
            n_texts=n_texts, n_tokens=n,
            mean=self.mean.cpu().numpy(),
            mean_sq_change=None if self.sq_change is None else (self.sq_change / n).cpu().numpy(),
            frac_pos=(self.pos / n).cpu().numpy(),
            var=(self.m2 / n).cpu().numpy(),
            max=self.max.cpu().numpy(),
            top_values=top_v, top_text=top_t, top_pos=top_p, top_token=top_k_,
        )


@dataclass
class CaptureResult:
    """Per-group neuron statistics of one model at one hook point; `to_tables()` for Parquet/DuckDB."""

    model: str
    base_model: str | None
    hook_point: HookPoint
    n_layers: int
    n_neurons: int
    top_k: int
    groups: dict[str, GroupStats]
    text_ids: dict[str, list[str]] = field(default_factory=dict)

    def stat(self, group: str, name: str) -> np.ndarray:
        """One statistic of one group as [n_layers, n_neurons] (NaN for C when there was no base)."""
        if name not in STAT_NAMES:
            raise KeyError(f"unknown statistic {name!r}; choose one of {STAT_NAMES}")
        g = self.groups[group]
        value = getattr(g, name)
        return np.full((self.n_layers, self.n_neurons), np.nan) if value is None else value

    def summary(self) -> dict[str, Any]:
        return {"model": self.model, "base_model": self.base_model, "hook_point": self.hook_point,
                "n_layers": self.n_layers, "n_neurons": self.n_neurons, "top_k": self.top_k,
                "groups": {g: {"n_texts": s.n_texts, "n_tokens": s.n_tokens} for g, s in self.groups.items()}}

    def to_tables(self) -> dict[str, pa.Table]:
        """Long format: 'stats' (one row per group, layer, neuron) and 'examples' (one per top-k rank).

        stats: group, layer, neuron, mean, mean_sq_change (NaN without base), frac_pos, var, max, n_tokens.
        examples: group, layer, neuron, rank (1 = highest), text_id, token_pos, token_id, value.
        """
        L, N = self.n_layers, self.n_neurons
        layer = np.repeat(np.arange(L, dtype=np.int32), N)
        neuron = np.tile(np.arange(N, dtype=np.int32), L)
        stats: list[pa.Table] = []
        examples: list[pa.Table] = []
        for name, g in self.groups.items():
            cols: dict[str, Any] = {"group": pa.array([name] * (L * N), pa.string()),
                                    "layer": layer, "neuron": neuron}
            for s in STAT_NAMES:
                cols[s] = self.stat(name, s).reshape(-1).astype(np.float64)
            cols["n_tokens"] = np.full(L * N, g.n_tokens, dtype=np.int64)
            stats.append(pa.table(cols))
            k = g.top_values.shape[0]
            # [k, L, N] -> [L, N, k] so rows come out grouped by neuron, best rank first.
            v = g.top_values.transpose(1, 2, 0).reshape(-1)
            t = g.top_text.transpose(1, 2, 0).reshape(-1)
            keep = t >= 0
            ids = np.asarray(self.text_ids.get(name, [str(i) for i in range(g.n_texts)]), dtype=object)
            examples.append(pa.table({
                "group": pa.array([name] * int(keep.sum()), pa.string()),
                "layer": np.repeat(layer, k)[keep],
                "neuron": np.repeat(neuron, k)[keep],
                "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), L * N)[keep],
                "text_id": pa.array(ids[t[keep]].tolist() if keep.any() else [], pa.string()),
                "token_pos": g.top_pos.transpose(1, 2, 0).reshape(-1)[keep].astype(np.int32),
                "token_id": g.top_token.transpose(1, 2, 0).reshape(-1)[keep].astype(np.int64),
                "value": v[keep],
            }))
        return {"stats": _concat(stats, _STATS_SCHEMA), "examples": _concat(examples, _EXAMPLES_SCHEMA)}


_STATS_SCHEMA = pa.schema([("group", pa.string()), ("layer", pa.int32()), ("neuron", pa.int32()),
                           *[(s, pa.float64()) for s in STAT_NAMES], ("n_tokens", pa.int64())])
_EXAMPLES_SCHEMA = pa.schema([("group", pa.string()), ("layer", pa.int32()), ("neuron", pa.int32()),
                              ("rank", pa.int32()), ("text_id", pa.string()), ("token_pos", pa.int32()),
                              ("token_id", pa.int64()), ("value", pa.float64())])


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    if not tables:
        return schema.empty_table()
    return pa.concat_tables([t.cast(schema) for t in tables])


class _BatchStep:
    """The hooks' view of one batch: base values wait until the RM's pass reduces them.

    Layers are reduced in groups of `group`: on CPU one at a time inside its hook (values still in cache,
    nothing copied); on a GPU several layers' values are copied into one buffer and reduced together, so
    the reduction launches ~100 kernels per group instead of per layer (it was launch-bound).
    Right padding leaves the first `core` positions valid in every row: that block is reduced as a strided
    view; only the ragged tail is gathered token by token. Base values go into a buffer kept for the whole
    capture, so the base model's own activations are freed as in a plain pass.
    """

    def __init__(self, acc: _Accumulator, batch: Batch, device: torch.device, scratch: _Scratch,
                 group: int) -> None:
        self.acc, self.device, self.scratch, self.group = acc, device, scratch, group
        self.n_layers = acc.n_layers
        self.valid = batch.attention_mask.bool()
        self.core = int(self.valid.all(0).to(torch.int64).cumprod(0).sum())
        self.tail_valid = self.valid[:, self.core:]
        self.has_tail = bool(self.tail_valid.any())
        self.input_ids = batch.input_ids
        self.text_index = torch.as_tensor(batch.index, dtype=torch.int64, device=device)
        self.base_values: torch.Tensor | None = None

    def keep_base(self, layer: int, values: torch.Tensor) -> None:
        if self.base_values is None:  # in the model's own dtype (bf16 on GPUs); the subtraction upcasts
            self.base_values = self.scratch.buffer((self.n_layers, *values.shape), "base", values.dtype,
                                                   self.device)
        self.base_values[layer].copy_(values)

    def reduce(self, layer: int, values: torch.Tensor) -> None:
        if self.group == 1:
            self._reduce(slice(layer, layer + 1), values[None])
            return
        slot = layer % self.group
        buf = self.scratch.buffer((self.group, *values.shape), "group", values.dtype, values.device)
        buf[slot].copy_(values)
        if slot == self.group - 1 or layer == self.n_layers - 1:
            self._reduce(slice(layer - slot, layer + 1), buf[:slot + 1])

    def _reduce(self, layers: slice, x: torch.Tensor) -> None:
        """Reduce the values `x` [layers, B, S, N] of a group of consecutive layers."""
        if x.dtype in (torch.float16, torch.bfloat16):  # sums in half precision would round badly
            x = self.scratch.buffer(x.shape, "float", torch.float32, x.device).copy_(x)
        base = None if self.base_values is None else self.base_values[layers]
        c = self.core
        if c:
            self.acc.fold(layers, x[:, :, :c], None if base is None else base[:, :, :c])
        if self.has_tail:
            self.acc.fold(layers, x[:, :, c:][:, self.tail_valid][:, None],
                          None if base is None else base[:, :, c:][:, self.tail_valid][:, None])
        self.acc.fold_text_max(layers, _TextMax(x, c, self.valid), self.input_ids, self.text_index)


GPU_GROUP_BYTES = 512 << 20


def layer_group_size(device: torch.device, n_layers: int, n_neurons: int, batch_size: int,
                     max_length: int) -> int:
    """How many layers are reduced together: 1 on CPU; on a GPU as many as fit GPU_GROUP_BYTES of float32
    values for a full batch (SmolLM2-135M at 32 x 256 tokens: 10 of its 30 layers)."""
    if device.type == "cpu":
        return 1
    per_layer = max(1, batch_size * max_length * n_neurons * 4)
    return max(1, min(n_layers, GPU_GROUP_BYTES // per_layer))


def _check_base(rm: LoadedModel, base: LoadedModel) -> None:
    """C compares the two models token by token, so they must share layers, widths and vocabulary."""
    a, b = (rm.arch.n_layers(rm.model), rm.arch.n_neurons(rm.model)), \
        (base.arch.n_layers(base.model), base.arch.n_neurons(base.model))
    if a != b or rm.arch.family != base.arch.family:
        raise ValueError(f"base model {base.name!r} ({base.arch.family}, layers×neurons {b}) does not match "
                         f"the reward model {rm.name!r} ({rm.arch.family}, {a})")
    if rm.tokenizer is not base.tokenizer and rm.vocab_fingerprint != base.vocab_fingerprint:
        raise ValueError(f"base model {base.name!r} has a different vocabulary from the reward model")


def capture_statistics(rm: LoadedModel, base: LoadedModel | None,
                       texts_by_group: Mapping[str, Sequence[str]], *,
                       hook_point: HookPoint = HookPoint.down_proj_input, max_length: int = 128, batch_size: int = 16,
                       top_k: int = 8, text_ids: Mapping[str, Sequence[str | int]] | None = None,
                       progress: ProgressLike | Any | None = None) -> CaptureResult:
    """Neuron statistics of `rm` per group of texts; C against `base` on the same batch (None: no C).

    Texts are tokenised once with the RM's tokenizer (left truncation) and fed, length-bucketed, to both
    models, so A, P and C are over exactly the same non-pad tokens.
    """
    if hook_point not in tuple(HookPoint):
        raise ValueError(f"unknown hook point {hook_point!r}; choose one of {[str(h) for h in HookPoint]}")
    if top_k < 0:
        raise ValueError("top_k must be >= 0")
    if base is not None:
        _check_base(rm, base)
    arch = rm.arch
    n_layers, n_neurons = arch.n_layers(rm.model), arch.n_neurons(rm.model)
    ids_out: dict[str, list[str]] = {}
    for group, texts in texts_by_group.items():
        given = None if text_ids is None else text_ids.get(group)
        if given is not None and len(given) != len(texts):
            raise ValueError(f"group {group!r}: {len(given)} text ids for {len(texts)} texts")
        ids_out[group] = [str(i) for i in (given if given is not None else range(len(texts)))]

    passes = 2 if base is not None else 1
    total = sum(n_batches(len(t), batch_size) for t in texts_by_group.values()) * passes or 1
    done = 0
    groups: dict[str, GroupStats] = {}
    scratch = _Scratch()
    layer_group = layer_group_size(rm.device, n_layers, n_neurons, batch_size, max_length)
    with torch.inference_mode():
        for group, texts in texts_by_group.items():
            acc = _Accumulator(n_layers, n_neurons, top_k, rm.device, with_change=base is not None,
                                scratch=scratch)
            for batch in iter_batches(rm, tokenize(rm, texts, max_length), batch_size):
                step = _BatchStep(acc, batch, rm.device, scratch, layer_group)
                if base is not None:
                    with record_neurons(base.model, step.keep_base, hook_point, arch=base.arch):
                        base.model.base_model(input_ids=batch.input_ids.to(base.device),
                                              attention_mask=batch.attention_mask.to(base.device))
                    done += 1
                with record_neurons(rm.model, step.reduce, hook_point, arch=arch):
                    rm.model.base_model(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
                done += 1
                if progress is not None:
                    progress.update(done / total, f"capturing {group}: {done}/{total} batches")
            groups[group] = acc.finish(len(texts))
    return CaptureResult(model=rm.name, base_model=None if base is None else base.name, hook_point=hook_point,
                         n_layers=n_layers, n_neurons=n_neurons, top_k=top_k, groups=groups, text_ids=ids_out)
