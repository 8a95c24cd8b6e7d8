"""Neuron JSON API: captures, scores, the H/R/M overlap and named neuron sets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.core.deps import DatabaseDep, StoreDep
from app.core.errors import Invalid, NotFound
from app.neurons import service
from app.neurons.schemas import (
    CaptureOut,
    NeuronSetCombine,
    NeuronSetCreate,
    NeuronSetOut,
    NeuronSetSummary,
    OverlapOut,
    Percent,
    ScoresOut,
)
from workers.contract.jobs import MAX_LAYERS, MAX_SEED
from workers.contract.vocab import HookPoint, Regime, Scope, SharedMode, Stat

router = APIRouter(tags=["neurons"])

Seed = Annotated[int, Query(ge=0, le=MAX_SEED)]
IncludeFrozen = Annotated[bool, Query(description="also select from layers frozen in training (left out by default)")]
Layer = Annotated[int | None, Query(gt=-MAX_LAYERS, lt=MAX_LAYERS, description="one layer (404 outside the capture)")]


@router.get("/api/neurons/captures")
def api_captures(store: StoreDep, db: DatabaseDep, base_model: str | None = None) -> list[CaptureOut]:
    """Every captured checkpoint: base model, regime, seed, hook, layers × neurons, result key."""
    return service.list_captures(store=store, db=db, base_model=base_model)


@router.get("/api/neurons/{base_model:path}/overlap")
def api_overlap(store: StoreDep, db: DatabaseDep, base_model: str, p: Annotated[Percent, Query()] = 10.0,
                stat: Stat = Stat.A, seed: Seed = 0, hook: HookPoint = HookPoint.down_proj_input,
                shared: SharedMode = SharedMode.intersection, include_frozen: IncludeFrozen = False) -> OverlapOut:
    """H, R, M top-p% sets of one base model and seed, and how they overlap (everything but raw masks). Layers
    frozen in training (`frozen_layers`) are left out of selection unless `include_frozen`."""
    return service.compute_overlap(store=store, db=db, base_model=base_model, p=p, stat=stat, seed=seed, hook=hook,
                                   shared=shared, include_frozen=include_frozen).summary


@router.get("/api/neurons/{base_model:path}/scores")
def api_scores(store: StoreDep, db: DatabaseDep, base_model: str, regime: Regime = Regime.mixed,
               stat: Stat = Stat.A, scope: Scope = Scope.own, seed: Seed = 0,
               hook: HookPoint = HookPoint.down_proj_input, layer: Layer = None,
               checkpoint: str | None = None) -> ScoresOut:
    """Scores S of one RM of a base model ([layers][neurons], or one layer's list with `layer`): the
    base model's `regime` RM of `seed`, or the named `checkpoint`."""
    if checkpoint is None:
        cks = service.find_regime_checkpoints(store=store, db=db, base_model=base_model, seed=seed, hook=hook)
        if regime not in cks:
            raise NotFound(f"{base_model} seed {seed}: no capture of the {regime} RM at hook '{hook}'")
        checkpoint, of_regime = cks[regime], str(regime)
    else:
        info = service.capture_info(store=store, checkpoint=checkpoint, hook=hook)
        if info["base_model"] != base_model:
            raise Invalid(f"checkpoint {checkpoint!r} is a {info['base_model']} RM, not {base_model}")
        of_regime = info["regime"]
    s = service.score_array(store=store, checkpoint=checkpoint, stat=stat, scope=scope, hook=hook)
    if layer is not None and not 0 <= layer < s.shape[0]:
        raise NotFound(f"layer {layer} out of range: {base_model} has layers 0-{s.shape[0] - 1}")
    frozen = service.checkpoint_frozen_layers(db=db, checkpoints=[checkpoint], n_layers=s.shape[0])
    return ScoresOut(base_model=base_model, checkpoint=checkpoint, regime=of_regime, stat=stat, scope=scope,
                     hook=hook, shape=list(s.shape), layer=layer,
                     scores=(s if layer is None else s[layer]).tolist(), frozen_layers=list(frozen))


@router.post("/api/neuron-sets", status_code=201)
def api_create_set(store: StoreDep, db: DatabaseDep, body: NeuronSetCreate) -> NeuronSetOut:
    """Store a top-p% set of one checkpoint, or one part of a base model's overlap, under a name."""
    return NeuronSetOut.of(service.create_set(store=store, db=db, body=body))


@router.post("/api/neuron-sets/combine", status_code=201)
def api_combine_sets(db: DatabaseDep, body: NeuronSetCombine) -> NeuronSetOut:
    """Union, intersection or difference (exactly two) of stored sets, stored under a new name."""
    return NeuronSetOut.of(service.combine_sets(db=db, name=body.name, op=body.op, names=body.args))


@router.get("/api/neuron-sets")
def api_list_sets(db: DatabaseDep, base_model: str | None = None) -> list[NeuronSetSummary]:
    return [NeuronSetSummary.of(ns) for ns in service.stored_sets(db=db, base_model=base_model)]


@router.get("/api/neuron-sets/{name:path}")
def api_get_set(db: DatabaseDep, name: str) -> NeuronSetOut:
    return NeuronSetOut.of(service.find_set(db=db, name=name))
