"""Stream texts through a reward model and reduce its MLP neurons to per-neuron statistics (METHOD.md §3).

Per group of texts (e.g. 'helpful/chosen') and per (layer, neuron), over every NON-PAD token, token-weighted,
accumulated in float64: mean activation A, mean squared change from the base model C = mean (a_RM − a_base)²
on the same tokens, fraction positive P, variance (population, ddof=0, merged batch by batch with Chan's
formula so it does not cancel), max, token count; plus each neuron's top-k activating texts.

Memory does not grow with the data: each layer's values are reduced inside its hook; only the base model's
values of the current batch wait (as [tokens, neurons] per layer) for the RM's pass over the same batch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from workers.models.architectures import HOOK_POINTS, HookPoint
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


class _Accumulator:
    """Running float64 sums for one group, kept on the model's device."""

    def __init__(self, n_layers: int, n_neurons: int, top_k: int, device: torch.device, with_change: bool):
        z = lambda: torch.zeros((n_layers, n_neurons), dtype=torch.float64, device=device)  # noqa: E731
        self.n_layers, self.n_neurons, self.top_k = n_layers, n_neurons, top_k
        self.mean, self.m2, self.sq_change = z(), z(), (z() if with_change else None)
        self.pos = torch.zeros((n_layers, n_neurons), dtype=torch.int64, device=device)
        self.max = torch.full((n_layers, n_neurons), -torch.inf, dtype=torch.float64, device=device)
        self.layer_n = [0] * n_layers
        empty_f = torch.empty((0, n_neurons), dtype=torch.float64, device=device)
        empty_i = torch.empty((0, n_neurons), dtype=torch.int64, device=device)
        self.top = [(empty_f, empty_i, empty_i, empty_i) for _ in range(n_layers)]

    def update(self, layer: int, x: torch.Tensor, base_x: torch.Tensor | None) -> None:
        """Fold one batch's valid tokens `x` [T, N] (float64) into the running statistics."""
        nb = x.shape[0]
        if nb == 0:
            return
        n = self.layer_n[layer]
        mean_b = x.mean(0)
        m2_b = (x - mean_b).square_().sum(0)
        delta = mean_b - self.mean[layer]
        total = n + nb
        self.mean[layer] += delta * (nb / total)
        self.m2[layer] += m2_b + delta.square() * (n * nb / total)
        self.layer_n[layer] = total
        self.pos[layer] += (x > 0).sum(0)
        torch.maximum(self.max[layer], x.max(0).values, out=self.max[layer])
        if self.sq_change is not None:
            assert base_x is not None
            self.sq_change[layer] += (x - base_x.to(torch.float64)).square_().sum(0)

    def update_top(self, layer: int, values: torch.Tensor, valid: torch.Tensor, input_ids: torch.Tensor,
                   text_index: torch.Tensor) -> None:
        """Merge each text's max token per neuron into the running top-k (streaming, via torch.topk)."""
        if self.top_k == 0:
            return
        masked = values.to(torch.float64).masked_fill(~valid[..., None], -torch.inf)  # [B, S, N]
        vmax, pos = masked.max(dim=1)  # [B, N]
        tok = input_ids.gather(1, pos)
        txt = text_index[:, None].expand_as(pos)
        old_v, old_t, old_p, old_k = self.top[layer]
        cat_v = torch.cat([old_v, vmax])
        k = min(self.top_k, cat_v.shape[0])
        top_v, sel = torch.topk(cat_v, k, dim=0)
        self.top[layer] = (top_v, torch.cat([old_t, txt]).gather(0, sel),
                           torch.cat([old_p, pos]).gather(0, sel), torch.cat([old_k, tok]).gather(0, sel))

    def finish(self, n_texts: int) -> GroupStats:
        n = self.layer_n[0] if self.n_layers else 0
        shape = (self.n_layers, self.n_neurons)
        nan = np.full(shape, np.nan)
        k = min(self.top_k, n_texts)
        top_v = np.full((k, *shape), -np.inf)
        top_t = np.full((k, *shape), -1, dtype=np.int64)
        top_p = np.full((k, *shape), -1, dtype=np.int64)
        top_k_ = np.full((k, *shape), -1, dtype=np.int64)
        for layer, (v, t, p, tk) in enumerate(self.top):
            rows = v.shape[0]
            top_v[:rows, layer] = v.cpu().numpy()
            top_t[:rows, layer] = t.cpu().numpy()
            top_p[:rows, layer] = p.cpu().numpy()
            top_k_[:rows, layer] = tk.cpu().numpy()
        empty = ~np.isfinite(top_v)  # texts without tokens never rank
        top_t[empty], top_p[empty], top_k_[empty] = -1, -1, -1
        if n == 0:
            return GroupStats(n_texts, 0, nan, None if self.sq_change is None else nan.copy(), nan.copy(),
                              nan.copy(), nan.copy(), top_v, top_t, top_p, top_k_)
        return GroupStats(
            n_texts=n_texts, n_tokens=n,
            mean=self.mean.cpu().numpy(),
            mean_sq_change=None if self.sq_change is None else (self.sq_change / n).cpu().numpy(),
            frac_pos=(self.pos.to(torch.float64) / n).cpu().numpy(),
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
    """The hooks' view of one batch: base values wait per layer until the RM's pass reduces them."""

    def __init__(self, acc: _Accumulator, batch: Batch, device: torch.device) -> None:
        self.acc, self.device = acc, device
        self.valid = batch.attention_mask.bool()
        self.input_ids = batch.input_ids
        self.text_index = torch.as_tensor(batch.index, dtype=torch.int64, device=device)
        self.base_values: dict[int, torch.Tensor] = {}

    def keep_base(self, layer: int, values: torch.Tensor) -> None:
        self.base_values[layer] = values[self.valid.to(values.device)].to(self.device)

    def reduce(self, layer: int, values: torch.Tensor) -> None:
        self.acc.update(layer, values[self.valid].to(torch.float64), self.base_values.pop(layer, None))
        self.acc.update_top(layer, values, self.valid, self.input_ids, self.text_index)


def _check_base(rm: LoadedModel, base: LoadedModel) -> None:
    """C compares the two models token by token, so they must share layers, widths and vocabulary."""
    a, b = (rm.arch.n_layers(rm.model), rm.arch.n_neurons(rm.model)), \
        (base.arch.n_layers(base.model), base.arch.n_neurons(base.model))
    if a != b or rm.arch.family != base.arch.family:
        raise ValueError(f"base model {base.name!r} ({base.arch.family}, layers×neurons {b}) does not match "
                         f"the reward model {rm.name!r} ({rm.arch.family}, {a})")
    if rm.tokenizer.get_vocab() != base.tokenizer.get_vocab():
        raise ValueError(f"base model {base.name!r} has a different vocabulary from the reward model")


def capture_statistics(rm: LoadedModel, base: LoadedModel | None,
                       texts_by_group: Mapping[str, Sequence[str]], *,
                       hook_point: HookPoint = "down_proj_input", max_length: int = 128, batch_size: int = 16,
                       top_k: int = 8, text_ids: Mapping[str, Sequence[str | int]] | None = None,
                       progress: ProgressLike | Any | None = None) -> CaptureResult:
    """Neuron statistics of `rm` per group of texts; C against `base` on the same batch (None: no C).

    Texts are tokenised once with the RM's tokenizer (left truncation) and fed, length-bucketed, to both
    models, so A, P and C are over exactly the same non-pad tokens.
    """
    if hook_point not in HOOK_POINTS:
        raise ValueError(f"unknown hook point {hook_point!r}; choose one of {HOOK_POINTS}")
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
    with torch.inference_mode():
        for group, texts in texts_by_group.items():
            acc = _Accumulator(n_layers, n_neurons, top_k, rm.device, with_change=base is not None)
            for batch in iter_batches(rm, tokenize(rm, texts, max_length), batch_size):
                step = _BatchStep(acc, batch, rm.device)
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
