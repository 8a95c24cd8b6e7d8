"""The study's ablation experiments A, B and C (METHOD.md §5) as plain functions returning rows.

Each ablation is reported beside layer-matched random sets of the same size (same count per layer, several
seeds), so "these neurons matter" is separated from "this many neurons in these layers matter". Accuracy
uses the study's item rule (min chosen > max rejected, ties wrong); uncertainty is a seeded bootstrap over
per-item Δ correctness; `delta_per_neuron` normalises by the set size so sets of different sizes compare.

Torch stays outside: a `Scorer` maps a list of ablations (None = unablated) to per-text rewards. Build one
with `live_scorer` (fast, cached prefix), `full_scorer` (full forward passes) or any callable (tests).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from workers.ablation.engine import Ablation
from workers.contract.vocab import AblationMode, SharedMode
from workers.evaluation import metrics
from workers.neurons import selection

__all__ = [
    "DEFAULT_SEEDS",
    "PERCENTS_A",
    "Probe",
    "Scorer",
    "compare",
    "experiment_a",
    "experiment_b",
    "experiment_c",
    "full_scorer",
    "layer_matched_controls",
    "live_scorer",
    "run_with_controls",
]

#: per-text rewards (probe order) for each ablation; None means the unablated model.
Scorer = Callable[[Sequence[Ablation | None]], list[NDArray[np.float64]]]

DEFAULT_SEEDS: tuple[int, ...] = (0, 1, 2)
PERCENTS_A: tuple[float, ...] = (*range(0, 32, 2), 100)


# ============================================================================ the probe items


@dataclass(frozen=True)
class Probe:
    """Pairs flattened to texts (chosen, rejected per pair) plus the item each text belongs to.

    Items follow the pairs' `item_id` (best-of-n groups several pairs); per-item vectors are aligned with
    `item_ids` (sorted, as `metrics.item_correctness` returns them).
    """

    texts: list[str]
    text_item: NDArray[Any]
    text_side: NDArray[Any]
    item_ids: NDArray[Any]
    item_subset: NDArray[Any]
    item_objective: NDArray[Any]

    @classmethod
    def from_pairs(cls, pairs: Sequence[Any]) -> Probe:
        from workers.data.text import pair_texts

        texts: list[str] = []
        items: list[str] = []
        meta: dict[str, tuple[str, str]] = {}
        for p in pairs:
            c, r = pair_texts(p)
            texts += [c, r]
            items += [p.item_id, p.item_id]
            meta.setdefault(p.item_id, (p.subset, p.objective))
        item_ids = np.unique(np.asarray(items))
        sides = np.asarray(["chosen", "rejected"] * len(pairs))
        return cls(texts=texts, text_item=np.asarray(items), text_side=sides,
                   item_ids=item_ids, item_subset=np.asarray([meta[i][0] for i in item_ids.tolist()]),
                   item_objective=np.asarray([meta[i][1] for i in item_ids.tolist()]))

    @property
    def n_items(self) -> int:
        return int(self.item_ids.size)

    def text_pairs(self) -> list[tuple[str, str]]:
        return [(self.texts[i], self.texts[i + 1]) for i in range(0, len(self.texts), 2)]

    def correct(self, rewards: ArrayLike) -> NDArray[np.bool_]:
        """Per-item correctness (aligned with `item_ids`)."""
        _, c = metrics.item_correctness(self.text_item, self.text_side, rewards)
        return c

    def margins(self, rewards: ArrayLike) -> NDArray[np.float64]:
        _, m = metrics.item_margins(self.text_item, self.text_side, rewards)
        return m

    def groups(self, by: Sequence[str] = ("all", "objective", "subset")) -> dict[str, NDArray[np.bool_]]:
        """Item masks: 'all', 'objective:<name>', 'subset:<name>' (the tables the study reports)."""
        out: dict[str, NDArray[np.bool_]] = {}
        if "all" in by:
            out["all"] = np.ones(self.n_items, dtype=bool)
        if "objective" in by:
            for o in sorted(set(self.item_objective.tolist())):
                out[f"objective:{o}"] = self.item_objective == o
        if "subset" in by:
            for s in sorted(set(self.item_subset.tolist())):
                out[f"subset:{s}"] = self.item_subset == s
        return out

    def group_type(self, group: str) -> str | None:
        """Helpful-type or Harmless-type of a group (the objective its items measure), None if mixed."""
        mask = self.groups()[group]
        kinds = set(self.item_objective[mask].tolist())
        return kinds.pop() if len(kinds) == 1 else None


# ============================================================================ scorers


def live_scorer(loaded: Any, probe: Probe, *, max_length: int = 128, **session_options: Any) -> Scorer:
    """A scorer over a `LiveAblationSession` holding the probe texts (cached prefix, batched controls)."""
    from workers.ablation.live import LiveAblationSession

    session = LiveAblationSession(loaded, {"probe": probe.text_pairs()}, max_length=max_length,
                                  **session_options)

    def score(ablations: Sequence[Ablation | None]) -> list[NDArray[np.float64]]:
        todo = [a for a in ablations if a is not None]
        done = iter(session.rewards_many(todo)) if todo else iter(())
        return [session.baseline.copy() if a is None else next(done) for a in ablations]

    return score


def full_scorer(loaded: Any, probe: Probe, *, max_length: int = 128, batch_size: int = 16) -> Scorer:
    """A scorer by full forward passes with hooks (the reference; slower)."""
    from workers.ablation.engine import score_with_ablation

    def score(ablations: Sequence[Ablation | None]) -> list[NDArray[np.float64]]:
        return [score_with_ablation(loaded, probe.texts, a, max_length=max_length,
                                    batch_size=batch_size).astype(np.float64) for a in ablations]

    return score


# ============================================================================ an ablation and its controls


def layer_matched_controls(ablation: Ablation, shape: Sequence[int], seeds: Sequence[int]) -> list[Ablation]:
    """Random sets with the ablation's per-layer counts (`selection.layer_matched_random`), same mode."""
    mask = ablation.to_mask(shape)
    return [Ablation(selection.layer_matched_random(mask, seed), mode=ablation.mode, factor=ablation.factor,
                     means=ablation.means, hook_point=ablation.hook_point) for seed in seeds]


def _flips(probe: Probe, before: NDArray[np.bool_], after: NDArray[np.bool_], m0: NDArray[np.float64],
           m1: NDArray[np.float64]) -> list[dict[str, Any]]:
    changed = np.flatnonzero(before != after)
    return [{"item_id": str(probe.item_ids[i]), "subset": str(probe.item_subset[i]),
             "objective": str(probe.item_objective[i]), "before": bool(before[i]), "after": bool(after[i]),
             "margin_before": float(m0[i]), "margin_after": float(m1[i])} for i in changed.tolist()]


def compare(probe: Probe, base: ArrayLike, ablated: ArrayLike, controls: Sequence[ArrayLike] = (), *,
            n_neurons: int, groups: Sequence[str] = ("all", "objective", "subset"), n_boot: int = 1000,
            seed: int = 0) -> dict[str, Any]:
    """Rows per item group (Δ accuracy with bootstrap CI, layer-matched random Δ, excess over random,
    Δ per neuron) and the list of items whose verdict flips. Rewards are per probe text."""
    c0, c1 = probe.correct(base), probe.correct(ablated)
    m0, m1 = probe.margins(base), probe.margins(ablated)
    d = c1.astype(np.float64) - c0.astype(np.float64)
    ctrl = np.stack([probe.correct(r).astype(np.float64) - c0 for r in controls]) if len(controls) else None
    rows = []
    for name, mask in probe.groups(groups).items():
        n = int(mask.sum())
        if n == 0:
            continue
        acc0, acc1 = float(c0[mask].mean()), float(c1[mask].mean())
        lo, hi = metrics.bootstrap_ci(d[mask], n_boot=n_boot, seed=seed)
        row: dict[str, Any] = {
            "group": name, "group_type": probe.group_type(name), "n_items": n, "n_neurons": int(n_neurons),
            "acc0": acc0, "acc": acc1, "delta": acc1 - acc0, "ci_lo": lo, "ci_hi": hi,
            "drop": metrics.relative_drop(acc1, acc0),
            "normalised": metrics.normalised(100 * acc1, 100 * acc0),
            "delta_per_neuron": (acc1 - acc0) / n_neurons if n_neurons else float("nan"),
            "mean_margin_delta": float((m1[mask] - m0[mask]).mean()),
            "n_flipped": int((c0[mask] != c1[mask]).sum()),
        }
        if ctrl is not None:
            per_seed = ctrl[:, mask].mean(axis=1)
            excess = d[mask] - ctrl[:, mask].mean(axis=0)
            elo, ehi = metrics.bootstrap_ci(excess, n_boot=n_boot, seed=seed)
            row.update({
                "random_delta_mean": float(per_seed.mean()),
                "random_delta_std": float(per_seed.std(ddof=1)) if per_seed.size > 1 else 0.0,
                "random_delta_per_seed": [float(x) for x in per_seed],
                "excess": float(excess.mean()), "excess_ci_lo": elo, "excess_ci_hi": ehi,
                "random_delta_per_neuron": float(per_seed.mean()) / n_neurons if n_neurons else float("nan"),
            })
        rows.append(row)
    return {"rows": rows, "flips": _flips(probe, c0, c1, m0, m1),
            "correct_before": c0, "correct_after": c1}


def run_with_controls(probe: Probe, scorer: Scorer, ablation: Ablation, shape: Sequence[int], *,
                      seeds: Sequence[int] = DEFAULT_SEEDS, base: ArrayLike | None = None, n_boot: int = 1000,
                      groups: Sequence[str] = ("all", "objective", "subset")) -> dict[str, Any]:
    """Score the ablation and its layer-matched random controls in one scorer call, then `compare`."""
    controls = layer_matched_controls(ablation, shape, seeds) if ablation.n_neurons else []
    wanted: list[Ablation | None] = [ablation, *controls]
    if base is None:
        wanted = [None, *wanted]
    rewards = scorer(wanted)
    if base is None:
        base, rewards = rewards[0], rewards[1:]
    out = compare(probe, base, rewards[0], rewards[1:], n_neurons=ablation.n_neurons, groups=groups,
                  n_boot=n_boot)
    out["ablated_rewards"] = rewards[0]
    out["control_sets"] = [c.to_dict() for c in controls]
    return out


# ============================================================================ experiments A, B, C


def _ablation(mask: NDArray[np.bool_], opts: Mapping[str, Any]) -> Ablation:
    return Ablation(mask, **opts)


def _exclusion(shape: Sequence[int], exclude_layers: Sequence[int]) -> NDArray[np.bool_] | None:
    """The neurons of `exclude_layers` (e.g. layers frozen in training) as `selection`'s `exclude`; None for
    none. Excluded neurons are never selected and p% is taken over the others (`selection.top_percent`)."""
    return selection.layer_exclusion(shape, exclude_layers) if len(exclude_layers) else None


def experiment_a(probe: Probe, scorer: Scorer, scores: Mapping[str, ArrayLike], *,
                 percents: Sequence[float] = PERCENTS_A, seeds: Sequence[int] = DEFAULT_SEEDS,
                 controls: bool = True, n_boot: int = 1000, mode: AblationMode = AblationMode.zero,
                 factor: float = 0.0, means: ArrayLike | None = None,
                 exclude_layers: Sequence[int] = ()) -> list[dict[str, Any]]:
    """Accuracy vs p for uniformly random sets (one row per seed) and for each score-based selection
    (`scores`: a `SelectionMethod` -> [n_layers, n_neurons], e.g. {'magnitude': A, 'change': C}), on the
    RM's own test items; score-based sets also get layer-matched random controls. p = 0 is the unablated
    model. `exclude_layers` (layers frozen in training) are left out of both the score-based and the
    uniformly random sets: p% of the other layers' neurons, drawn among them."""
    opts = {"mode": mode, "factor": factor, "means": means}
    shape = np.asarray(next(iter(scores.values()))).shape if scores else None
    if shape is None:
        raise ValueError("experiment A needs at least one score array (for the model's shape)")
    exclude = _exclusion(shape, exclude_layers)
    base = scorer([None])[0]
    rows: list[dict[str, Any]] = []
    for p in percents:
        for s in seeds:
            abl = _ablation(selection.random_set(shape, p, s, exclude=exclude), opts)
            res = run_with_controls(probe, scorer, abl, shape, seeds=(), base=base, n_boot=n_boot,
                                    groups=("all",))
            rows.append({"experiment": "A", "selection": "random", "p": float(p), "seed": int(s),
                         "n_selected": abl.n_neurons, "tied": False, **res["rows"][0]})
        for method, sc in scores.items():
            sel = selection.top_percent(sc, p, exclude=exclude)
            abl = _ablation(sel.mask, opts)
            res = run_with_controls(probe, scorer, abl, shape, seeds=seeds if controls else (), base=base,
                                    n_boot=n_boot, groups=("all",))
            rows.append({"experiment": "A", "selection": method, "p": float(p), "seed": None,
                         "n_selected": sel.selected, "n_requested": sel.requested, "tied": sel.tied,
                         **res["rows"][0]})
    return rows


def experiment_b(probe: Probe, scorer: Scorer, magnitude: ArrayLike, *, p: float = 10.0,
                 seeds: Sequence[int] = DEFAULT_SEEDS, n_boot: int = 1000,
                 mode: AblationMode = AblationMode.zero, factor: float = 0.0,
                 means: ArrayLike | None = None, exclude_layers: Sequence[int] = ()) -> dict[str, Any]:
    """Magnitude top-p% ablation: Δ accuracy per subset (with its Helpful/Harmless type) and per objective,
    beside layer-matched random controls; plus the items whose verdict flips. `exclude_layers` (layers
    frozen in training) are left out of the selection: p% of the other layers' neurons."""
    mag = np.asarray(magnitude)
    sel = selection.top_percent(mag, p, exclude=_exclusion(mag.shape, exclude_layers))
    abl = _ablation(sel.mask, {"mode": mode, "factor": factor, "means": means})
    res = run_with_controls(probe, scorer, abl, sel.mask.shape, seeds=seeds, n_boot=n_boot)
    rows = [{"experiment": "B", "selection": "magnitude", "p": float(p), "tied": sel.tied, **r}
            for r in res["rows"]]
    return {"rows": rows, "flips": res["flips"], "neuron_set": abl.to_dict()}


def experiment_c(probe: Probe, scorer_mixed: Scorer, helpful_scores: ArrayLike, harmless_scores: ArrayLike, *,
                 single_rm_correct: Mapping[str, ArrayLike] | None = None,
                 percents: Sequence[float] = (5.0, 10.0, 20.0), seeds: Sequence[int] = DEFAULT_SEEDS,
                 shared_mode: SharedMode = SharedMode.intersection, n_boot: int = 1000,
                 mode: AblationMode = AblationMode.zero, factor: float = 0.0,
                 means: ArrayLike | None = None, exclude_layers: Sequence[int] = ()) -> dict[str, Any]:
    """On the mixed RM: ablate helpful-specific H \\ R, harmless-specific R \\ H and shared sets at each p.

    H and R are the top-p% sets of the helpful and harmless RMs' scores. Rows give Δ accuracy per group,
    Δ per neuron and, when `single_rm_correct` holds the unablated helpful and harmless RMs' per-item
    correctness (aligned with `probe.item_ids`), transferability before/after and for the random controls.
    `exclude_layers` (layers frozen in training, whose neurons are the same in every RM) are left out of H
    and R: each is the top p% of the other layers' neurons.
    """
    opts = {"mode": mode, "factor": factor, "means": means}
    base = scorer_mixed([None])[0]
    he = ha = None
    if single_rm_correct is not None:
        he = np.asarray(single_rm_correct["helpful"], dtype=bool)
        ha = np.asarray(single_rm_correct["harmless"], dtype=bool)
        if he.size != probe.n_items or ha.size != probe.n_items:
            raise ValueError("single_rm_correct vectors must align with probe.item_ids")
    groups = probe.groups()
    rows: list[dict[str, Any]] = []
    flips: list[dict[str, Any]] = []
    sets_out: dict[str, dict[str, Any]] = {}
    hs, rs = np.asarray(helpful_scores), np.asarray(harmless_scores)
    exclude = _exclusion(hs.shape, exclude_layers)
    for p in percents:
        h = selection.top_percent(hs, p, exclude=exclude).mask
        r = selection.top_percent(rs, p, exclude=exclude).mask
        sets = selection.specific_and_shared(h, r, mode=shared_mode)
        for name, mask in sets.items():
            abl = _ablation(mask, opts)
            controls = layer_matched_controls(abl, mask.shape, seeds) if abl.n_neurons else []
            rewards = scorer_mixed([abl, *controls])
            res = compare(probe, base, rewards[0], rewards[1:], n_neurons=abl.n_neurons, n_boot=n_boot)
            sets_out[f"{name}@{p:g}"] = abl.to_dict()
            c0, c1 = res["correct_before"], res["correct_after"]
            ctrl_correct = [probe.correct(x) for x in rewards[1:]]
            for row in res["rows"]:
                row.update({"experiment": "C", "set": name, "p": float(p),
                            "layer_fractions": selection.layer_fractions(mask)})
                if he is not None and ha is not None:
                    g = groups[row["group"]]
                    row["transfer0"] = metrics.transferability(c0[g], he[g], ha[g])
                    row["transfer"] = metrics.transferability(c1[g], he[g], ha[g])
                    row["transfer_delta"] = row["transfer"] - row["transfer0"]
                    ts = [metrics.transferability(cc[g], he[g], ha[g]) for cc in ctrl_correct]
                    row["random_transfer_mean"] = float(np.nanmean(ts)) if ts else float("nan")
                rows.append(row)
            flips += [{"set": name, "p": float(p), **f} for f in res["flips"]]
    return {"rows": rows, "flips": flips, "neuron_sets": sets_out}
