"""Evaluation: validation at submission, and the queries behind the RM and comparison pages."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from app.core.checks import check_checkpoint, load_checked_dataset, resolve_dataset
from app.core.db import Checkpoint, Run
from workers.contract.jobs import EvaluateParams

if TYPE_CHECKING:
    from app.core.services import Services


def prepare_evaluate(services: Services, params: EvaluateParams) -> str:
    revs = [check_checkpoint(services, ck).id for ck in params.checkpoints]
    params.dataset = resolve_dataset(services, params.dataset)
    _, revision = load_checked_dataset(services, params.dataset)
    return revision + ":" + ",".join(revs)


def checkpoints(services: Services, base_model: str | None = None) -> list[Checkpoint]:
    with services.db.session() as s:
        q = select(Checkpoint).order_by(Checkpoint.base_model, Checkpoint.regime, Checkpoint.seed)
        if base_model:
            q = q.where(Checkpoint.base_model == base_model)
        return list(s.scalars(q))


def latest_evaluation_key(services: Services, checkpoint_ids: list[str]) -> str | None:
    """The newest evaluation result that covers every given checkpoint."""
    with services.db.session() as s:
        runs = list(s.scalars(select(Run).where(Run.kind == "evaluate").order_by(Run.created_at.desc())))
    for run in runs:
        if set(checkpoint_ids) <= set(run.params.get("checkpoints", [])):
            return run.result_key
    return None


def subset_rows(services: Services, key: str,
                checkpoint_ids: list[str] | None = None) -> list[dict[str, Any]]:
    sql = "SELECT * FROM eval_subsets WHERE result_key = ?"
    args: list[Any] = [key]
    if checkpoint_ids:
        sql += f" AND checkpoint IN ({','.join('?' * len(checkpoint_ids))})"
        args += checkpoint_ids
    return services.store.query(sql + " ORDER BY regime, seed, subset", args)


def seed_summary(services: Services, key: str) -> list[dict[str, Any]]:
    """Mean ± sample std over seeds, per regime and subset (the paper's reporting unit)."""
    return services.store.query(
        "SELECT base_model, regime, subset, subset_type, count(*) AS n_seeds, avg(accuracy) AS mean_accuracy,"
        " coalesce(stddev_samp(accuracy), 0) AS std_accuracy, avg(ci_lo) AS ci_lo, avg(ci_hi) AS ci_hi,"
        " avg(length_longer) AS length_longer, avg(length_shorter) AS length_shorter, avg(ece) AS ece"
        " FROM eval_subsets WHERE result_key = ? GROUP BY ALL ORDER BY base_model, subset, regime", [key])


def reliability(services: Services, key: str, checkpoint: str) -> list[dict[str, Any]]:
    return services.store.query(
        "SELECT scope, bin_lo, bin_hi, count, mean_confidence, accuracy FROM eval_reliability"
        " WHERE result_key = ? AND checkpoint = ? ORDER BY scope, bin_lo", [key, checkpoint])


def transfer(services: Services, key: str) -> list[dict[str, Any]]:
    return services.store.query("SELECT * FROM eval_transfer WHERE result_key = ? ORDER BY seed, subset",
                                [key])


def training_history(services: Services, checkpoint: str) -> list[dict[str, Any]]:
    return services.store.query(
        "SELECT step, epoch, train_loss, train_acc, eval_loss, eval_acc FROM training_history"
        " WHERE checkpoint = ? ORDER BY step", [checkpoint])


def flipped_items(services: Services, key: str, a: str, b: str, limit: int = 200) -> list[dict[str, Any]]:
    """Items whose verdict differs between two checkpoints in one evaluation."""
    return services.store.query(
        "SELECT x.item_id, x.subset, x.correct AS correct_a, y.correct AS correct_b, x.margin AS margin_a,"
        " y.margin AS margin_b FROM eval_items x JOIN eval_items y USING (result_key, item_id)"
        " WHERE x.result_key = ? AND x.checkpoint = ? AND y.checkpoint = ? AND x.correct <> y.correct"
        " ORDER BY x.subset, x.item_id LIMIT ?", [key, a, b, limit])


# -- reward-model lab: read models for the JSON API and the lab pages -------------------------------------

REGIMES: tuple[str, ...] = ("helpful", "harmless", "mixed")
FINAL_METRIC_KEYS: tuple[str, ...] = ("final_eval_loss", "final_eval_acc", "final_train_loss",
                                      "final_train_acc", "best_step", "steps", "n_train", "n_eval", "wall_s")


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


def final_metrics(meta: dict[str, Any] | None) -> dict[str, Any]:
    """The headline numbers a training job left in its manifest summary (flat or under 'metrics')."""
    meta = meta or {}
    raw = meta.get("metrics")
    nested: dict[str, Any] = raw if isinstance(raw, dict) else {}
    out: dict[str, Any] = {}
    for k in FINAL_METRIC_KEYS:
        v = meta.get(k, nested.get(k))
        if v is not None:
            out[k] = v
    return finite(out)  # type: ignore[no-any-return]


def checkpoint_dict(ck: Checkpoint) -> dict[str, Any]:
    return {"id": ck.id, "base_model": ck.base_model, "regime": ck.regime, "seed": ck.seed,
            "preset": ck.preset, "job_id": ck.job_id, "metrics": final_metrics(ck.meta),
            "created_at": ck.created_at.isoformat() if ck.created_at else None}


def get_checkpoint(services: Services, checkpoint_id: str) -> Checkpoint | None:
    with services.db.session() as s:
        return s.get(Checkpoint, checkpoint_id)


def base_models(services: Services) -> list[str]:
    with services.db.session() as s:
        return sorted(set(s.scalars(select(Checkpoint.base_model))))


def evaluation_runs(services: Services, checkpoint_ids: list[str] | None = None) -> list[Run]:
    """Stored evaluation results, newest first; with ids, only those covering at least one of them."""
    with services.db.session() as s:
        runs = list(s.scalars(select(Run).where(Run.kind == "evaluate").order_by(Run.created_at.desc())))
    if checkpoint_ids is None:
        return runs
    wanted = set(checkpoint_ids)
    return [r for r in runs if wanted & set(r.params.get("checkpoints", []))]


def evaluation_run(services: Services, key: str) -> Run | None:
    with services.db.session() as s:
        run = s.get(Run, key)
    return run if run is not None and run.kind == "evaluate" else None


def run_dict(run: Run) -> dict[str, Any]:
    dataset = run.params.get("dataset") or {}
    return {"result_key": run.result_key, "job_id": run.job_id,
            "checkpoints": run.params.get("checkpoints", []),
            "split": dataset.get("split"), "limit": dataset.get("limit"), "source": dataset.get("source"),
            "created_at": run.created_at.isoformat() if run.created_at else None,
            "summary": finite(run.summary or {})}


def best_evaluation_key(services: Services, checkpoint_ids: list[str]) -> str | None:
    """The evaluation covering the most of the given checkpoints (the newest among equals)."""
    best: tuple[int, str] | None = None
    wanted = set(checkpoint_ids)
    for run in evaluation_runs(services, checkpoint_ids):  # newest first: strict > keeps the newest
        n = len(wanted & set(run.params.get("checkpoints", [])))
        if best is None or n > best[0]:
            best = (n, run.result_key)
    return best[1] if best else None


def latest_accuracies(services: Services, checkpoint_ids: list[str]) -> dict[str, dict[str, Any]]:
    """Per checkpoint, the overall accuracy (subset 'all') of the newest evaluation that covers it."""
    if not checkpoint_ids:
        return {}
    order = {r.result_key: i for i, r in enumerate(evaluation_runs(services, checkpoint_ids))}
    rows = services.store.query(
        "SELECT result_key, checkpoint, accuracy, ci_lo, ci_hi, n_items FROM eval_subsets"
        " WHERE subset = 'all'"
        f" AND checkpoint IN ({','.join('?' * len(checkpoint_ids))})", list(checkpoint_ids))
    out: dict[str, dict[str, Any]] = {}
    for row in sorted((r for r in rows if r["result_key"] in order), key=lambda r: order[r["result_key"]]):
        out.setdefault(row["checkpoint"], finite(row))
    return out


def evaluation_results(services: Services, key: str) -> dict[str, Any]:
    """Everything one evaluation stored: subset rows, the seed summary, reliability bins, transfer rows."""
    subsets = subset_rows(services, key)
    cks = sorted({r["checkpoint"] for r in subsets})
    return finite({
        "subsets": subsets,
        "seed_summary": seed_summary(services, key),
        "reliability": {ck: reliability(services, key, ck) for ck in cks},
        "transfer": transfer(services, key),
    })  # type: ignore[no-any-return]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return None, None
    mean = sum(vals) / len(vals)
    if len(vals) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))


def type_order(subset_type: str | None) -> int:
    return {"helpful": 0, "harmless": 1}.get(subset_type or "", 3 if subset_type == "all" else 2)


def comparison(services: Services, base_model: str, seed: int | None = None,
               key: str | None = None, flip_limit: int = 100) -> dict[str, Any] | None:
    """The three regimes of one base model in one evaluation, side by side.

    Per subset and regime: the mean accuracy over the seeds present with its sample std (0 for one seed)
    and, for one seed, its bootstrap CI; per subset type the mean over that type's subsets (per seed, then
    mean ± std over seeds); transfer rows averaged over seeds; each RM's reliability bins and calibration;
    the items whose verdict flips between the mixed RM and each single RM (one seed). None when the base
    model has no checkpoints (or none with that seed).
    """
    cks = [c for c in checkpoints(services, base_model) if seed is None or c.seed == seed]
    if not cks:
        return None
    ids = [c.id for c in cks]
    key = key or best_evaluation_key(services, ids)
    by_id = {c.id: c for c in cks}
    out: dict[str, Any] = {
        "base_model": base_model, "seed": seed, "result_key": key,
        "seeds": sorted({c.seed for c in cks}),
        "checkpoints": {r: [checkpoint_dict(c) for c in cks if c.regime == r] for r in REGIMES},
        "evaluated": [], "subsets": [], "types": [], "transfer": [], "reliability": [], "calibration": [],
        "flips": [],
    }
    if key is None:
        return out
    rows = [r for r in subset_rows(services, key, ids) if r["checkpoint"] in by_id]
    evaluated = sorted({r["checkpoint"] for r in rows})
    out["evaluated"] = [checkpoint_dict(by_id[c]) for c in evaluated]
    # -- per subset --
    grouped: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
    for r in rows:
        grouped.setdefault((r["subset"], r["subset_type"]), {}).setdefault(r["regime"], []).append(r)
    for (subset, stype), regs in sorted(grouped.items(), key=lambda kv: (type_order(kv[0][1]), kv[0][0])):
        entry: dict[str, Any] = {"subset": subset, "subset_type": stype, "regimes": {}}
        for regime, rs in regs.items():
            mean, std = _mean_std([x["accuracy"] for x in rs])
            one = rs[0] if len(rs) == 1 else None
            entry["regimes"][regime] = {
                "n_seeds": len(rs), "seeds": sorted(x["seed"] for x in rs), "mean": mean, "std": std,
                "ci_lo": one["ci_lo"] if one else None, "ci_hi": one["ci_hi"] if one else None,
                "n_items": rs[0]["n_items"],
                "length_longer": _mean_std([x["length_longer"] for x in rs])[0],
                "length_shorter": _mean_std([x["length_shorter"] for x in rs])[0],
            }
        out["subsets"].append(entry)
    # -- per subset type: mean over the type's subsets for each seed, then mean ± std over seeds --
    per_seed: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in rows:
        if r["subset"] != "all" and r["subset_type"] in ("helpful", "harmless"):
            per_seed.setdefault((r["subset_type"], r["regime"]), {}).setdefault(r["seed"], []).append(
                r["accuracy"])
    for stype in ("helpful", "harmless"):
        regs_t: dict[str, Any] = {}
        for regime in REGIMES:
            seeds_acc = per_seed.get((stype, regime))
            if not seeds_acc:
                continue
            seed_means = [m for m in (_mean_std(v)[0] for v in seeds_acc.values()) if m is not None]
            mean, std = _mean_std(seed_means)
            regs_t[regime] = {"mean": mean, "std": std, "n_seeds": len(seeds_acc),
                              "n_subsets": max(len(v) for v in seeds_acc.values())}
        if regs_t:
            out["types"].append({"subset_type": stype, "regimes": regs_t})
    # -- transfer (mixed vs the single RMs of the same seed), averaged over seeds --
    t_rows = [t for t in transfer(services, key)
              if t["base_model"] == base_model and (seed is None or t["seed"] == seed)]
    t_grouped: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for t in t_rows:
        t_grouped.setdefault((t["subset"], t["subset_type"]), []).append(t)
    for (subset, stype), ts in sorted(t_grouped.items(), key=lambda kv: (type_order(kv[0][1]), kv[0][0])):
        entry = {"subset": subset, "subset_type": stype, "n_seeds": len(ts), "n_items": ts[0]["n_items"]}
        for m in ("transferability", "jaccard_helpful", "jaccard_harmless"):
            entry[m], entry[m + "_std"] = _mean_std([x[m] for x in ts])
        out["transfer"].append(entry)
    # -- calibration --
    for ck in sorted(evaluated, key=lambda c: (REGIMES.index(by_id[c].regime)
                                               if by_id[c].regime in REGIMES else 9, by_id[c].seed)):
        c = by_id[ck]
        overall = next((r for r in rows if r["checkpoint"] == ck and r["subset"] == "all"), None)
        bins = [b for b in reliability(services, key, ck) if b["scope"] == "all"]
        out["reliability"].append({"checkpoint": ck, "regime": c.regime, "seed": c.seed, "bins": bins})
        if overall:
            out["calibration"].append({"checkpoint": ck, "regime": c.regime, "seed": c.seed,
                                       "accuracy": overall["accuracy"], "ece": overall["ece"],
                                       "brier": overall["brier"], "nll": overall["nll"]})
    # -- verdict flips: mixed vs each single RM, for one seed --
    ev_by_regime_seed = {(by_id[c].regime, by_id[c].seed): c for c in evaluated}
    flip_seeds = sorted(s for (r, s) in ev_by_regime_seed if r == "mixed")
    if flip_seeds:
        fs = flip_seeds[0]
        mixed = ev_by_regime_seed[("mixed", fs)]
        for single in ("helpful", "harmless"):
            other = ev_by_regime_seed.get((single, fs))
            if other is None:
                continue
            items = flipped_items(services, key, mixed, other, flip_limit)
            counts = flip_counts(services, key, mixed, other)
            out["flips"].append({"seed": fs, "single": single, "mixed_checkpoint": mixed,
                                 "single_checkpoint": other, "n_flipped": counts["n_flipped"],
                                 "mixed_right": counts["a_only"], "single_right": counts["b_only"],
                                 "rows": items})
    return finite(out)  # type: ignore[no-any-return]


def flip_counts(services: Services, key: str, a: str, b: str) -> dict[str, int]:
    """How many items flip between two checkpoints, and in which direction (a right / b right)."""
    row = services.store.query(
        "SELECT count(*) AS n_flipped, count(*) FILTER (WHERE x.correct) AS a_only,"
        " count(*) FILTER (WHERE y.correct) AS b_only"
        " FROM eval_items x JOIN eval_items y USING (result_key, item_id)"
        " WHERE x.result_key = ? AND x.checkpoint = ? AND y.checkpoint = ? AND x.correct <> y.correct",
        [key, a, b])[0]
    return {k: int(v or 0) for k, v in row.items()}
