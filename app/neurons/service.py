"""Neuron scores, top-p% selection with ties, named sets and overlap analytics.

Scores follow METHOD.md §3: per side, a token-weighted mean over the objectives in scope (SQL in
`app.neurons.queries`), then S = (X_chosen + X_rejected) / 2. Selection is
`workers.neurons.selection.top_percent`: one global threshold θ = the (100 − p)th percentile (linear
interpolation, as numpy's default) over every (layer, neuron) of the model, S ≥ θ.

Layers frozen in training (`TrainSettings.freeze_layers`: the embeddings and the lowest N blocks, recorded
in the checkpoint's meta) hold the same neurons in every RM trained from one base model, so they would be
"shared" only because they never changed. Selection leaves them out by default (`include_frozen=True` keeps
them): their neurons are masked before top-p, as if scored −inf, and p% is taken over the trainable
layers' neurons only (`workers.neurons.selection.top_percent`'s `exclude`). `frozen_layers_of` is the one
place that reads which layers were frozen.

Functions take what they need (`store`, `db`) as keywords. The few `services`-first functions at the
end are the entry points other domains (`app.ablation`, `app.domains`) call today.
"""

from __future__ import annotations

import functools
import hashlib
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from sqlalchemy import select

from app.core.db import Checkpoint, Database, NeuronSet
from app.core.errors import AppError, Conflict, Invalid, NotFound
from app.core.store import StatsStore
from app.neurons import queries
from app.neurons.schemas import (
    CaptureOut,
    JaccardOut,
    LayerFractionsOut,
    NeuronSetCreate,
    OverlapOut,
    SelectionOut,
    SetOp,
    SignificanceOut,
    VennOut,
)
from workers.contract.vocab import (
    OBJECTIVES,
    REGIMES,
    HookPoint,
    Objective,
    OverlapPart,
    Regime,
    Scope,
    SharedMode,
    Stat,
    objectives_of,
)
from workers.neurons import selection as sel

if TYPE_CHECKING:
    from app.core.services import Services

E = TypeVar("E", bound=StrEnum)
Mask = np.ndarray


def _word(kind: type[E], value: str, what: str) -> E:
    """A vocabulary word from a caller that passed a plain string (other domains, the CLI)."""
    try:
        return kind(value)
    except ValueError:
        raise Invalid(f"unknown {what} {value!r}; one of {', '.join(kind)}") from None


def _objectives(regime: str | None, scope: Scope) -> tuple[Objective, ...]:
    if scope == Scope.own:
        return objectives_of(regime or "")
    if scope == Scope.all:
        return OBJECTIVES
    return (Objective(scope),)


# -- layers frozen in training --------------------------------------------------------------------------
def frozen_layers_of(meta: Mapping[str, Any] | None, n_layers: int | None = None) -> tuple[int, ...]:
    """The transformer layers a checkpoint's training kept frozen, from its meta (`Checkpoint.meta`, the
    train job's summary, or the checkpoint's meta.json): layers 0 … freeze_layers − 1 of its
    `settings.freeze_layers` (a top-level `freeze_layers` is read too). A missing, null, zero or unreadable
    value means none frozen. Clipped to `n_layers` when given. Whenever a layer was frozen, the embeddings
    were too (`workers.training.trainer.freeze_lower_layers`)."""
    if not meta:
        return ()
    settings = meta.get("settings")
    value = settings.get("freeze_layers") if isinstance(settings, Mapping) else None
    if value is None:
        value = meta.get("freeze_layers")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return ()
    n = int(value)
    if n_layers is not None:
        n = min(n, int(n_layers))
    return tuple(range(max(n, 0)))


def checkpoint_frozen_layers(*, db: Database, checkpoints: Iterable[str],
                             n_layers: int | None = None) -> tuple[int, ...]:
    """The layers frozen in training in any of `checkpoints` (sorted union; a checkpoint the metadata
    database does not know counts as none frozen)."""
    ids = sorted(set(checkpoints))
    if not ids:
        return ()
    with db.session() as s:
        metas = s.execute(select(Checkpoint.meta).where(Checkpoint.id.in_(ids))).scalars().all()
    return tuple(sorted({layer for m in metas for layer in frozen_layers_of(m, n_layers)}))


def view_frozen_layers(*, store: StatsStore, db: Database, base_model: str, seed: int = 0,
                       hook: HookPoint = HookPoint.down_proj_input) -> tuple[int, ...]:
    """The layers frozen in training in any of the captured helpful, harmless and mixed RMs of one base model
    and seed (the overlap dashboard's view): the layers its selections leave out by default."""
    found = _regime_captures(_captures_with_seeds(store=store, db=db, base_model=base_model), seed, hook)
    return _union_frozen(found.values())


def _union_frozen(infos: Iterable[dict[str, Any]]) -> tuple[int, ...]:
    return tuple(sorted({int(layer) for info in infos for layer in info.get("frozen_layers", ())}))


# -- captures and scores ------------------------------------------------------------------------------
def list_captures(*, store: StatsStore, db: Database, base_model: str | None = None) -> list[CaptureOut]:
    """Every captured (checkpoint, hook), with the checkpoint's training seed (0 when it has no SQL row)."""
    return [CaptureOut(**r) for r in _captures_with_seeds(store=store, db=db, base_model=base_model)]


def _capture_rows(store: StatsStore, base_model: str | None = None) -> list[dict[str, Any]]:
    """The capture index's rows (with their result keys), read once per ingest: cached by the store's
    generation, copied out (callers may change their rows)."""
    rows = store.cache.get(("captures", store.generation, base_model),
                           lambda: tuple(queries.captures(store, base_model)))
    return [dict(r) for r in rows]


def _captures_with_seeds(*, store: StatsStore, db: Database, base_model: str | None) -> list[dict[str, Any]]:
    """The capture index's rows (with their result keys), each with its checkpoint's training seed and the
    layers frozen in its training (`frozen_layers_of`)."""
    rows = _capture_rows(store, base_model)
    ids = {r["checkpoint"] for r in rows}
    with db.session() as s:
        found = s.execute(select(Checkpoint.id, Checkpoint.seed, Checkpoint.meta)
                          .where(Checkpoint.id.in_(ids))).tuples().all() if ids else []
    known = {ck: (seed, meta) for ck, seed, meta in found}
    out = []
    for r in rows:
        seed, meta = known.get(r["checkpoint"], (0, None))
        out.append({**r, "seed": seed, "frozen_layers": list(frozen_layers_of(meta, int(r["n_layers"])))})
    return out


def capture_info(*, store: StatsStore, checkpoint: str, hook: HookPoint) -> dict[str, Any]:
    """The capture of one checkpoint at one hook (base model, regime, shape, result keys); 404 when none is
    stored."""
    info = next((r for r in _capture_rows(store) if r["checkpoint"] == checkpoint and r["hook"] == hook), None)
    if info is None:
        raise NotFound(f"no neuron capture for checkpoint {checkpoint!r} at hook {str(hook)!r}; "
                       "run `tension capture` first")
    return info


def _score_key(info: dict[str, Any], stat: Stat, objectives: tuple[Objective, ...],
               hook: HookPoint) -> tuple[Any, ...]:
    return ("scores", tuple(info["result_keys"]), info["checkpoint"], str(hook), str(stat), tuple(map(str, objectives)),
            int(info["n_layers"]), int(info["n_neurons"]))


def score_key(info: dict[str, Any], stat: Stat, scope: Scope, hook: HookPoint) -> tuple[Any, ...]:
    """What `score_array` of a capture (its `captures` row) depends on: a key for values derived from it."""
    return _score_key(info, stat, _objectives(info["regime"], scope), hook)


def _compute_scores(store: StatsStore, info: dict[str, Any], stat: Stat, objectives: tuple[Objective, ...],
                    hook: HookPoint) -> np.ndarray:
    """S per (layer, neuron): per side `sum(n_tokens * x) / sum(n_tokens)` as SQL computes it (NULLs skipped; a
    side whose statistic or token counts are all NULL has no value), then the mean of the sides that have one
    (NaN where none has). The capture's rows are fetched as columns and summed by numpy: with one row per
    objective and side, the same additions as SQL's, so the same numbers bit for bit."""
    shape = (int(info["n_layers"]), int(info["n_neurons"]))
    size = shape[0] * shape[1]
    cols = queries.score_inputs(store, info, hook, stat, objectives)
    idx, nx, n = cols["i"], cols["nx"], cols["n"]
    bins = 2 * size
    if np.ma.is_masked(nx) or np.ma.is_masked(n):  # NULL statistics or token counts: SQL's sums skip them
        nx_ok, n_ok = ~np.ma.getmaskarray(nx), ~np.ma.getmaskarray(n)
        nx, n = np.where(nx_ok, np.ma.getdata(nx), 0.0), np.where(n_ok, np.ma.getdata(n), 0)
        defined = (np.bincount(idx, weights=nx_ok, minlength=bins) > 0) \
            & (np.bincount(idx, weights=n_ok, minlength=bins) > 0)
    else:
        defined = np.bincount(idx, minlength=bins) > 0
    num = np.bincount(idx, weights=np.ma.getdata(nx), minlength=bins)
    den = np.bincount(idx, weights=np.asarray(np.ma.getdata(n), dtype=np.float64), minlength=bins)
    with np.errstate(divide="ignore", invalid="ignore"):
        side = np.where(defined, num / np.where(defined, den, 1.0), np.nan)
    c, r = side[:size], side[size:]
    c_ok, r_ok = defined[:size], defined[size:]
    out = np.where(c_ok & r_ok, sel.combined_score(np.where(c_ok, c, 0.0), np.where(r_ok, r, 0.0)),
                   np.where(c_ok, c, np.where(r_ok, r, np.nan)))
    return out.reshape(shape)


def score_array(*, store: StatsStore, checkpoint: str, stat: Stat = Stat.A, scope: Scope = Scope.own,
                hook: HookPoint = HookPoint.down_proj_input, info: dict[str, Any] | None = None) -> np.ndarray:
    """S as a [layers, neurons] array (NaN where a neuron has no statistic). Read-only: it is shared through
    the store's cache (keyed by the capture's result keys, so never stale). `info`: the capture's row, when
    the caller has it already."""
    stat, scope, hook = _word(Stat, stat, "statistic"), _word(Scope, scope, "scope"), _word(HookPoint, hook, "hook")
    info = info if info is not None else capture_info(store=store, checkpoint=checkpoint, hook=hook)
    objectives = _objectives(info["regime"], scope)
    out = store.cache.get(_score_key(info, stat, objectives, hook),
                          lambda: _compute_scores(store, info, stat, objectives, hook))
    if stat == Stat.C and np.isnan(out).all():
        raise Invalid("this capture has no change statistic (no base model was given)")
    return out


def select_top(*, store: StatsStore, checkpoint: str, p: float, stat: Stat = Stat.A, scope: Scope = Scope.own,
               hook: HookPoint = HookPoint.down_proj_input, info: dict[str, Any] | None = None,
               db: Database | None = None, include_frozen: bool = False,
               frozen_layers: Sequence[int] | None = None) -> sel.Selection:
    """Top-p% of the score array by `workers.neurons.selection.top_percent`; ties reported as selected beyond
    what p% and interpolation explain. The selection (its mask read-only) is cached beside the scores.

    Layers frozen in training are left out unless `include_frozen`: their neurons are never selected and
    p% (requested, θ, ties) is taken over the other layers' neurons. Which layers: `frozen_layers` when
    given (the overlap passes the union over its three RMs), else the checkpoint's own, from `info` when it
    is a `base_model_captures` row or else from `db`. Without either, the training is unknown and nothing
    is left out."""
    if not (math.isfinite(p) and 0 <= p <= 100):
        raise Invalid(f"p must be a percentage within [0, 100], got {p}")
    stat, scope, hook = _word(Stat, stat, "statistic"), _word(Scope, scope, "scope"), _word(HookPoint, hook, "hook")
    info = info if info is not None else capture_info(store=store, checkpoint=checkpoint, hook=hook)
    scores = score_array(store=store, checkpoint=checkpoint, stat=stat, scope=scope, hook=hook, info=info)
    excluded: tuple[int, ...] = ()
    if not include_frozen:
        if frozen_layers is not None:
            excluded = tuple(sorted({int(x) for x in frozen_layers if 0 <= int(x) < scores.shape[0]}))
        elif "frozen_layers" in info:
            excluded = _union_frozen([info])
        elif db is not None:
            excluded = checkpoint_frozen_layers(db=db, checkpoints=[checkpoint], n_layers=scores.shape[0])
    key: tuple[Any, ...] = ("top", _score_key(info, stat, _objectives(info["regime"], scope), hook), float(p))
    exclude = sel.layer_exclusion(scores.shape, excluded) if excluded else None
    try:
        return store.cache.get((*key, excluded) if excluded else key,
                               lambda: sel.top_percent(scores, p, exclude=exclude))
    except ValueError as exc:  # NaN scores: a capture with missing statistics
        raise Invalid(f"cannot select from checkpoint {checkpoint!r}: {exc}") from exc


def _regime_captures(captures: list[dict[str, Any]], seed: int, hook: HookPoint) -> dict[Regime, dict[str, Any]]:
    out: dict[Regime, dict[str, Any]] = {}
    for c in captures:
        if c["seed"] == seed and c["hook"] == hook and c["regime"] in REGIMES:
            out.setdefault(Regime(c["regime"]), c)
    return out


def find_regime_checkpoints(*, store: StatsStore, db: Database, base_model: str, seed: int,
                            hook: HookPoint) -> dict[Regime, str]:
    """The captured helpful, harmless and mixed checkpoints of one base model and seed (first of each)."""
    captured = _captures_with_seeds(store=store, db=db, base_model=base_model)
    return {r: c["checkpoint"] for r, c in _regime_captures(captured, seed, hook).items()}


def _sorted_finite(scores: np.ndarray) -> np.ndarray:
    return np.sort(scores[np.isfinite(scores)])


def base_model_captures(*, store: StatsStore, db: Database, base_model: str) -> list[dict[str, Any]]:
    """A base model's capture rows (every hook) with result keys and seeds, for a page to look them up once
    and hand to `base_model_shape`, `neuron_detail` and `neuron_ranks`."""
    return _captures_with_seeds(store=store, db=db, base_model=base_model)


def base_model_shape(*, store: StatsStore, base_model: str, hook: HookPoint,
                     captures: list[dict[str, Any]] | None = None) -> tuple[int, int]:
    """(n_layers, n_neurons) of a base model's captures at one hook; 404 when none is stored."""
    rows = captures if captures is not None else _capture_rows(store, base_model)
    at_hook = [r for r in rows if r["hook"] == hook]
    if not at_hook:
        hooks = sorted({r["hook"] for r in rows if r["hook"] is not None})
        extra = f" (captured hooks: {', '.join(hooks)})" if hooks else ""
        raise NotFound(f"no neuron capture of base model {base_model!r} at hook {str(hook)!r}{extra}")
    return max(int(r["n_layers"]) for r in at_hook), max(int(r["n_neurons"]) for r in at_hook)


# -- overlap --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Overlap:
    """The overlap numbers (as served by the API) and the masks behind them, keyed by overlap part, and the
    capture rows of the three RMs (to fetch their other scores without looking them up again)."""

    summary: OverlapOut
    masks: dict[OverlapPart, Mask]
    captures: dict[Regime, dict[str, Any]]
    key: tuple[Any, ...]
    """What the overlap depends on (the three score arrays' keys and the view), for values derived from it."""


def compute_overlap(*, store: StatsStore, db: Database, base_model: str, p: float = 10.0, stat: Stat = Stat.A,
                    seed: int = 0, hook: HookPoint = HookPoint.down_proj_input,
                    shared: SharedMode = SharedMode.intersection, include_frozen: bool = False) -> Overlap:
    """H, R, M top-p% sets and how they overlap: Jaccards, three-way, per layer, against chance.

    Layers frozen in training in any of the three RMs (`frozen_layers` of the summary) are left out of all
    three selections unless `include_frozen`: their neurons are never selected, each RM's p% is taken over
    the trainable layers' neurons, and the chance model (the hypergeometric test) draws from those only.
    With nothing frozen, the result is the same either way."""
    stat, hook = _word(Stat, stat, "statistic"), _word(HookPoint, hook, "hook")
    shared = _word(SharedMode, shared, "shared mode")
    found = _regime_captures(_captures_with_seeds(store=store, db=db, base_model=base_model), seed, hook)
    missing = set(REGIMES) - set(found)
    if missing:
        raise NotFound(f"{base_model} seed {seed}: no capture for the {', '.join(sorted(missing))} RM(s)")
    infos = {r: found[r] for r in REGIMES}
    cks = {r: infos[r]["checkpoint"] for r in REGIMES}
    frozen = _union_frozen(infos.values())
    excluded = () if include_frozen else frozen
    sets = {r: select_top(store=store, checkpoint=cks[r], p=p, stat=stat, hook=hook, info=infos[r],
                          frozen_layers=excluded) for r in REGIMES}
    key = ("overlap", *(_score_key(infos[r], stat, _objectives(r, Scope.own), hook) for r in REGIMES), float(p),
           str(shared), base_model, seed, frozen, bool(include_frozen))
    summary, masks = store.cache.get(key, lambda: _overlap(base_model, p, stat, seed, hook, shared, cks, sets,
                                                           frozen, bool(include_frozen)))
    return Overlap(summary=summary, masks=masks, captures=infos, key=key)


def _overlap(base_model: str, p: float, stat: Stat, seed: int, hook: HookPoint, shared: SharedMode,
             cks: dict[Regime, str], sets: dict[Regime, sel.Selection], frozen: tuple[int, ...] = (),
             include_frozen: bool = False) -> tuple[OverlapOut, dict[OverlapPart, Mask]]:
    H, R, M = (sets[r].mask for r in REGIMES)
    excluded = () if include_frozen else frozen
    selectable = ~sel.layer_exclusion(H.shape, excluded).any(axis=1)  # the layers selection drew from
    parts = sel.specific_and_shared(H, R, mode=shared)
    masks: dict[OverlapPart, Mask] = {OverlapPart.helpful: H, OverlapPart.harmless: R, OverlapPart.mixed: M,
                                      **{OverlapPart(k): m for k, m in parts.items()}}
    summary = OverlapOut(
        base_model=base_model, p=p, stat=stat, seed=seed, hook=hook, shared_mode=shared, checkpoints=cks,
        selection={r: SelectionOut(requested=s.requested, selected=s.selected, tied=s.tied, threshold=s.threshold)
                   for r, s in sets.items()},
        jaccard=JaccardOut(helpful_harmless=sel.set_jaccard(H, R), mixed_helpful=sel.set_jaccard(M, H),
                           mixed_harmless=sel.set_jaccard(M, R)),
        three_way=sel.three_way_overlap(H, R, M),
        significance=SignificanceOut(**sel.overlap_significance(H[selectable], R[selectable])),
        layer_fractions={r: LayerFractionsOut(**sel.layer_fractions(sets[r].mask)) for r in REGIMES},
        layer_counts={k: sel.layer_counts(m).tolist() for k, m in masks.items()},
        sizes={k: int(m.sum()) for k, m in masks.items()},
        venn=VennOut(H_only=int((H & ~R & ~M).sum()), R_only=int((R & ~H & ~M).sum()),
                     M_only=int((M & ~H & ~R).sum()), HR_only=int((H & R & ~M).sum()),
                     HM_only=int((H & M & ~R).sum()), RM_only=int((R & M & ~H).sum()), HRM=int((H & R & M).sum())),
        n_layers=int(H.shape[0]), n_neurons=int(H.shape[1]),
        frozen_layers=list(frozen), include_frozen=include_frozen,
        n_selectable=int(selectable.sum()) * int(H.shape[1]))
    return summary, masks


# -- one neuron ------------------------------------------------------------------------------------------
def neuron_detail(*, store: StatsStore, base_model: str, layer: int, index: int,
                  hook: HookPoint = HookPoint.down_proj_input,
                  captures: list[dict[str, Any]] | None = None) -> dict[str, list[dict[str, Any]]]:
    """One neuron's statistics in every captured RM of the base model at one hook, and its top examples
    (matched to their capture through the result key). `captures`: the base model's capture rows, when the
    caller has them already."""
    rows = [c for c in (captures if captures is not None else _capture_rows(store, base_model)) if c["hook"] == hook]
    keys = sorted({k for c in rows for k in c["result_keys"]})
    return {"stats": queries.neuron_stats(store, keys, base_model, hook, layer, index),
            "examples": queries.neuron_examples(store, {k: c["regime"] for c in rows for k in c["result_keys"]},
                                                layer, index)}


def neuron_ranks(*, store: StatsStore, db: Database, base_model: str, layer: int, index: int, stat: Stat,
                 hook: HookPoint, captures: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Where one neuron ranks in each captured RM by its own-objective score S: S and its percentile.
    `captures`: the base model's capture rows with seeds (`base_model_captures`), when the caller has them."""
    ranks = []
    rows = captures if captures is not None else _captures_with_seeds(store=store, db=db, base_model=base_model)
    for c in rows:
        if c["hook"] != hook:
            continue
        try:
            s = score_array(store=store, checkpoint=c["checkpoint"], stat=stat, hook=hook, info=c)
        except AppError:
            continue
        if layer >= s.shape[0] or index >= s.shape[1]:
            continue
        v = float(s[layer, index])
        # the share of the capture's neurons that score below this one, by bisection of its sorted scores
        ranked = store.cache.get(("sorted", score_key(c, stat, Scope.own, hook)), functools.partial(_sorted_finite, s))
        pct = float(np.searchsorted(ranked, v, side="left") / ranked.size * 100) \
            if ranked.size and math.isfinite(v) else None
        ranks.append({"regime": c["regime"], "checkpoint": c["checkpoint"], "seed": c["seed"],
                      "score": v if math.isfinite(v) else None, "percentile": pct,
                      "frozen": layer in c.get("frozen_layers", ())})
    return ranks


# -- named sets ---------------------------------------------------------------------------------------
def _set_id(base_model: str, neurons: dict[int, list[int]]) -> str:
    h = hashlib.sha256(repr((base_model, sorted(neurons.items()))).encode()).hexdigest()
    return h[:24]


def save_set(*, db: Database, name: str, base_model: str, mask: Mask, formula: dict[str, Any]) -> NeuronSet:
    """Store a set under a new name with its formula; the same neurons are never stored twice."""
    neurons = sel.mask_to_dict(mask)
    with db.session() as s:
        if s.scalars(select(NeuronSet).where(NeuronSet.name == name)).first() is not None:
            raise Conflict(f"a neuron set named {name!r} already exists")
        ns = NeuronSet(id=_set_id(base_model, neurons), name=name, base_model=base_model,
                       formula={**formula, "shape": list(mask.shape)},
                       neurons={str(k): v for k, v in neurons.items()}, size=int(mask.sum()))
        existing = s.get(NeuronSet, ns.id)
        if existing is not None:
            raise Conflict(f"the same neurons are already stored as set {existing.name!r}")
        s.add(ns)
    return ns


def find_set(*, db: Database, name: str) -> NeuronSet:
    with db.session() as s:
        ns = s.scalars(select(NeuronSet).where(NeuronSet.name == name)).first()
    if ns is None:
        raise NotFound(f"no neuron set named {name!r}")
    return ns


def stored_sets(*, db: Database, base_model: str | None = None) -> list[NeuronSet]:
    with db.session() as s:
        q = select(NeuronSet).order_by(NeuronSet.created_at)
        if base_model:
            q = q.where(NeuronSet.base_model == base_model)
        return list(s.scalars(q))


def set_mask(ns: NeuronSet) -> Mask:
    shape = tuple(ns.formula.get("shape", ()))
    return sel.dict_to_mask({int(k): v for k, v in ns.neurons.items()}, shape)


def combine_sets(*, db: Database, name: str, op: SetOp, names: list[str]) -> NeuronSet:
    """Set algebra over stored sets; the new set keeps its defining formula."""
    name, op = _set_name(name), _word(SetOp, op, "set operation")
    sets = [find_set(db=db, name=n) for n in names]
    if len({s.base_model for s in sets}) != 1:
        raise Invalid("sets of different base models cannot be combined")
    masks = [set_mask(s) for s in sets]
    if op == SetOp.difference:
        if len(masks) != 2:
            raise Invalid("difference takes exactly two sets")
        mask = sel.difference(masks[0], masks[1])
    else:
        mask = (sel.union if op == SetOp.union else sel.intersection)(*masks)
    return save_set(db=db, name=name, base_model=sets[0].base_model, mask=mask,
                    formula={"op": op, "args": names})


def set_from_top_p(*, store: StatsStore, db: Database, name: str, checkpoint: str, p: float, stat: Stat = Stat.A,
                   scope: Scope = Scope.own, hook: HookPoint = HookPoint.down_proj_input,
                   include_frozen: bool = False) -> NeuronSet:
    """Store the top-p% set of one captured checkpoint under a name, keeping its defining formula. The
    checkpoint's layers frozen in training are left out unless `include_frozen` (`select_top`)."""
    info = capture_info(store=store, checkpoint=checkpoint, hook=hook)
    base = info["base_model"]
    if not base:
        with db.session() as s:
            ck = s.get(Checkpoint, checkpoint)
            base = ck.base_model if ck is not None else None
    if not base:
        raise Invalid(f"the capture of checkpoint {checkpoint!r} names no base model")
    frozen = checkpoint_frozen_layers(db=db, checkpoints=[checkpoint], n_layers=int(info["n_layers"]))
    chosen = select_top(store=store, checkpoint=checkpoint, p=p, stat=stat, scope=scope, hook=hook, info=info,
                        frozen_layers=() if include_frozen else frozen)
    formula = {"kind": "top_p", "checkpoint": checkpoint, "regime": info["regime"], "p": p, "stat": stat,
               "scope": scope, "hook": hook, "requested": chosen.requested, "selected": chosen.selected,
               "tied": chosen.tied, "frozen_layers": list(frozen), "include_frozen": include_frozen}
    return save_set(db=db, name=name, base_model=base, mask=chosen.mask, formula=formula)


def set_from_overlap_part(*, store: StatsStore, db: Database, name: str, base_model: str, part: OverlapPart,
                          p: float = 10.0, stat: Stat = Stat.A, seed: int = 0,
                          hook: HookPoint = HookPoint.down_proj_input,
                          shared: SharedMode = SharedMode.intersection, include_frozen: bool = False) -> NeuronSet:
    """Store one part of the H/R/M overlap (e.g. the helpful-specific neurons) under a name; layers frozen
    in training are left out unless `include_frozen` (`compute_overlap`)."""
    part = _word(OverlapPart, part, "part")
    ov = compute_overlap(store=store, db=db, base_model=base_model, p=p, stat=stat, seed=seed, hook=hook,
                         shared=shared, include_frozen=include_frozen)
    formula = {"kind": "overlap_part", "base_model": base_model, "part": part, "p": p, "stat": stat,
               "seed": seed, "hook": hook, "shared_mode": shared, "checkpoints": dict(ov.summary.checkpoints),
               "frozen_layers": ov.summary.frozen_layers, "include_frozen": include_frozen}
    return save_set(db=db, name=name, base_model=base_model, mask=ov.masks[part], formula=formula)


def _set_name(name: str) -> str:
    name = name.strip()
    if not name:
        raise Invalid("a neuron set needs a non-blank name")
    return name


def create_set(*, store: StatsStore, db: Database, body: NeuronSetCreate) -> NeuronSet:
    """A new named set: a top-p% formula on one checkpoint, or one part of a base model's overlap."""
    name = _set_name(body.name)
    if body.part is not None:
        if not body.base_model:
            raise Invalid("an overlap part needs base_model (with part, p, stat, seed)")
        if body.checkpoint:
            raise Invalid("give either checkpoint (top-p% formula) or base_model + part, not both")
        return set_from_overlap_part(store=store, db=db, name=name, base_model=body.base_model, part=body.part,
                                     p=body.p, stat=body.stat, seed=body.seed, hook=body.hook, shared=body.shared,
                                     include_frozen=body.include_frozen)
    if body.checkpoint:
        return set_from_top_p(store=store, db=db, name=name, checkpoint=body.checkpoint, p=body.p, stat=body.stat,
                              scope=body.scope, hook=body.hook, include_frozen=body.include_frozen)
    raise Invalid("give either checkpoint (with p, stat, scope) or base_model and part "
                  f"({', '.join(OverlapPart)})")


# -- job submission ------------------------------------------------------------------------------------
def prepare_capture(services: Services, params: Any) -> str:
    from app.core.checks import check_checkpoint, check_model, load_checked_dataset, resolve_dataset

    ck = check_checkpoint(services, params.checkpoint)
    if params.base_model:
        params.base_model = check_model(params.base_model, roots=services.settings.data_roots)
    params.dataset = resolve_dataset(services, params.dataset)
    _, revision = load_checked_dataset(services, params.dataset)
    return f"{revision}:{ck.id}"


# -- capturing a missing hook ----------------------------------------------------------------------------
def missing_capture_params(*, store: StatsStore, db: Database, base_model: str, seed: int,
                           hook: HookPoint) -> list[dict[str, Any]]:
    """Capture job parameters for each RM of a view (base model, seed) not yet captured at `hook`: the same
    data and settings as its existing capture, at the new hook. 404 when the view has no capture at all."""
    from app.core.db import Run

    hook = _word(HookPoint, hook, "hook")
    rows = [r for r in _captures_with_seeds(store=store, db=db, base_model=base_model) if r["seed"] == seed]
    if not rows:
        raise NotFound(f"{base_model} seed {seed} has no capture to copy the settings from; capture it first")
    done = {r["checkpoint"] for r in rows if r["hook"] == hook}
    out: dict[str, dict[str, Any]] = {}
    with db.session() as s:
        for r in rows:
            ck = r["checkpoint"]
            if ck in done or ck in out:
                continue
            run = next((s.get(Run, k) for k in r["result_keys"] if s.get(Run, k) is not None), None)
            params = dict(run.params) if run is not None else {"checkpoint": ck, "base_model": base_model}
            out[ck] = {**params, "hook": str(hook)}
    if not out:
        raise Conflict(f"{base_model} seed {seed} is already captured at {hook}")
    return list(out.values())
