"""Neuron scores, top-p% selection with ties, named sets and overlap analytics over DuckDB.

Scores follow METHOD.md §3: per side, a token-weighted mean over the objectives in scope, then
S = (X_chosen + X_rejected) / 2. Selection is one global threshold θ = the (100 − p)th percentile
(linear interpolation, as numpy's default) over every (layer, neuron) of the model, S ≥ θ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from sqlalchemy import select

from app.core.db import Checkpoint, NeuronSet
from app.core.errors import Conflict, Invalid, NotFound
from workers.neurons import selection as sel

if TYPE_CHECKING:
    from app.core.services import Services

Stat = Literal["A", "C", "P"]
STAT_COLUMN = {"A": "mean", "C": "mean_sq_change", "P": "frac_pos"}
SCOPES = ("own", "helpful", "harmless", "all")
REGIME_SCOPE = {"helpful": ["helpful"], "harmless": ["harmless"], "mixed": ["helpful", "harmless"]}


@dataclass
class ScoredSelection:
    checkpoint: str
    stat: str
    p: float
    mask: np.ndarray
    threshold: float
    requested: int
    selected: int
    tied: bool


def _objectives(regime: str, scope: str) -> list[str]:
    if scope == "own":
        return REGIME_SCOPE.get(regime, ["helpful", "harmless"])
    if scope == "all":
        return ["helpful", "harmless"]
    if scope in ("helpful", "harmless"):
        return [scope]
    raise Invalid(f"unknown scope {scope!r}; one of {SCOPES}")


def captured_checkpoints(services: Services, base_model: str | None = None) -> list[dict[str, Any]]:
    rows = services.store.query(
        "SELECT checkpoint, any_value(base_model) AS base_model, any_value(regime) AS regime, hook,"
        " max(layer) + 1 AS n_layers, max(neuron) + 1 AS n_neurons, any_value(result_key) AS result_key"
        " FROM neuron_stats GROUP BY checkpoint, hook ORDER BY base_model, regime")
    if base_model:
        rows = [r for r in rows if r["base_model"] == base_model]
    with services.db.session() as s:
        seeds = {c.id: c.seed for c in s.scalars(select(Checkpoint))}
    for r in rows:
        r["seed"] = seeds.get(r["checkpoint"], 0)
    return rows


def _capture(services: Services, checkpoint: str, hook: str) -> dict[str, Any]:
    for r in captured_checkpoints(services):
        if r["checkpoint"] == checkpoint and r["hook"] == hook:
            return r
    raise NotFound(f"no neuron capture for checkpoint {checkpoint!r} at hook {hook!r}; run `tension capture` first")


def _score_sql(stat: Stat, n_obj: int) -> str:
    col = STAT_COLUMN[stat]
    return (
        "WITH per_side AS (SELECT layer, neuron, side,"
        f" sum(n_tokens * {col}) / sum(n_tokens) AS x FROM neuron_stats"
        f" WHERE checkpoint = ? AND hook = ? AND objective IN ({','.join('?' * n_obj)})"
        " GROUP BY layer, neuron, side)"
        " SELECT layer, neuron, avg(x) AS score, count(*) AS n_sides FROM per_side GROUP BY layer, neuron")


def scores(services: Services, checkpoint: str, stat: Stat = "A", scope: str = "own",
           hook: str = "down_proj_input") -> np.ndarray:
    """S as a [layers, neurons] array."""
    if stat not in STAT_COLUMN:
        raise Invalid(f"unknown statistic {stat!r}; one of A (magnitude), C (change), P (probability)")
    info = _capture(services, checkpoint, hook)
    objs = _objectives(info["regime"], scope)
    rows = services.store.query(_score_sql(stat, len(objs)), [checkpoint, hook, *objs])
    out = np.full((info["n_layers"], info["n_neurons"]), np.nan)
    for r in rows:
        out[r["layer"], r["neuron"]] = r["score"]
    if stat == "C" and np.isnan(out).all():
        raise Invalid("this capture has no change statistic (no base model was given)")
    return out


def select_top(services: Services, checkpoint: str, p: float, stat: Stat = "A", scope: str = "own",
               hook: str = "down_proj_input") -> ScoredSelection:
    """Top-p% of the score array by `workers.neurons.selection.top_percent`: θ = the (100 − p)th percentile
    (linear), S ≥ θ; ties reported as selected beyond what p% and interpolation explain."""
    if not 0 <= p <= 100:
        raise Invalid(f"p must be within [0, 100], got {p}")
    try:
        chosen = sel.top_percent(scores(services, checkpoint, stat, scope, hook), p)
    except ValueError as exc:  # NaN scores: a capture with missing statistics
        raise Invalid(f"cannot select from checkpoint {checkpoint!r}: {exc}") from exc
    return ScoredSelection(checkpoint, stat, p, chosen.mask, chosen.threshold, chosen.requested, chosen.selected,
                           chosen.tied)


def regime_checkpoints(services: Services, base_model: str, seed: int, hook: str) -> dict[str, str]:
    """The captured helpful, harmless and mixed checkpoints of one base model and seed."""
    out: dict[str, str] = {}
    for r in captured_checkpoints(services, base_model):
        if r["seed"] == seed and r["hook"] == hook and r["regime"] in ("helpful", "harmless", "mixed"):
            out.setdefault(r["regime"], r["checkpoint"])
    return out


def overlap(services: Services, base_model: str, p: float = 10.0, stat: Stat = "A", seed: int = 0,
            hook: str = "down_proj_input", shared_mode: str = "intersection") -> dict[str, Any]:
    """H, R, M top-p% sets and how they overlap: Jaccards, three-way, per layer, against chance."""
    cks = regime_checkpoints(services, base_model, seed, hook)
    missing = {"helpful", "harmless", "mixed"} - set(cks)
    if missing:
        raise NotFound(f"{base_model} seed {seed}: no capture for the {', '.join(sorted(missing))} RM(s)")
    sets = {r: select_top(services, cks[r], p, stat, "own", hook) for r in ("helpful", "harmless", "mixed")}
    H, R, Mx = (sets[r].mask for r in ("helpful", "harmless", "mixed"))
    parts = sel.specific_and_shared(H, R, mode=shared_mode)  # type: ignore[arg-type]
    return {
        "base_model": base_model, "p": p, "stat": stat, "seed": seed, "hook": hook, "shared_mode": shared_mode,
        "checkpoints": cks,
        "selection": {r: {"requested": s.requested, "selected": s.selected, "tied": s.tied,
                          "threshold": s.threshold} for r, s in sets.items()},
        "masks": {"helpful": H, "harmless": R, "mixed": Mx, **parts},
        "jaccard": {"helpful_harmless": sel.set_jaccard(H, R), "mixed_helpful": sel.set_jaccard(Mx, H),
                    "mixed_harmless": sel.set_jaccard(Mx, R)},
        "three_way": sel.three_way_overlap(H, R, Mx),
        "significance": sel.overlap_significance(H, R),
        "layer_fractions": {r: sel.layer_fractions(m) for r, m in (("helpful", H), ("harmless", R), ("mixed", Mx))},
        "layer_counts": {k: sel.layer_counts(m).tolist() for k, m in
                         {"helpful": H, "harmless": R, "mixed": Mx, **parts}.items()},
        "sizes": {k: int(m.sum()) for k, m in {"helpful": H, "harmless": R, "mixed": Mx, **parts}.items()},
        "venn": {"H_only": int((H & ~R & ~Mx).sum()), "R_only": int((R & ~H & ~Mx).sum()),
                 "M_only": int((Mx & ~H & ~R).sum()), "HR_only": int((H & R & ~Mx).sum()),
                 "HM_only": int((H & Mx & ~R).sum()), "RM_only": int((R & Mx & ~H).sum()),
                 "HRM": int((H & R & Mx).sum())},
    }


# -- named sets ---------------------------------------------------------------------------------------
def _set_id(base_model: str, neurons: dict[int, list[int]]) -> str:
    h = hashlib.sha256(repr((base_model, sorted(neurons.items()))).encode()).hexdigest()
    return h[:24]


def save_set(services: Services, name: str, base_model: str, mask: np.ndarray, formula: dict[str, Any]) -> NeuronSet:
    neurons = sel.mask_to_dict(mask)
    with services.db.session() as s:
        if s.scalars(select(NeuronSet).where(NeuronSet.name == name)).first() is not None:
            raise Conflict(f"a neuron set named {name!r} already exists")
        ns = NeuronSet(id=_set_id(base_model, neurons), name=name, base_model=base_model, formula=formula,
                       neurons={str(k): v for k, v in neurons.items()}, size=int(mask.sum()))
        ns.formula = {**formula, "shape": list(mask.shape)}
        existing = s.get(NeuronSet, ns.id)
        if existing is not None:
            raise Conflict(f"the same neurons are already stored as set {existing.name!r}")
        s.add(ns)
    return ns


def get_set(services: Services, name: str) -> NeuronSet:
    with services.db.session() as s:
        ns = s.scalars(select(NeuronSet).where(NeuronSet.name == name)).first()
    if ns is None:
        raise NotFound(f"no neuron set named {name!r}")
    return ns


def set_mask(ns: NeuronSet) -> np.ndarray:
    shape = tuple(ns.formula.get("shape", ()))
    return sel.dict_to_mask({int(k): v for k, v in ns.neurons.items()}, shape)


def list_sets(services: Services, base_model: str | None = None) -> list[NeuronSet]:
    with services.db.session() as s:
        q = select(NeuronSet).order_by(NeuronSet.created_at)
        if base_model:
            q = q.where(NeuronSet.base_model == base_model)
        return list(s.scalars(q))


def combine_sets(services: Services, name: str, op: str, names: list[str]) -> NeuronSet:
    """Set algebra over stored sets; the new set keeps its defining formula."""
    ops = {"union": sel.union, "intersection": sel.intersection}
    sets = [get_set(services, n) for n in names]
    if len({s.base_model for s in sets}) != 1:
        raise Invalid("sets of different base models cannot be combined")
    masks = [set_mask(s) for s in sets]
    if op == "difference":
        if len(masks) != 2:
            raise Invalid("difference takes exactly two sets")
        mask = sel.difference(masks[0], masks[1])
    elif op in ops:
        mask = ops[op](*masks)
    else:
        raise Invalid(f"unknown set operation {op!r}; one of union, intersection, difference")
    return save_set(services, name, sets[0].base_model, mask, {"op": op, "args": names})


def neuron_detail(services: Services, base_model: str, layer: int, index: int) -> dict[str, Any]:
    """One neuron's statistics in every captured RM of the base model, and its top examples."""
    stats = services.store.query(
        "SELECT checkpoint, regime, hook, objective, side, mean, mean_sq_change, frac_pos, var, max, n_tokens"
        " FROM neuron_stats WHERE base_model = ? AND layer = ? AND neuron = ? ORDER BY regime, objective, side",
        [base_model, layer, index])
    examples = services.store.query(
        "SELECT e.checkpoint, s.regime, e.objective, e.side, e.rank, e.pair_id, e.token_pos, e.value,"
        " e.text_before, e.token, e.text_after FROM neuron_examples e"
        " JOIN (SELECT DISTINCT checkpoint, regime FROM neuron_stats WHERE base_model = ?) s USING (checkpoint)"
        " WHERE e.layer = ? AND e.neuron = ? ORDER BY s.regime, e.objective, e.side, e.rank",
        [base_model, layer, index])
    return {"stats": stats, "examples": examples}


def prepare_capture(services: Services, params: Any) -> str:
    from app.core.checks import check_checkpoint, check_model, load_checked_dataset, resolve_dataset

    ck = check_checkpoint(services, params.checkpoint)
    if params.base_model:
        check_model(params.base_model)
    params.dataset = resolve_dataset(services, params.dataset)
    _, revision = load_checked_dataset(services, params.dataset)
    return f"{revision}:{ck.id}"


# -- pages and API helpers (read-only, added for the neuron routes) ------------------------------------
OVERLAP_PARTS = ("helpful", "harmless", "mixed", "helpful_specific", "harmless_specific", "shared")


def base_model_shape(services: Services, base_model: str, hook: str = "down_proj_input") -> tuple[int, int]:
    """(n_layers, n_neurons) of a base model's captures at one hook; 404 when none is stored."""
    rows = [r for r in captured_checkpoints(services, base_model) if r["hook"] == hook]
    if not rows:
        hooks = sorted({r["hook"] for r in captured_checkpoints(services, base_model)})
        extra = f" (captured hooks: {', '.join(hooks)})" if hooks else ""
        raise NotFound(f"no neuron capture of base model {base_model!r} at hook {hook!r}{extra}")
    return max(int(r["n_layers"]) for r in rows), max(int(r["n_neurons"]) for r in rows)


def neuron_detail_at_hook(services: Services, base_model: str, layer: int, index: int,
                          hook: str = "down_proj_input") -> dict[str, Any]:
    """neuron_detail restricted to one hook: examples are matched to their capture through result_key."""
    stats = services.store.query(
        "SELECT checkpoint, regime, hook, objective, side, mean, mean_sq_change, frac_pos, var, max, n_tokens"
        " FROM neuron_stats WHERE base_model = ? AND hook = ? AND layer = ? AND neuron = ?"
        " ORDER BY regime, checkpoint, objective, side", [base_model, hook, layer, index])
    examples = services.store.query(
        "SELECT e.checkpoint, s.regime, e.objective, e.side, e.rank, e.pair_id, e.token_pos, e.value,"
        " e.text_before, e.token, e.text_after FROM neuron_examples e"
        " JOIN (SELECT DISTINCT result_key, regime FROM neuron_stats WHERE base_model = ? AND hook = ?) s"
        " USING (result_key) WHERE e.layer = ? AND e.neuron = ?"
        " ORDER BY s.regime, e.checkpoint, e.objective, e.side, e.rank", [base_model, hook, layer, index])
    return {"stats": stats, "examples": examples}


def set_from_top_p(services: Services, name: str, checkpoint: str, p: float, stat: Stat = "A",
                   scope: str = "own", hook: str = "down_proj_input") -> NeuronSet:
    """Store the top-p% set of one captured checkpoint under a name, keeping its defining formula."""
    info = _capture(services, checkpoint, hook)
    base = info["base_model"]
    if not base:
        with services.db.session() as s:
            ck = s.get(Checkpoint, checkpoint)
            base = ck.base_model if ck is not None else None
    if not base:
        raise Invalid(f"the capture of checkpoint {checkpoint!r} names no base model")
    chosen = select_top(services, checkpoint, p, stat, scope, hook)
    formula = {"kind": "top_p", "checkpoint": checkpoint, "regime": info["regime"], "p": p, "stat": stat,
               "scope": scope, "hook": hook, "requested": chosen.requested, "selected": chosen.selected,
               "tied": chosen.tied}
    return save_set(services, name, base, chosen.mask, formula)


def set_from_overlap_part(services: Services, name: str, base_model: str, part: str, p: float = 10.0,
                          stat: Stat = "A", seed: int = 0, hook: str = "down_proj_input",
                          shared_mode: str = "intersection") -> NeuronSet:
    """Store one part of the H/R/M overlap (e.g. the helpful-specific neurons) under a name."""
    if part not in OVERLAP_PARTS:
        raise Invalid(f"unknown part {part!r}; one of {', '.join(OVERLAP_PARTS)}")
    ov = overlap(services, base_model, p, stat, seed, hook, shared_mode)
    formula = {"kind": "overlap_part", "base_model": base_model, "part": part, "p": p, "stat": stat,
               "seed": seed, "hook": hook, "shared_mode": shared_mode, "checkpoints": ov["checkpoints"]}
    return save_set(services, name, base_model, ov["masks"][part], formula)
