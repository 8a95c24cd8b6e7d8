"""Recorded live toggles: record one (idempotent on its id), list them, and measure how well the first-order
estimate agreed with the exact shift, overall, per objective, by set size and by the layers a set spans.

Only toggles whose exact rounds all ran (`state == done`) and that switched at least one neuron off count: a
cancelled or superseded toggle has a partial exact answer, and an empty set agrees trivially. A point is one
(toggle, objective) with an estimate and a complete exact answer; rank correlations pool the points of a group.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql import Select

from app.ablation.record_schemas import (
    MAX_WHAT,
    AgreementOut,
    AgreementPoint,
    AgreementRow,
    AgreementWorst,
    LayerSpan,
    SizeBucket,
    ToggleRecordIn,
    ToggleRecordOut,
    ToggleState,
    ToggleTimings,
)
from app.core.db import Database, LiveToggleRecord
from workers.contract.live import LiveEstimateAnswer, LiveRound
from workers.contract.vocab import OBJECTIVES

LIST_LIMIT, MAX_LIST_LIMIT = 100, 1000
AGREEMENT_LIMIT = 10_000
"""Newest toggles the agreement reads (the answer says when there were more)."""
WORST = 10
"""Sets listed as the estimate's largest misses."""
NO_EXACT, INCOMPLETE, EMPTY = "no exact answer", "exact incomplete", "empty set"


def record_toggle(db: Database, rec: ToggleRecordIn) -> str:
    """Store one finished toggle; returns its id. Recording an id that is already stored changes nothing
    (the first record wins), so a retried or duplicated call is harmless."""
    values = rec.model_dump(mode="json", exclude={"created_by"})
    row = LiveToggleRecord(**values)
    if rec.created_by:
        row.created_by = rec.created_by
    try:
        with db.session() as s:
            if s.get(LiveToggleRecord, rec.id) is None:
                s.add(row)
    except IntegrityError:  # the same id recorded concurrently: the other insert won
        with db.session() as s:
            if s.get(LiveToggleRecord, rec.id) is None:
                raise
    return rec.id


class LiveRunLike(Protocol):
    """What `record_run` reads of a live run (`app.ablation.runs.LiveRun`)."""

    id: str
    state: str
    meta: dict[str, Any]
    estimate: LiveEstimateAnswer | None
    rounds: dict[str, LiveRound]

    def timings(self) -> dict[str, float | None]: ...


RUN_STATES: dict[str, ToggleState] = {"done": ToggleState.done, "cancelled": ToggleState.cancelled,
                                      "abandoned": ToggleState.cancelled, "superseded": ToggleState.superseded}
"""A live run's end -> the recorded state; a run still running, or failed, is not recorded."""


def set_key(neurons: Mapping[str, Sequence[int]], mode: str, factor: float) -> str:
    """sha256 (hex) of the canonical set, mode and factor: the same toggle tried twice has the same key."""
    layers = sorted((int(k), sorted({int(i) for i in v})) for k, v in neurons.items() if v)
    canonical = {"neurons": {str(k): v for k, v in layers}, "mode": str(mode), "factor": float(factor)}
    return hashlib.sha256(json.dumps(canonical, separators=(",", ":")).encode()).hexdigest()


def _round_shifts(r: LiveRound | None) -> dict[str, dict[str, Any]] | None:
    """A streamed round's exact shifts per objective (objectives with no Δ yet left out; None when none has)."""
    if r is None:
        return None
    out = {o: {"delta_margin": v.delta_margin, "delta_accuracy": v.delta_accuracy,
               "delta_margin_ci": v.delta_margin_ci, "delta_accuracy_ci": v.delta_accuracy_ci,
               "n_pairs_done": v.n_done, "n_pairs": v.n_total}
           for o, v in r.objectives.items() if v.delta_margin is not None and v.delta_accuracy is not None}
    return out or None


def run_record(run: LiveRunLike) -> ToggleRecordIn | None:
    """The record of a finished live run: its estimate beside its exact answer so far (complete when done) and
    its control's; None for a run still running, a failed one, or one that never got its estimate."""
    state = RUN_STATES.get(str(run.state))
    if state is None or run.estimate is None:
        return None
    meta = run.meta
    neurons: dict[str, list[int]] = {str(k): list(v) for k, v in (meta.get("neurons") or {}).items()}
    layers = {k: len(v) for k, v in neurons.items() if v} or {str(k): int(n) for k, n in meta.get("per_layer", [])}
    known = set(ToggleTimings.model_fields)
    return ToggleRecordIn.model_validate({
        "id": run.id, "checkpoint": meta["checkpoint"], "base_model": meta["base_model"], "regime": meta.get("regime"),
        "what": (str(meta.get("what", "")) + str(meta.get("scope", "")))[:MAX_WHAT],
        "set_key": set_key(neurons, meta["mode"], meta["factor"]), "n_neurons": meta["n_neurons"], "layers": layers,
        "mode": meta["mode"], "factor": meta["factor"], "probe_limit": meta["probe_limit"], "state": state,
        "estimate": {o: {"delta_margin": e.delta_margin, "delta_accuracy": e.delta_accuracy}
                     for o, e in run.estimate.objectives.items()},
        "exact": _round_shifts(run.rounds.get("set")), "control_exact": _round_shifts(run.rounds.get("control")),
        "timings": {k: v for k, v in run.timings().items() if k in known},
        "created_by": str(meta.get("actor") or "")[:64] or None})


def record_run(db: Database, run: LiveRunLike) -> str | None:
    """Record a finished live run (`run_record`); returns its id, or None when there is nothing to record."""
    rec = run_record(run)
    return None if rec is None else record_toggle(db, rec)


def _filtered(query: Select[Any], checkpoint: str | None) -> Select[Any]:
    return query if checkpoint is None else query.where(LiveToggleRecord.checkpoint == checkpoint)


def _out(row: LiveToggleRecord) -> ToggleRecordOut:
    return ToggleRecordOut.model_validate({c.key: getattr(row, c.key) for c in LiveToggleRecord.__table__.columns})


def list_records(db: Database, *, checkpoint: str | None = None, limit: int = LIST_LIMIT) -> list[ToggleRecordOut]:
    """Recorded toggles, newest first (optionally of one checkpoint)."""
    limit = max(1, min(limit, MAX_LIST_LIMIT))
    query = _filtered(select(LiveToggleRecord), checkpoint)
    query = query.order_by(LiveToggleRecord.created_at.desc(), LiveToggleRecord.id).limit(limit)
    with db.session() as s:
        return [_out(r) for r in s.scalars(query)]


def recorded_checkpoints(db: Database) -> list[str]:
    """Checkpoints that have recorded toggles (the agreement page's filter)."""
    with db.session() as s:
        return list(s.scalars(select(LiveToggleRecord.checkpoint).distinct().order_by(LiveToggleRecord.checkpoint)
                              .limit(MAX_LIST_LIMIT)))


# -- agreement --------------------------------------------------------------------------------------------------
def size_bucket(n_neurons: int) -> SizeBucket:
    if n_neurons < 10:
        return SizeBucket.lt10
    if n_neurons < 100:
        return SizeBucket.lt100
    if n_neurons < 1000:
        return SizeBucket.lt1000
    return SizeBucket.ge1000


def n_layers(layers: dict[str, int]) -> int:
    """Layers a set has neurons in."""
    return sum(1 for n in layers.values() if n > 0)


def layer_span(layers_spanned: int) -> LayerSpan:
    return LayerSpan.several if layers_spanned > 1 else LayerSpan.one


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Spearman's rank correlation; None under 3 points or when either side is constant (it is undefined)."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr  # only here: the web process pays for scipy when the page is opened

    rho = float(spearmanr(x, y)[0])
    return rho if math.isfinite(rho) else None


def _mean(values: Iterable[float]) -> float | None:
    vals = list(values)
    return sum(vals) / len(vals) if vals else None


def _row(group: str, kind: str, points: Sequence[AgreementPoint]) -> AgreementRow:
    em, xm = [p.estimate_margin for p in points], [p.exact_margin for p in points]
    ea, xa = [p.estimate_accuracy for p in points], [p.exact_accuracy for p in points]
    return AgreementRow(group=group, kind=kind, n_sets=len({p.id for p in points}), n_points=len(points),
                        spearman_margin=spearman(em, xm), spearman_accuracy=spearman(ea, xa),
                        mae_margin=_mean(abs(e - x) for e, x in zip(em, xm, strict=True)),
                        mae_accuracy=_mean(abs(e - x) for e, x in zip(ea, xa, strict=True)),
                        mean_abs_exact_margin=_mean(abs(x) for x in xm),
                        mean_abs_exact_accuracy=_mean(abs(x) for x in xa))


def _points(rec: ToggleRecordOut) -> tuple[list[AgreementPoint], str | None]:
    """A finished toggle's points, or why it has none."""
    if rec.state != ToggleState.done:
        return [], str(rec.state)
    if rec.n_neurons == 0:
        return [], EMPTY
    if not rec.exact or not set(rec.exact) & set(rec.estimate):
        return [], NO_EXACT
    out = []
    for o in OBJECTIVES:
        est, ex = rec.estimate.get(o), rec.exact.get(o)
        if est is None or ex is None or ex.n_pairs == 0 or ex.n_pairs_done < ex.n_pairs:
            continue
        out.append(AgreementPoint(id=rec.id, checkpoint=rec.checkpoint, what=rec.what, objective=o,
                                  n_neurons=rec.n_neurons, n_layers=n_layers(rec.layers),
                                  estimate_margin=est.delta_margin, exact_margin=ex.delta_margin,
                                  estimate_accuracy=est.delta_accuracy, exact_accuracy=ex.delta_accuracy,
                                  exact_margin_ci=ex.delta_margin_ci, exact_accuracy_ci=ex.delta_accuracy_ci))
    return out, (None if out else INCOMPLETE)


def _grouped(kind: str, groups: Iterable[str], key: Callable[[AgreementPoint], str],
             points: Sequence[AgreementPoint]) -> list[AgreementRow]:
    return [_row(g, kind, [p for p in points if key(p) == g]) for g in groups]


def _worst(records: dict[str, ToggleRecordOut], points: Sequence[AgreementPoint]) -> list[AgreementWorst]:
    """Per set, its objective with the largest |estimate − exact| Δ margin; the WORST largest sets."""
    by_set: dict[str, AgreementPoint] = {}
    for p in points:
        seen = by_set.get(p.id)
        if seen is None or abs(p.estimate_margin - p.exact_margin) > abs(seen.estimate_margin - seen.exact_margin):
            by_set[p.id] = p
    top = sorted(by_set.values(), key=lambda p: (-abs(p.estimate_margin - p.exact_margin), p.id))[:WORST]
    out = []
    for p in top:
        rec = records[p.id]
        control = (rec.control_exact or {}).get(p.objective)
        out.append(AgreementWorst(id=rec.id, checkpoint=rec.checkpoint, regime=rec.regime, what=rec.what,
                                  n_neurons=rec.n_neurons, layers=rec.layers, mode=rec.mode, factor=rec.factor,
                                  objective=p.objective, estimate_margin=p.estimate_margin,
                                  exact_margin=p.exact_margin, error_margin=p.estimate_margin - p.exact_margin,
                                  control_margin=None if control is None else control.delta_margin,
                                  created_at=rec.created_at))
    return out


def agreement(db: Database, *, checkpoint: str | None = None, limit: int = AGREEMENT_LIMIT) -> AgreementOut:
    """How well the estimate predicted the exact shift over the newest `limit` finished toggles (optionally of
    one checkpoint): Spearman and MAE of Δ margin and Δ accuracy overall, per objective, per size bucket and
    per layer span, the sets it missed most, and every point for the calibration plots."""
    with db.session() as s:
        n_recorded = s.scalar(_filtered(select(func.count()).select_from(LiveToggleRecord), checkpoint)) or 0
        rows = s.scalars(_filtered(select(LiveToggleRecord), checkpoint)
                         .order_by(LiveToggleRecord.created_at.desc(), LiveToggleRecord.id).limit(limit))
        records = {r.id: _out(r) for r in rows}
    points: list[AgreementPoint] = []
    excluded: Counter[str] = Counter()
    for rec in records.values():
        got, why = _points(rec)
        points.extend(got)
        if why is not None:
            excluded[why] += 1
    points.sort(key=lambda p: (OBJECTIVES.index(p.objective), p.exact_margin, p.id))
    return AgreementOut(
        checkpoint=checkpoint, n_recorded=n_recorded, excluded=dict(sorted(excluded.items())),
        truncated=n_recorded > len(records), limit=limit, overall=_row("all", "overall", points),
        by_objective=_grouped("objective", [str(o) for o in OBJECTIVES], lambda p: str(p.objective), points),
        by_size=_grouped("size", [str(b) for b in SizeBucket], lambda p: size_bucket(p.n_neurons), points),
        by_layers=_grouped("layers", [str(sp) for sp in LayerSpan],
                           lambda p: layer_span(p.n_layers), points),
        worst=_worst(records, points), points=points, checkpoints=recorded_checkpoints(db))
