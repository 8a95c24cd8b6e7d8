"""Evaluation: validation at submission, and the read models behind the lab's API and pages.

Read functions take the store or database they need (keyword-only) and return `app.evaluation.schemas`
models; NaN/inf (an undefined metric) becomes None here, so every number survives strict JSON.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from app.core.checks import check_checkpoint, load_checked_dataset, resolve_dataset
from app.core.db import Checkpoint, Database, Run
from app.core.errors import Invalid, NotFound
from app.core.store import StatsStore
from app.evaluation import queries
from app.evaluation.schemas import (
    ALL_REGIMES,
    Calibration,
    CheckpointDetail,
    CheckpointListItem,
    CheckpointOut,
    CheckpointReliability,
    Comparison,
    EvaluationDetail,
    EvaluationRunOut,
    FlipBlock,
    FlipCounts,
    FlipItem,
    Flips,
    HistoryPoint,
    OverallAccuracy,
    RegimeAccuracy,
    ReliabilityBin,
    SeedSummaryRow,
    SubsetComparison,
    SubsetRowOut,
    TransferComparison,
    TransferRowOut,
    TypeAccuracy,
    TypeComparison,
)
from workers.contract.jobs import EvaluateParams
from workers.contract.vocab import OBJECTIVES, REGIMES, SINGLE_REGIMES, JobKind, Regime

if TYPE_CHECKING:
    from app.core.services import Services

FINAL_METRIC_KEYS: tuple[str, ...] = ("final_eval_loss", "final_eval_acc", "final_train_loss",
                                      "final_train_acc", "best_step", "steps", "n_train", "n_eval", "wall_s")
TRANSFER_METRICS: tuple[str, ...] = ("transferability", "jaccard_helpful", "jaccard_harmless")


def prepare_evaluate(services: Services, params: EvaluateParams) -> str:
    revs = [check_checkpoint(services, ck).id for ck in params.checkpoints]
    params.dataset = resolve_dataset(services, params.dataset)
    _, revision = load_checked_dataset(services, params.dataset)
    return revision + ":" + ",".join(revs)


# -- small pure helpers ------------------------------------------------------------------------------------


def finite(obj: Any) -> Any:
    """Replace NaN/inf (an undefined metric, e.g. transferability with nothing to transfer) by None, deeply,
    so the value survives strict JSON (the API and the embedded Plotly specs)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    return obj


def type_order(subset_type: str | None) -> int:
    """Helpful-type subsets first, then harmless-type, then others, then the overall row."""
    order: dict[str, int] = {t: i for i, t in enumerate(OBJECTIVES)}
    return order.get(subset_type or "", len(order) + 1 if subset_type == queries.OVERALL else len(order))


def regime_order(regime: str) -> int:
    return REGIMES.index(Regime(regime)) if regime in REGIMES else len(REGIMES)


def regimes_of_choice(choice: str) -> list[Regime]:
    """The train form's regime field: one regime, or 'all' for one job per regime."""
    if choice == ALL_REGIMES:
        return list(REGIMES)
    try:
        return [Regime(choice)]
    except ValueError as exc:
        raise Invalid(f"regime must be one of {', '.join(REGIMES)} or {ALL_REGIMES!r}, got {choice!r}") from exc


def parse_limit(limit: str) -> int | None:
    """The forms' 'pairs per objective' field: empty means no limit."""
    if not limit.strip():
        return None
    try:
        value = int(limit)
    except ValueError as exc:
        raise Invalid(f"pairs per objective must be a whole number, got {limit!r}") from exc
    if value < 1:
        raise Invalid(f"pairs per objective must be at least 1, got {value}")
    return value


def parse_seed(seed: str) -> int | None:
    """The comparison page's seed filter: empty means every seed."""
    if not seed.strip():
        return None
    try:
        return int(seed)
    except ValueError as exc:
        raise Invalid(f"seed must be a whole number, got {seed!r}") from exc


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def _covered(run: Run) -> list[str]:
    return list(run.params.get("checkpoints", []))


# -- checkpoints and evaluation runs (SQL) -----------------------------------------------------------------


def final_metrics(meta: dict[str, Any] | None) -> dict[str, Any]:
    """The headline numbers a training job left in its manifest summary (flat or under 'metrics')."""
    meta = meta or {}
    raw = meta.get("metrics")
    nested: dict[str, Any] = raw if isinstance(raw, dict) else {}
    out = {k: meta.get(k, nested.get(k)) for k in FINAL_METRIC_KEYS}
    return {k: v for k, v in finite(out).items() if v is not None}


def checkpoint_out(ck: Checkpoint) -> CheckpointOut:
    return CheckpointOut(id=ck.id, base_model=ck.base_model, regime=ck.regime, seed=ck.seed, preset=ck.preset,
                         job_id=ck.job_id, metrics=final_metrics(ck.meta),
                         created_at=ck.created_at.isoformat() if ck.created_at else None)


def checkpoints(*, db: Database, base_model: str | None = None) -> list[Checkpoint]:
    with db.session() as s:
        q = select(Checkpoint).order_by(Checkpoint.base_model, Checkpoint.regime, Checkpoint.seed)
        if base_model:
            q = q.where(Checkpoint.base_model == base_model)
        return list(s.scalars(q))


def base_models(*, db: Database) -> list[str]:
    with db.session() as s:
        return sorted(set(s.scalars(select(Checkpoint.base_model))))


def evaluation_runs(*, db: Database, checkpoint_ids: list[str] | None = None) -> list[Run]:
    """Stored evaluation results, newest first; with ids, only those covering at least one of them."""
    with db.session() as s:
        runs = list(s.scalars(select(Run).where(Run.kind == JobKind.evaluate).order_by(Run.created_at.desc())))
    if checkpoint_ids is None:
        return runs
    wanted = set(checkpoint_ids)
    return [r for r in runs if wanted & set(_covered(r))]


def evaluation_run(*, db: Database, key: str) -> Run:
    with db.session() as s:
        run = s.get(Run, key)
    if run is None or run.kind != JobKind.evaluate:
        raise NotFound(f"no stored evaluation with key {key!r}; list them at /api/lab/evaluations")
    return run


def run_out(run: Run) -> EvaluationRunOut:
    dataset = run.params.get("dataset") or {}
    return EvaluationRunOut(result_key=run.result_key, job_id=run.job_id, checkpoints=_covered(run),
                            split=dataset.get("split"), limit=dataset.get("limit"), source=dataset.get("source"),
                            created_at=run.created_at.isoformat() if run.created_at else None,
                            summary=finite(run.summary or {}))


def best_evaluation_key(*, db: Database, checkpoint_ids: list[str]) -> str | None:
    """The evaluation covering the most of the given checkpoints (the newest among equals)."""
    best: tuple[int, str] | None = None
    wanted = set(checkpoint_ids)
    for run in evaluation_runs(db=db, checkpoint_ids=checkpoint_ids):  # newest first: strict > keeps the newest
        n = len(wanted & set(_covered(run)))
        if best is None or n > best[0]:
            best = (n, run.result_key)
    return best[1] if best else None


def latest_accuracies(*, db: Database, store: StatsStore,
                      checkpoint_ids: list[str]) -> dict[str, OverallAccuracy]:
    """Per checkpoint, the overall accuracy (subset 'all') of the newest evaluation that covers it."""
    if not checkpoint_ids:
        return {}
    order = {r.result_key: i for i, r in enumerate(evaluation_runs(db=db, checkpoint_ids=checkpoint_ids))}
    rows = [r for r in queries.overall_rows(store, checkpoint_ids) if r["result_key"] in order]
    types: dict[tuple[str, str], dict[str, float]] = {}
    for t in queries.type_rows(store, checkpoint_ids):
        if t["subset_type"] and t["accuracy"] is not None:
            types.setdefault((t["result_key"], t["checkpoint"]), {})[t["subset_type"]] = float(t["accuracy"])
    out: dict[str, OverallAccuracy] = {}
    for row in sorted(rows, key=lambda r: order[r["result_key"]]):
        if row["checkpoint"] in out:
            continue
        by_type = dict(sorted(types.get((row["result_key"], row["checkpoint"]), {}).items()))
        macro = sum(by_type.values()) / len(by_type) if by_type else None
        out[row["checkpoint"]] = OverallAccuracy.model_validate(
            {**finite(row), "by_type": by_type, "macro_accuracy": macro})
    return out


def checkpoint_list(*, db: Database, store: StatsStore, base_model: str | None = None) -> list[CheckpointListItem]:
    cks = checkpoints(db=db, base_model=base_model)
    acc = latest_accuracies(db=db, store=store, checkpoint_ids=[c.id for c in cks])
    return [CheckpointListItem(**checkpoint_out(c).model_dump(), test=acc.get(c.id)) for c in cks]


def checkpoint_detail(*, db: Database, ck: Checkpoint) -> CheckpointDetail:
    runs = evaluation_runs(db=db, checkpoint_ids=[ck.id])
    return CheckpointDetail(**checkpoint_out(ck).model_dump(), meta=finite(ck.meta or {}),
                            evaluations=[run_out(r) for r in runs])


# -- one evaluation (DuckDB) -------------------------------------------------------------------------------


def training_history(*, store: StatsStore, checkpoint: str) -> list[HistoryPoint]:
    return [HistoryPoint.model_validate(r) for r in finite(queries.training_history(store, checkpoint))]


def subset_rows(*, store: StatsStore, key: str, checkpoint_ids: list[str] | None = None) -> list[SubsetRowOut]:
    """Subset rows of one evaluation (of the given checkpoints), by regime, seed and subset."""
    return [SubsetRowOut.model_validate(r) for r in finite(queries.subset_rows(store, key, checkpoint_ids))]


def reliability(*, store: StatsStore, key: str, checkpoint: str) -> list[ReliabilityBin]:
    return [ReliabilityBin.model_validate(r) for r in finite(queries.reliability(store, key, checkpoint))]


def evaluation_detail(*, store: StatsStore, run: Run) -> EvaluationDetail:
    """Everything one evaluation stored: subset rows, the seed summary, reliability bins, transfer rows."""
    key = run.result_key
    subsets = subset_rows(store=store, key=key)
    cks = sorted({r.checkpoint for r in subsets})
    return EvaluationDetail(
        **run_out(run).model_dump(), subsets=subsets,
        seed_summary=[SeedSummaryRow.model_validate(r) for r in finite(queries.seed_summary(store, key))],
        reliability={ck: reliability(store=store, key=key, checkpoint=ck) for ck in cks},
        transfer=[TransferRowOut.model_validate(r) for r in finite(queries.transfer(store, key))])


def flips(*, store: StatsStore, run: Run, a: str, b: str, limit: int) -> Flips:
    covered = set(_covered(run))
    for ck in (a, b):
        if ck not in covered:
            raise NotFound(f"checkpoint {ck!r} is not part of evaluation {run.result_key!r}")
    counts = FlipCounts.model_validate(queries.flip_counts(store, run.result_key, a, b))
    items = queries.flipped_items(store, run.result_key, a, b, min(max(limit, 1), 10_000))
    return Flips(result_key=run.result_key, a=a, b=b, **counts.model_dump(),
                 items=[FlipItem.model_validate(x) for x in finite(items)])


# -- the three regimes side by side ------------------------------------------------------------------------


def comparison(*, db: Database, store: StatsStore, base_model: str, seed: int | None = None,
               key: str | None = None, flip_limit: int = 100) -> Comparison:
    """The three regimes of one base model in one evaluation, side by side.

    Per subset and regime: the mean accuracy over the seeds present with its sample std (0 for one seed)
    and, for one seed, its bootstrap CI; per subset type the mean over that type's subsets (per seed, then
    mean ± std over seeds); transfer rows averaged over seeds; each RM's reliability bins and calibration;
    the items whose verdict flips between the mixed RM and each single RM (one seed). NotFound when the
    base model has no checkpoints (or none with that seed), or an explicit evaluation covers none of them.
    """
    explicit = bool(key)
    if key:
        evaluation_run(db=db, key=key)
    cks = [c for c in checkpoints(db=db, base_model=base_model) if seed is None or c.seed == seed]
    if not cks:
        known = ", ".join(base_models(db=db)) or "none yet"
        what = f"base model {base_model!r}" + (f" with seed {seed}" if seed is not None else "")
        raise NotFound(f"no checkpoints for {what}; trained base models: {known}")
    ids = [c.id for c in cks]
    key = key or best_evaluation_key(db=db, checkpoint_ids=ids)
    by_id = {c.id: c for c in cks}
    out = Comparison(base_model=base_model, seed=seed, result_key=key, seeds=sorted({c.seed for c in cks}),
                     checkpoints={r: [checkpoint_out(c) for c in cks if c.regime == r] for r in REGIMES},
                     evaluated=[])
    if key is None:
        return out
    rows = [r for r in subset_rows(store=store, key=key, checkpoint_ids=ids) if r.checkpoint in by_id]
    evaluated = sorted({r.checkpoint for r in rows})
    if explicit and not evaluated:
        raise NotFound(f"evaluation {key!r} has no results for base model {base_model!r}")
    out.evaluated = [checkpoint_out(by_id[c]) for c in evaluated]
    out.subsets = _subsets(rows)
    out.types = _types(rows)
    out.transfer = _transfer(queries.transfer(store, key), base_model, seed)
    for ck in sorted(evaluated, key=lambda c: (regime_order(by_id[c].regime), by_id[c].seed)):
        c = by_id[ck]
        bins = [b for b in reliability(store=store, key=key, checkpoint=ck) if b.scope == queries.OVERALL]
        out.reliability.append(CheckpointReliability(checkpoint=ck, regime=c.regime, seed=c.seed, bins=bins))
        overall = next((r for r in rows if r.checkpoint == ck and r.subset == queries.OVERALL), None)
        if overall:
            out.calibration.append(Calibration(checkpoint=ck, regime=c.regime, seed=c.seed,
                                               accuracy=overall.accuracy, ece=overall.ece, brier=overall.brier,
                                               nll=overall.nll))
    out.flips = _flips(store, key, {(by_id[c].regime, by_id[c].seed): c for c in evaluated}, flip_limit)
    return out


def _subsets(rows: list[SubsetRowOut]) -> list[SubsetComparison]:
    grouped: dict[tuple[str, str | None], dict[str, list[SubsetRowOut]]] = {}
    for r in rows:
        grouped.setdefault((r.subset, r.subset_type), {}).setdefault(r.regime or "", []).append(r)
    out = []
    for (subset, stype), regs in sorted(grouped.items(), key=lambda kv: (type_order(kv[0][1]), kv[0][0])):
        entry = SubsetComparison(subset=subset, subset_type=stype, regimes={})
        for regime, rs in regs.items():
            mean, std = _mean_std([x.accuracy for x in rs])
            one = rs[0] if len(rs) == 1 else None
            entry.regimes[regime] = RegimeAccuracy(
                n_seeds=len(rs), seeds=sorted(x.seed for x in rs if x.seed is not None), mean=mean, std=std,
                ci_lo=one.ci_lo if one else None, ci_hi=one.ci_hi if one else None, n_items=rs[0].n_items,
                length_longer=_mean_std([x.length_longer for x in rs])[0],
                length_shorter=_mean_std([x.length_shorter for x in rs])[0])
        out.append(entry)
    return out


def _types(rows: list[SubsetRowOut]) -> list[TypeComparison]:
    """Per subset type: the mean over the type's subsets for each seed, then mean ± std over seeds."""
    per_seed: dict[tuple[str, str], dict[int | None, list[float | None]]] = {}
    for r in rows:
        if r.subset != queries.OVERALL and r.subset_type in OBJECTIVES:
            per_seed.setdefault((r.subset_type, r.regime or ""), {}).setdefault(r.seed, []).append(r.accuracy)
    out = []
    for stype in OBJECTIVES:
        regs: dict[str, TypeAccuracy] = {}
        for regime in REGIMES:
            seeds_acc = per_seed.get((stype, regime))
            if not seeds_acc:
                continue
            mean, std = _mean_std([_mean_std(v)[0] for v in seeds_acc.values()])
            regs[regime] = TypeAccuracy(mean=mean, std=std, n_seeds=len(seeds_acc),
                                        n_subsets=max(len(v) for v in seeds_acc.values()))
        if regs:
            out.append(TypeComparison(subset_type=stype, regimes=regs))
    return out


def _transfer(rows: list[dict[str, Any]], base_model: str, seed: int | None) -> list[TransferComparison]:
    """Transfer rows (mixed vs the single RMs of the same seed), averaged over seeds."""
    grouped: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for t in rows:
        if t["base_model"] == base_model and (seed is None or t["seed"] == seed):
            grouped.setdefault((t["subset"], t["subset_type"]), []).append(t)
    out = []
    for (subset, stype), ts in sorted(grouped.items(), key=lambda kv: (type_order(kv[0][1]), kv[0][0])):
        entry: dict[str, Any] = {"subset": subset, "subset_type": stype, "n_seeds": len(ts),
                                 "n_items": ts[0]["n_items"]}
        for m in TRANSFER_METRICS:
            entry[m], entry[m + "_std"] = _mean_std([x[m] for x in ts])
        out.append(TransferComparison.model_validate(entry))
    return out


def _flips(store: StatsStore, key: str, by_regime_seed: dict[tuple[str, int], str], limit: int) -> list[FlipBlock]:
    """Verdict flips between the mixed RM and each single RM, for the first seed that has a mixed RM."""
    mixed_seeds = sorted(s for (r, s) in by_regime_seed if r == Regime.mixed)
    if not mixed_seeds:
        return []
    seed = mixed_seeds[0]
    mixed = by_regime_seed[(Regime.mixed, seed)]
    out = []
    for single in SINGLE_REGIMES:
        other = by_regime_seed.get((single, seed))
        if other is None:
            continue
        counts = queries.flip_counts(store, key, mixed, other)
        items = queries.flipped_items(store, key, mixed, other, limit)
        out.append(FlipBlock(seed=seed, single=single, mixed_checkpoint=mixed, single_checkpoint=other,
                             n_flipped=counts["n_flipped"], mixed_right=counts["a_only"],
                             single_right=counts["b_only"], rows=[FlipItem.model_validate(x) for x in finite(items)]))
    return out

