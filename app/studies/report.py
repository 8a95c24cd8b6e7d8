"""A study's report: its tables, figures and the verdict on each of METHOD.md's three claims.

`build_report` reads only stored results, through the domains' own read functions (evaluation comparison,
neuron overlap, ablation rows); whatever a running study has not produced yet becomes a "waiting for …"
line, never an error. Numbers sit beside METHOD.md §6's (the `paper` column of a table).

Units: accuracies and Δ accuracies in percent (points), Jaccards, fractions and transferability in [0, 1].
The number that stands for one RM is the per-type (macro) mean: the mean of its helpful-type and
harmless-type accuracies, never the item-weighted accuracy over all items.

Uncertainty: accuracy CIs are a paired, item-level percentile bootstrap (1000 resamples, seeded): the items
of each subset are resampled with replacement, the same resample for every RM and seed, so a difference
between two RMs gets its own CI. Ablation CIs are the ablate job's own (item-level bootstrap of Δ and of Δ
minus the random control's Δ).

Verdict rules (each Claim's `rule` says the same; "CI" is a 95% CI):

1. *The mixed RM underperforms the better single-objective RM, most on harmlessness.* Per subset type t,
   d_t = acc(mixed, t) − acc(better single RM on t), the better one chosen by its mean. Holds if the CI of
   d_harmless lies below 0 and the CI of d_harmless − d_helpful lies below 0. Does not hold if either CI
   lies above 0. Otherwise inconclusive.
2. *Ablating an objective's neurons hurts that objective more than random neurons, and often helps the
   opposing one.* Experiment B (magnitude top-p) on the helpful and harmless RMs. (a) own-type excess
   (Δ − random Δ, per seed, CI from the job): holds if every CI lies below 0, fails if any lies above 0.
   (b) opposing-type Δ: holds if at least one (RM, seed) has its CI above 0, fails if every CI lies below 0.
   Holds if (a) and (b) hold, does not hold if either fails, otherwise inconclusive.
3. *A large share of neurons is shared, and per neuron the shared set moves behaviour most.* (a) |H ∩ R| at
   top-p% by magnitude beyond chance: holds if the one-sided hypergeometric p < 0.05 in every seed, fails
   if the overlap is at most its chance expectation in every seed. (b) experiment C on the mixed RM at the
   report's p (else the nearest): shared set's Δ accuracy per neuron (CI of Δ divided by the set's size)
   below each specific set's with non-overlapping CIs in every seed; fails if in some seed a specific set's
   per-neuron CI lies entirely below the shared set's. Holds if (a) and (b) hold, does not hold if either
   fails, otherwise inconclusive.
"""

from __future__ import annotations

import html
import math
import warnings
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from app.ablation import service as ablation_service
from app.ablation.figures import ALL_ITEMS, RANDOM, SET_LABELS, SET_PARTS, SUBSET_PREFIX
from app.core.errors import AppError
from app.evaluation import figures as eval_figures
from app.evaluation import service as eval_service
from app.evaluation.queries import OVERALL
from app.evaluation.schemas import Comparison
from app.neurons import figures as neuron_figures
from app.neurons import service as neuron_service
from app.studies.schemas import StudyResults
from workers.contract.vocab import (
    OBJECTIVES,
    REGIMES,
    SINGLE_REGIMES,
    Experiment,
    Objective,
    OverlapPart,
    Regime,
    SelectionMethod,
    Stat,
    objectives_of,
)
from workers.evaluation.metrics import mean_std
from workers.neurons import selection as sel

if TYPE_CHECKING:
    from app.core.services import Services

Cell = str | int | float | None
Verdict = Literal["holds", "does not hold", "inconclusive at this data size"]
HOLDS: Verdict = "holds"
FAILS: Verdict = "does not hold"
INCONCLUSIVE: Verdict = "inconclusive at this data size"

N_BOOT = 1000
BOOT_SEED = 0
ALPHA = 0.05
REGIME_COLORS = eval_figures.REGIME_COLORS

# -- METHOD.md §6: the paper's six-model, three-seed averages ----------------------------------------------
PAPER_ACCURACY: dict[tuple[str, str], float] = {
    (Regime.helpful, Objective.harmless): 30.5, (Regime.harmless, Objective.harmless): 70.8,
    (Regime.mixed, Objective.harmless): 60.6, (Regime.helpful, Objective.helpful): 51.3,
    (Regime.harmless, Objective.helpful): 43.9, (Regime.mixed, Objective.helpful): 50.4}
PAPER_DELTA: dict[tuple[str, str], float] = {
    (Regime.helpful, Objective.helpful): -7.3, (Regime.harmless, Objective.harmless): -12.9,
    (Regime.mixed, Objective.helpful): -5.9, (Regime.mixed, Objective.harmless): -13.2,
    (Regime.helpful, Objective.harmless): 5.5, (Regime.harmless, Objective.helpful): 1.1}
PAPER_JACCARD = {"helpful–harmless": 0.48, "mixed–helpful": 0.61, "mixed–harmless": 0.50}
PAPER_FRACTIONS = {Regime.mixed: "0.15 / 0.30 / 0.55"}
PAPER_TRANSFER = 0.586
PAPER_TRANSFER_AFTER: dict[str, float] = {OverlapPart.helpful_specific: 0.576,
                                          OverlapPart.harmless_specific: 0.573, OverlapPart.shared: 0.496}
PAPER_P = 10.0
PAPER_COLUMN = "paper (METHOD.md §6)"

CLAIMS: dict[int, str] = {
    1: "The mixed RM underperforms the better single-objective RM, most on harmlessness.",
    2: "Ablating an objective's neurons hurts that objective more than random neurons do, "
       "and often helps the opposing one.",
    3: "A large share of neurons is shared, and per neuron the shared set moves behaviour most."}
RULES: dict[int, str] = {
    1: "d_t = accuracy(mixed, type t) − accuracy(better single RM on t), per-type means over subsets and seeds, "
       "with paired item-level bootstrap 95% CIs. Holds if CI(d_harmless) < 0 and CI(d_harmless − d_helpful) < 0; "
       "does not hold if either CI is entirely above 0; otherwise inconclusive.",
    2: "Experiment B (magnitude top-p) on the helpful and harmless RMs. (a) own-type excess Δ − random Δ: holds "
       "if its 95% CI is below 0 for every RM and seed, fails if any CI is above 0. (b) opposing-type Δ: holds "
       "if at least one RM and seed has its CI above 0, fails if every CI is below 0. Holds if (a) and (b) hold; "
       "does not hold if either fails; otherwise inconclusive.",
    3: "(a) |H ∩ R| of the top-p% magnitude sets beyond chance: holds if the one-sided hypergeometric p < 0.05 in "
       "every seed, fails if the overlap is at most its chance expectation in every seed. (b) Experiment C on "
       "the mixed RM: the shared set's Δ accuracy per neuron (95% CI / set size) below each specific set's with "
       "non-overlapping CIs in every seed; fails if a specific set's per-neuron CI lies entirely below the "
       "shared one's in some seed. Holds if (a) and (b) hold; does not hold if either fails; otherwise "
       "inconclusive."}

PARTS: tuple[str, ...] = ("helpful-specific", "shared", "harmless-specific", "neither")
"""Where a neuron sits relative to the helpful (H) and harmless (R) RMs' top sets."""
PART_COLORS = {"helpful-specific": "#1c7ed6", "shared": "#7048e8", "harmless-specific": "#e8590c",
               "neither": "#ced4da"}


# -- the report's shapes ------------------------------------------------------------------------------------
class ReportTable(BaseModel):
    """One table: raw numbers in `rows` (formatted only for display), the paper's values beside them."""

    name: str = Field(description="slug: the CSV file's name and the HTML id")
    title: str
    columns: list[str]
    rows: list[list[Cell]]
    caption: str = ""
    paper: list[Cell] | None = Field(None, description="METHOD.md §6's value for each row (None: none)")
    formats: dict[str, str] = Field(default_factory=dict, description="column -> format spec of its numbers")
    glossary: str | None = Field(None, description="the glossary anchor of the table's main term")

    def header(self) -> list[str]:
        """The columns, with the paper's last when the table has one."""
        return [*self.columns, PAPER_COLUMN] if self.paper is not None else list(self.columns)

    def records(self) -> list[list[Cell]]:
        """The rows, each with its paper value last when the table has one (what CSV and LaTeX write)."""
        if self.paper is None:
            return [list(r) for r in self.rows]
        return [[*r, p] for r, p in zip(self.rows, self.paper, strict=True)]

    def display(self, value: Cell, column: str) -> str:
        """A cell as text: None as an en dash, a number by its column's format (default 3 significant)."""
        if value is None:
            return "–"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return str(value)
        if isinstance(value, float) and not math.isfinite(value):
            return "–"
        spec = self.formats.get(column, ".3g" if isinstance(value, float) else "d")
        return format(value, spec)

    def display_rows(self) -> list[list[str]]:
        """Rows as text. A std over seeds from a single seed is shown as "–", not as a reassuring 0."""
        head = self.header()
        seeds_at = head.index("seeds") if "seeds" in head else None
        out = []
        for r in self.records():
            one_seed = seeds_at is not None and r[seeds_at] == 1
            out.append([("–" if one_seed and head[i].startswith("std") else self.display(v, head[i]))
                        for i, v in enumerate(r)])
        return out


class ReportFigure(BaseModel):
    """A Plotly figure as a plain JSON-safe dict ({data, layout}); no NaN, dataset text HTML-escaped."""

    name: str
    title: str
    figure: dict[str, Any]
    caption: str = ""
    glossary: str | None = None


class Claim(BaseModel):
    number: int = Field(ge=1, le=3)
    statement: str
    verdict: Verdict
    rule: str = Field(description="the stated rule that decides the verdict")
    evidence: str = Field(description="the CIs or test results the rule was applied to")


class StudyReport(BaseModel):
    model_config = {"protected_namespaces": ()}

    model: str
    seeds: list[int]
    p: float
    tables: list[ReportTable] = Field(default_factory=list)
    figures: list[ReportFigure] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)
    caveats: list[str] = Field(default_factory=list)
    waiting: list[str] = Field(default_factory=list, description="'waiting for <stage>: …' lines")

    def table(self, name: str) -> ReportTable:
        for t in self.tables:
            if t.name == name:
                return t
        raise KeyError(f"no table named {name!r}; tables: {', '.join(t.name for t in self.tables)}")

    def figure(self, name: str) -> ReportFigure:
        for f in self.figures:
            if f.name == name:
                return f
        raise KeyError(f"no figure named {name!r}")


# -- small helpers --------------------------------------------------------------------------------------------
def _pct(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else 100.0 * x


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def _mstd(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return mean_std(vals) if vals else (None, None)


def _ci(boot: np.ndarray) -> tuple[float | None, float | None]:
    b = boot[np.isfinite(boot)]
    if b.size == 0:
        return None, None
    lo, hi = np.percentile(b, [100 * ALPHA / 2, 100 * (1 - ALPHA / 2)])
    return float(lo), float(hi)


def _fmt_ci(lo: float | None, hi: float | None, digits: int = 1) -> str:
    if lo is None or hi is None:
        return "[n/a]"
    return f"[{lo:+.{digits}f}, {hi:+.{digits}f}]"


def _text(s: object) -> str:
    """Dataset or model text bound for a Plotly label: HTML-escaped, so Plotly's tag parser sees no tags
    (it turns the entities back into the characters)."""
    return html.escape(str(s), quote=True)


def _finite(obj: Any) -> Any:
    return neuron_figures.json_safe(obj)


def _seed_label(seeds: Sequence[int]) -> str:
    return ", ".join(str(s) for s in seeds)


# -- evaluation: items for the bootstrap ------------------------------------------------------------------------
def _item_rows(services: Services, key: str, checkpoints: list[str]) -> list[dict[str, Any]]:
    """Per-item verdicts of the study's checkpoints in its evaluation (the bootstrap's input).

    The evaluation domain's queries have no per-item read of a whole evaluation; this one reads the same
    `eval_items` table the comparison's flips do."""
    if not checkpoints:
        return []
    return services.store.query(
        "SELECT checkpoint, subset, item_id, correct FROM eval_items WHERE result_key = ?"
        f" AND checkpoint IN ({','.join('?' * len(checkpoints))}) ORDER BY subset, item_id", [key, *checkpoints])


def type_bootstrap(items: list[dict[str, Any]], subset_types: dict[str, str], ck_info: dict[str, tuple[str, int]],
                   *, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> dict[tuple[str, str], np.ndarray]:
    """Bootstrap replicates (percent) of each (regime, subset type)'s accuracy: per seed the mean over the
    type's subsets, then the mean over seeds.

    Items are resampled within each subset, with replacement, by one vector of draw counts per replicate
    shared by every checkpoint (paired), so differences between RMs keep their item-level correlation. A
    checkpoint missing an item just leaves it out of its own mean."""
    rng = np.random.default_rng(seed)
    by_subset: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in items:
        if r["subset"] in subset_types and r["checkpoint"] in ck_info:
            by_subset[r["subset"]].append(r)
    per: dict[tuple[str, str, int], list[np.ndarray]] = defaultdict(list)  # (regime, type, seed) -> subsets
    for subset in sorted(by_subset):
        rows = by_subset[subset]
        ids = sorted({str(r["item_id"]) for r in rows})
        cks = sorted({r["checkpoint"] for r in rows})
        col = {i: k for k, i in enumerate(ids)}
        row = {c: k for k, c in enumerate(cks)}
        hit = np.zeros((len(cks), len(ids)))
        present = np.zeros((len(cks), len(ids)))
        for r in rows:
            hit[row[r["checkpoint"]], col[str(r["item_id"])]] = float(bool(r["correct"]))
            present[row[r["checkpoint"]], col[str(r["item_id"])]] = 1.0
        n = len(ids)
        draws = rng.integers(0, n, size=(n_boot, n)) + n * np.arange(n_boot)[:, None]  # one resample per row
        weights = np.bincount(draws.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            acc = 100.0 * (weights @ hit.T) / (weights @ present.T)  # (n_boot, n_checkpoints)
        for c, k in row.items():
            regime, s = ck_info[c]
            per[(regime, subset_types[subset], s)].append(acc[:, k])
    by_seed: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
    with warnings.catch_warnings():  # an all-NaN replicate ('mean of empty slice') stays NaN; `_ci` drops it
        warnings.simplefilter("ignore", RuntimeWarning)
        for (regime, stype, _s), subsets in per.items():
            by_seed[(regime, stype)].append(np.nanmean(np.vstack(subsets), axis=0))
        return {rt: np.nanmean(np.vstack(seeds), axis=0) for rt, seeds in by_seed.items()}


def b_type_summary(rows: list[dict[str, Any]], stype: str) -> dict[str, Any]:
    """One experiment-B result on one subset type (percent points): Δ and random Δ as the mean over the
    type's subsets (the objective's row when there are none), and the objective row's item-level CIs."""
    subs = [r for r in rows if str(r["grp"]).startswith(SUBSET_PREFIX) and r["group_type"] == stype]
    obj = next((r for r in rows if r["grp"] == f"objective:{stype}"), None)
    src = subs or ([obj] if obj else [])
    return {"delta": _pct(_mean(r["delta"] for r in src)),
            "random": _pct(_mean(r["random_delta_mean"] for r in src)),
            "ci": (_pct(obj["ci_lo"]), _pct(obj["ci_hi"])) if obj else (None, None),
            "excess_ci": (_pct(obj["excess_ci_lo"]), _pct(obj["excess_ci_hi"])) if obj else (None, None)}


# -- the builder --------------------------------------------------------------------------------------------
class _Builder:
    """Collects a report section by section; each section reads what exists and notes what does not."""

    def __init__(self, services: Services, results: StudyResults, p: float) -> None:
        self.services, self.results, self.p = services, results, p
        self.report = StudyReport(model=results.model, seeds=list(results.seeds), p=p)
        self.ck_info: dict[str, tuple[str, int]] = {
            ck: (regime, int(seed)) for regime, by_seed in results.checkpoints.items() for seed, ck in by_seed.items()}
        self.boot: dict[tuple[str, str], np.ndarray] = {}
        self.type_means: dict[tuple[str, str], float | None] = {}
        self.overlaps: dict[int, neuron_service.Overlap] = {}
        self.ablation_rows: dict[tuple[str, str, int], list[dict[str, Any]]] = {}

    def add_table(self, **kw: Any) -> None:
        self.report.tables.append(ReportTable(**kw))

    def add_figure(self, name: str, title: str, figure: dict[str, Any], caption: str = "",
                   glossary: str | None = None) -> None:
        self.report.figures.append(ReportFigure(name=name, title=title, figure=_finite(figure), caption=caption,
                                                glossary=glossary))

    def wait(self, stage: str, what: str) -> None:
        self.report.waiting.append(f"waiting for {stage}: {what}")

    # -- evaluation --------------------------------------------------------------------------------------------
    def evaluation(self) -> None:
        key = self.results.evaluation
        if key is None:
            self.wait("the evaluation", "accuracy, length baselines, transfer, calibration (claim 1)")
            return
        s = self.services
        try:
            cmp = eval_service.comparison(db=s.db, store=s.store, base_model=self.results.model, key=key,
                                          flip_limit=1)
        except AppError as exc:
            self.wait("the evaluation", f"its results are not readable yet ({exc})")
            return
        ids = [c for c in self.ck_info if c in {e.id for e in cmp.evaluated}]
        rows = [r for r in eval_service.subset_rows(store=s.store, key=key, checkpoint_ids=ids)
                if r.subset != OVERALL and r.subset_type in OBJECTIVES]
        subset_types = {r.subset: str(r.subset_type) for r in rows}
        info = {c: self.ck_info[c] for c in ids}
        self.boot = s.store.cache.get(  # the evaluation's rows never change: the replicates are kept, keyed by them
            ("study-report-bootstrap", key, tuple(sorted(info.items())), tuple(sorted(subset_types.items()))),
            lambda: type_bootstrap(_item_rows(s, key, ids), subset_types, info),
            size=lambda b: sum(a.nbytes for a in b.values()))
        self._accuracy(cmp)
        self._length(rows)
        self._transfer(cmp)
        self._calibration(cmp)
        missing = [f"{r}/{sd}" for r in REGIMES for sd in self.results.seeds
                   if self.results.checkpoints.get(r, {}).get(str(sd)) not in ids]
        if missing:
            self.report.caveats.append(f"The evaluation has no rows for {', '.join(missing)}: their accuracy is "
                                       "missing from the tables.")

    def _accuracy(self, cmp: Comparison) -> None:
        rows: list[list[Cell]] = []
        paper: list[Cell] = []
        for regime in REGIMES:
            for stype in OBJECTIVES:
                tc = next((t for t in cmp.types if t.subset_type == stype), None)
                ta = tc.regimes.get(regime) if tc else None
                if ta is None:
                    continue
                mean = _pct(ta.mean)
                self.type_means[(regime, stype)] = mean
                lo, hi = _ci(self.boot.get((regime, stype), np.array([])))
                rows.append([str(regime), f"{stype}-type", ta.n_seeds, ta.n_subsets, mean, _pct(ta.std), lo, hi])
                paper.append(PAPER_ACCURACY.get((regime, stype)))
            means = [self.type_means.get((regime, t)) for t in OBJECTIVES]
            if all(m is not None for m in means):
                macro = _mean(means)
                b = [self.boot.get((regime, t)) for t in OBJECTIVES]
                lo, hi = _ci((b[0] + b[1]) / 2) if b[0] is not None and b[1] is not None else (None, None)
                n_seeds = max(int(r[2]) for r in rows if r[0] == regime)  # type: ignore[arg-type]
                rows.append([str(regime), "per-type mean (headline)", n_seeds, None, macro, None, lo, hi])
                paper.append(None)
        if not rows:
            self.wait("the evaluation", "no helpful- or harmless-type subset rows yet")
            return
        pct1 = {c: ".1f" for c in ("accuracy %", "std over seeds", "95% CI lo", "95% CI hi",
                                   PAPER_COLUMN)}
        self.add_table(name="accuracy", title="Accuracy per RM and subset type", glossary="macro",
                       columns=["RM", "subset type", "seeds", "subsets", "accuracy %", "std over seeds",
                                "95% CI lo", "95% CI hi"], rows=rows, paper=paper, formats=pct1,
                       caption="Per seed the mean over the type's subsets, then mean ± sample std over seeds. "
                               "CI: item-level percentile bootstrap (1000 resamples within each subset). The "
                               "headline row is the mean of the two types. Paper: six-model, three-seed averages "
                               "(8 harmless-type and 17 helpful-type subsets).")
        data: list[dict[str, Any]] = []
        x = [f"{t}-type" for t in OBJECTIVES]
        for regime in REGIMES:
            ys = [self.type_means.get((regime, t)) for t in OBJECTIVES]
            if all(y is None for y in ys):
                continue
            cis = [_ci(self.boot.get((regime, t), np.array([]))) for t in OBJECTIVES]
            plus = [None if y is None or c[1] is None else c[1] - y for y, c in zip(ys, cis, strict=True)]
            minus = [None if y is None or c[0] is None else y - c[0] for y, c in zip(ys, cis, strict=True)]
            data.append({"type": "bar", "name": f"{regime} RM", "x": x, "y": ys,
                         "marker": {"color": REGIME_COLORS[regime]},
                         "error_y": {"type": "data", "symmetric": False, "array": plus, "arrayminus": minus}})
            data.append({"type": "scatter", "mode": "markers", "name": f"paper: {regime} RM", "x": x,
                         "y": [PAPER_ACCURACY.get((regime, t)) for t in OBJECTIVES], "showlegend": regime == "mixed",
                         "marker": {"symbol": "diamond-open", "size": 11, "color": REGIME_COLORS[regime]}})
        self.add_figure("accuracy", "Accuracy per subset type (95% bootstrap CI; diamonds: the paper)",
                        {"data": data, "layout": {"barmode": "group", "scattermode": "group", "margin": {"t": 20},
                                                  "yaxis": {"title": {"text": "accuracy (%)"}, "range": [0, 105]},
                                                  "legend": {"orientation": "h", "y": -0.2}}},
                        caption="Bars: this study; open diamonds: METHOD.md §6.", glossary="macro")

    def _length(self, rows: list[Any]) -> None:
        per_subset: dict[str, dict[str, list[float | None]]] = defaultdict(lambda: defaultdict(list))
        types: dict[str, str] = {}
        for r in rows:
            per_subset[r.subset]["longer"].append(r.length_longer)
            per_subset[r.subset]["shorter"].append(r.length_shorter)
            types[r.subset] = r.subset_type
        out: list[list[Cell]] = []
        for stype in OBJECTIVES:
            subs = [s for s in per_subset if types[s] == stype]
            if subs:
                out.append([f"{stype}-type", len(subs), _pct(_mean(_mean(per_subset[s]["longer"]) for s in subs)),
                            _pct(_mean(_mean(per_subset[s]["shorter"]) for s in subs))])
        if out:
            self.add_table(name="length_baselines", title="Length baselines per subset type",
                           columns=["subset type", "subsets", "longer wins %", "shorter wins %"], rows=out,
                           formats={"longer wins %": ".1f", "shorter wins %": ".1f"},
                           caption="Accuracy of using the response length as the reward (mean over the type's "
                                   "subsets): an RM must clear these before its accuracy says more than a "
                                   "length bias.")

    def _transfer(self, cmp: Comparison) -> None:
        rows: list[list[Cell]] = []
        paper: list[Cell] = []
        by_type: dict[str, list[float | None]] = defaultdict(list)
        for t in cmp.transfer:
            label = "all items" if t.subset == OVERALL else t.subset
            rows.append([label, t.subset_type, t.n_seeds, t.n_items, t.transferability, t.transferability_std,
                         t.jaccard_helpful, t.jaccard_harmless])
            paper.append(None)
            if t.subset_type in OBJECTIVES:
                by_type[str(t.subset_type)].append(t.transferability)
        type_means = {st: _mean(v) for st, v in by_type.items()}
        for st in OBJECTIVES:
            if st in type_means:
                rows.append([f"{st}-type mean", st, None, None, type_means[st], None, None, None])
                paper.append(None)
        if all(type_means.get(st) is not None for st in OBJECTIVES):
            rows.append(["per-type mean (headline)", None, None, None, _mean(type_means.values()), None, None, None])
            paper.append(PAPER_TRANSFER)
        if not rows:
            self.wait("the evaluation", "transfer rows (they need all three regimes of a seed)")
            return
        self.add_table(name="transfer", title="Transferability of the mixed RM", glossary="transferability",
                       columns=["subset", "type", "seeds", "items", "transferability", "std over seeds",
                                "Jaccard(mixed, helpful)", "Jaccard(mixed, harmless)"], rows=rows, paper=paper,
                       caption="Transferability |HH ∧ (HE ∨ HA)| / |HE ∨ HA| over per-item correctness (one "
                               "definition, the glossary's), mean over seeds; Jaccards of the correct-item sets.")
        fig = eval_figures.transfer_figure(cmp)
        for trace in fig["data"]:
            trace["x"] = [_text(x) for x in trace.get("x", [])]
        self.add_figure("transfer", "Transferability and correct-set Jaccards per subset", fig,
                        glossary="transferability")

    def _calibration(self, cmp: Comparison) -> None:
        rows: list[list[Cell]] = []
        for regime in REGIMES:
            cs = [c for c in cmp.calibration if c.regime == regime]
            if not cs:
                continue
            ece, ece_sd = _mstd(c.ece for c in cs)
            brier, brier_sd = _mstd(c.brier for c in cs)
            rows.append([str(regime), len(cs), ece, ece_sd, brier, brier_sd, _mean(c.nll for c in cs)])
        if not rows:
            return
        self.add_table(name="calibration", title="Calibration per RM", glossary=None,
                       columns=["RM", "seeds", "ECE", "ECE std", "Brier", "Brier std", "NLL"], rows=rows,
                       formats={c: ".3f" for c in ("ECE", "ECE std", "Brier", "Brier std", "NLL")},
                       caption="P(chosen ≻ rejected) = σ(r_c − r_r) over both orderings of each pair, all items; "
                               "mean ± std over seeds. The paper reports no calibration.")
        if cmp.reliability:
            self.add_figure("reliability", "Reliability diagram per RM",
                            eval_figures.compare_reliability_figure(cmp.reliability), glossary=None)

    # -- neurons -----------------------------------------------------------------------------------------------
    def neurons(self) -> None:
        s = self.services
        ready = [sd for sd in self.results.seeds
                 if all(f"{r}/{sd}" in self.results.captures for r in REGIMES)]
        pending = [sd for sd in self.results.seeds if sd not in ready]
        if pending:
            self.wait("the captures", f"seed(s) {_seed_label(pending)} (overlap, layer fractions, migration)")
        for sd in ready:
            try:
                self.overlaps[sd] = neuron_service.compute_overlap(
                    store=s.store, db=s.db, base_model=self.results.model, p=self.p, stat=Stat.A, seed=sd)
            except AppError as exc:
                self.report.caveats.append(f"Overlap of seed {sd} could not be computed: {exc}")
        if not self.overlaps:
            return
        self._overlap()
        self._fractions()
        self._migration()

    def _overlap(self) -> None:
        pairs = (("helpful–harmless", OverlapPart.helpful, OverlapPart.harmless),
                 ("mixed–helpful", OverlapPart.mixed, OverlapPart.helpful),
                 ("mixed–harmless", OverlapPart.mixed, OverlapPart.harmless))
        rows: list[list[Cell]] = []
        for label, a, b in pairs:
            js, obs, exp, ps = [], [], [], []
            for ov in self.overlaps.values():
                js.append(sel.set_jaccard(ov.masks[a], ov.masks[b]))
                sig = sel.overlap_significance(ov.masks[a], ov.masks[b])
                obs.append(sig["observed"])
                exp.append(sig["expected"])
                ps.append(sig["p_value"])
            j, jsd = _mstd(js)
            rows.append([label, len(js), j, jsd, _mean(obs), _mean(exp), max(ps)])
        three = _mean(ov.summary.three_way for ov in self.overlaps.values())
        rows.append(["(H ∪ R) ∩ M three-way", len(self.overlaps), three, None, None, None, None])
        seeds = _seed_label(sorted(self.overlaps))
        self.add_table(name="overlap", title=f"Overlap of the top-{self.p:g}% neuron sets (magnitude A)",
                       glossary="jaccard",
                       columns=["pair", "seeds", "Jaccard", "std over seeds", "|A ∩ B|", "expected by chance",
                                "hypergeometric p (largest over seeds)"], rows=rows,
                       paper=[*(PAPER_JACCARD[r[0]] if self.p == PAPER_P else None  # type: ignore[index]
                                for r in rows[:3]), None],
                       formats={"Jaccard": ".3f", "std over seeds": ".3f", "|A ∩ B|": ".1f",
                                "expected by chance": ".1f", PAPER_COLUMN: ".2f"},
                       caption=f"Seeds {seeds}. H, R, M: the helpful, harmless and mixed RMs' top-{self.p:g}% by "
                               "magnitude, one global threshold. p: one-sided hypergeometric test of the overlap "
                               "against two random sets of the same sizes.")
        first = min(self.overlaps)
        self.add_figure("overlap_venn", f"H, R, M: exclusive regions (seed {first})",
                        neuron_figures.venn(self.overlaps[first].summary),
                        caption="Counts of the seven exclusive regions of the three top sets (an upset-style view "
                                "of the Venn diagram).", glossary="jaccard")
        for ov in self.overlaps.values():
            for regime, s in ov.summary.selection.items():
                if s.tied:
                    self.report.caveats.append(f"Seed {ov.summary.seed}, {regime} RM: ties at θ selected {s.selected} "
                                               f"neurons for {s.requested} requested.")

    def _fractions(self) -> None:
        rows: list[list[Cell]] = []
        paper: list[Cell] = []
        fr: dict[str, dict[str, float | None]] = {}
        for regime in REGIMES:
            vals = {k: _mean(getattr(ov.summary.layer_fractions[regime], k) for ov in self.overlaps.values())
                    for k in ("early", "middle", "late")}
            fr[regime] = vals
            rows.append([str(regime), len(self.overlaps), vals["early"], vals["middle"], vals["late"],
                         _mean(ov.summary.selection[regime].selected for ov in self.overlaps.values())])
            paper.append(PAPER_FRACTIONS.get(regime) if self.p == PAPER_P else None)
        self.add_table(name="layer_fractions", title="Where the selected neurons sit: thirds of depth",
                       columns=["RM", "seeds", "early", "middle", "late", "selected neurons"], rows=rows, paper=paper,
                       formats={"early": ".2f", "middle": ".2f", "late": ".2f", "selected neurons": ".1f"},
                       caption="Share of each RM's top set in the early, middle and late thirds of the layers, "
                               "mean over seeds.", glossary="theta")
        thirds = ["early", "middle", "late"]
        data = [{"type": "bar", "name": f"{r} RM", "x": thirds, "y": [fr[r][t] for t in thirds],
                 "marker": {"color": REGIME_COLORS[r]}} for r in REGIMES]
        data.append({"type": "scatter", "mode": "markers", "name": "paper: mixed RM", "x": thirds,
                     "y": [0.15, 0.30, 0.55], "marker": {"symbol": "diamond-open", "size": 11, "color": "#343a40"}})
        self.add_figure("layer_fractions", "Layer fractions of the top sets", {
            "data": data, "layout": {"barmode": "group", "margin": {"t": 20},
                                     "yaxis": {"title": {"text": "share of the set"}, "range": [0, 1]}}},
            caption="Diamonds: the paper's mixed RM (≈ 0.15 / 0.30 / 0.55).", glossary="theta")

    @staticmethod
    def _parts(ov: neuron_service.Overlap) -> np.ndarray:
        """Each neuron's part as an index into PARTS (relative to H and R)."""
        h, r = ov.masks[OverlapPart.helpful], ov.masks[OverlapPart.harmless]
        out = np.full(h.shape, 3, dtype=np.int64)
        out[h & ~r] = 0
        out[h & r] = 1
        out[r & ~h] = 2
        return out

    def _migration(self) -> None:
        rows: list[list[Cell]] = []
        first = min(self.overlaps)
        for sd, ov in sorted(self.overlaps.items()):
            parts, m = self._parts(ov), ov.masks[OverlapPart.mixed]
            for k, name in enumerate(PARTS):
                sel_k = parts == k
                n, in_m = int(sel_k.sum()), int((sel_k & m).sum())
                rows.append([sd, name, n, in_m, n - in_m, _pct(in_m / n) if n else None])
        self.add_table(name="migration_regimes", title="Neuron migration into the mixed RM's top set",
                       columns=["seed", "part (H, R)", "neurons", "in M", "not in M", "in M %"], rows=rows,
                       formats={"in M %": ".1f"},
                       caption="Each neuron's part by the helpful (H) and harmless (R) RMs' top sets, and whether "
                               "the mixed RM's top set M keeps it.", glossary="jaccard")
        parts, m = self._parts(self.overlaps[first]), self.overlaps[first].masks[OverlapPart.mixed]
        labels = [f"{p} (H/R)" for p in PARTS] + ["in M", "not in M"]
        src, dst, val = [], [], []
        for k in range(len(PARTS)):
            for j, side in enumerate((m, ~m)):
                if PARTS[k] == "neither" and j == 1:
                    continue  # the bulk of unselected neurons: drawn, it would dwarf every other flow
                src.append(k)
                dst.append(len(PARTS) + j)
                val.append(int(((parts == k) & side).sum()))
        colors = [PART_COLORS[p] for p in PARTS] + [REGIME_COLORS[Regime.mixed], "#adb5bd"]
        self.add_figure("migration_regimes", f"From H/R parts into the mixed RM's set (seed {first})", {
            "data": [{"type": "sankey", "node": {"label": labels, "color": colors, "pad": 12},
                      "link": {"source": src, "target": dst, "value": val}}],
            "layout": {"margin": {"t": 20, "l": 10, "r": 10}}},
            caption="Left: a neuron's part relative to H and R; right: whether it is in M. Neurons in neither H "
                    "nor R nor M are not drawn.")
        seeds = sorted(self.overlaps)
        if len(seeds) < 2:
            self.report.caveats.append("Migration across seeds needs at least two seeds with captures.")
            return
        srows: list[list[Cell]] = []
        labels, src, dst, val, colors = [], [], [], [], []
        for i, sd in enumerate(seeds):
            labels += [f"{p} · seed {sd}" for p in PARTS]
            colors += [PART_COLORS[p] for p in PARTS]
            if i == 0:
                continue
            a, b = self._parts(self.overlaps[seeds[i - 1]]), self._parts(self.overlaps[sd])
            for k, name in enumerate(PARTS):
                counts = [int(((a == k) & (b == j)).sum()) for j in range(len(PARTS))]
                n = sum(counts)
                srows.append([f"{seeds[i - 1]} → {sd}", name, *counts, _pct(counts[k] / n) if n else None])
                for j, c in enumerate(counts):
                    if c and not (k == 3 and j == 3):
                        src.append((i - 1) * len(PARTS) + k)
                        dst.append(i * len(PARTS) + j)
                        val.append(c)
        self.add_table(name="migration_seeds", title="Neuron migration between seeds",
                       columns=["seeds", "part at the first seed", *(f"→ {p}" for p in PARTS), "stayed %"],
                       rows=srows, formats={"stayed %": ".1f"},
                       caption="Rows: a neuron's part (by H and R) at one seed; columns: its part at the next seed. "
                               "Neurons are the same coordinates of the same base model.")
        self.add_figure("migration_seeds", "Neuron parts from seed to seed", {
            "data": [{"type": "sankey", "node": {"label": labels, "color": colors, "pad": 12},
                      "link": {"source": src, "target": dst, "value": val}}],
            "layout": {"margin": {"t": 20, "l": 10, "r": 10}}},
            caption="Neurons in neither H nor R at both seeds are not drawn.")

    # -- ablation ---------------------------------------------------------------------------------------------
    def ablations(self) -> None:
        s = self.services
        for label, key in self.results.ablations.items():
            try:
                exp, regime, seed = label.split("/")
                rows, _ = ablation_service.stored_result(store=s.store, result_key=key)
            except (ValueError, AppError):
                continue
            self.ablation_rows[(exp, regime, int(seed))] = rows
        for exp, what, regimes in ((Experiment.A, "experiment A (dose-response)", REGIMES),
                                   (Experiment.B, "experiment B (Δ own vs opposing type; claim 2)", REGIMES),
                                   (Experiment.C, "experiment C (specific vs shared; claim 3)", (Regime.mixed,))):
            missing = [f"{r}/{sd}" for r in regimes for sd in self.results.seeds
                       if (str(exp), str(r), sd) not in self.ablation_rows]
            if missing:
                self.wait(what, ", ".join(missing))
        self._dose()
        self._delta()
        self._sets()

    def _rows(self, exp: Experiment) -> dict[tuple[str, int], list[dict[str, Any]]]:
        return {(r, sd): rows for (e, r, sd), rows in self.ablation_rows.items() if e == exp}

    def _dose(self) -> None:
        got = self._rows(Experiment.A)
        if not got:
            return
        table: list[list[Cell]] = []
        data: list[dict[str, Any]] = []
        for regime in REGIMES:
            runs = [rows for (r, _), rows in got.items() if r == regime]
            if not runs:
                continue
            alls = [r for rows in runs for r in rows if r["grp"] == ALL_ITEMS]
            colour = REGIME_COLORS[regime]
            rnd: dict[float, list[float]] = defaultdict(list)
            for r in alls:
                if r["condition"] == RANDOM and r["delta"] is not None and r["p"] is not None:
                    rnd[float(r["p"])].append(100 * r["delta"])
            ps = sorted(rnd)
            if ps:
                stats = [mean_std(rnd[x]) for x in ps]
                data.append({"type": "scatter", "mode": "lines", "x": ps, "y": [m + sd for m, sd in stats],
                             "line": {"width": 0}, "showlegend": False, "legendgroup": f"rnd-{regime}",
                             "hoverinfo": "skip"})
                data.append({"type": "scatter", "mode": "lines", "x": ps, "y": [m - sd for m, sd in stats],
                             "line": {"width": 0}, "fill": "tonexty", "fillcolor": _rgba(colour, 0.15),
                             "name": f"{regime} RM: random ± std", "legendgroup": f"rnd-{regime}",
                             "hoverinfo": "skip"})
                for x, (m, sd) in zip(ps, stats, strict=True):
                    table.append([str(regime), RANDOM, x, len(rnd[x]), m, sd])
            for method, dash in ((SelectionMethod.magnitude, "solid"), (SelectionMethod.change, "dot")):
                by_p: dict[float, list[float]] = defaultdict(list)
                for r in alls:
                    if r["condition"] == method and r["delta"] is not None and r["p"] is not None:
                        by_p[float(r["p"])].append(100 * r["delta"])
                if not by_p:
                    continue
                xs = sorted(by_p)
                ms = [mean_std(by_p[x]) for x in xs]
                data.append({"type": "scatter", "mode": "lines+markers", "x": xs, "y": [m for m, _ in ms],
                             "name": f"{regime} RM: {method}-based", "line": {"color": colour, "dash": dash},
                             "error_y": {"type": "data", "array": [sd for _, sd in ms], "visible": len(runs) > 1}})
                for x, (m, sd) in zip(xs, ms, strict=True):
                    table.append([str(regime), str(method), x, len(by_p[x]), m, sd])
        self.add_table(name="dose_response", title="Experiment A: Δ accuracy against the share ablated",
                       columns=["RM", "selection", "p %", "runs", "Δ accuracy (pp)", "std"], rows=table,
                       formats={"p %": "g", "Δ accuracy (pp)": "+.2f", "std": ".2f"},
                       caption="Each RM on its own test items. Score-based: mean ± std over seeds; random: over "
                               "random seeds and study seeds. Paper: relative drop 11.5% at p=10, 16.9% at p=20, "
                               "19.9% at p=30 (averaged over methods), magnitude hurting most.")
        self.add_figure("dose_response", "Experiment A: Δ accuracy vs p (band: random control ± std)", {
            "data": data, "layout": {"margin": {"t": 20}, "legend": {"orientation": "h", "y": -0.25},
                                     "xaxis": {"title": {"text": "p: ablated neurons (% of all MLP neurons)"}},
                                     "yaxis": {"title": {"text": "Δ accuracy (pp)"}, "zeroline": True}}})

    def _delta(self) -> None:
        got = self._rows(Experiment.B)
        if not got:
            return
        rows: list[list[Cell]] = []
        paper: list[Cell] = []
        fig_x, fig_y, fig_sd, fig_c = [], [], [], []
        p_used = sorted({float(r["p"]) for rs in got.values() for r in rs if r["p"] is not None})
        for regime in REGIMES:
            seeds = sorted(sd for (r, sd) in got if r == regime)
            if not seeds:
                continue
            own = objectives_of(regime)
            for stype in OBJECTIVES:
                per = [b_type_summary(got[(regime, sd)], stype) for sd in seeds]
                m, sd_ = _mstd(x["delta"] for x in per)
                rel = "own" if stype in own else "opposing"
                cis = "; ".join(_fmt_ci(*x["excess_ci"]) for x in per)
                rows.append([str(regime), f"{stype}-type", rel, len(seeds), m, sd_, _mean(x["random"] for x in per),
                             cis])
                paper.append(PAPER_DELTA.get((regime, stype)))
                fig_x.append(f"{regime} RM · {stype}-type ({rel})")
                fig_y.append(m)
                fig_sd.append(sd_)
                fig_c.append(REGIME_COLORS[regime])
        ptxt = ", ".join(f"{x:g}" for x in p_used)
        self.add_table(name="ablation_delta", title=f"Experiment B: Δ accuracy after ablating the own top-{ptxt}%",
                       columns=["RM", "task type", "own / opposing", "seeds", "Δ accuracy (pp)", "std over seeds",
                                "random Δ (pp)", "excess vs random, 95% CI per seed (pp)"], rows=rows, paper=paper,
                       formats={"Δ accuracy (pp)": "+.1f", "std over seeds": ".1f", "random Δ (pp)": "+.1f",
                                PAPER_COLUMN: "+.1f"},
                       caption="Magnitude-based top-p of each RM, zeroed at inference. Δ: mean over the type's "
                               "subsets, then over seeds. Excess = Δ − the layer-matched random control's Δ, its "
                               "item-level bootstrap CI from the ablate job, one per seed.")
        self.add_figure("ablation_delta", "Experiment B: Δ accuracy, own vs opposing type (diamonds: the paper)", {
            "data": [{"type": "bar", "name": "this study", "x": fig_x, "y": fig_y, "marker": {"color": fig_c},
                      "error_y": {"type": "data", "array": fig_sd}},
                     {"type": "scatter", "mode": "markers", "name": "paper", "x": fig_x, "y": paper,
                      "marker": {"symbol": "diamond-open", "size": 11, "color": "#343a40"}}],
            "layout": {"margin": {"t": 20, "b": 140}, "yaxis": {"title": {"text": "Δ accuracy (pp)"}}}})

    def c_rows(self) -> dict[int, dict[str, dict[str, Any]]]:
        """Experiment C rows over all items at the report's p (else the nearest stored), per seed and set."""
        out: dict[int, dict[str, dict[str, Any]]] = {}
        for (_, sd), rows in self._rows(Experiment.C).items():
            alls = [r for r in rows if r["grp"] == ALL_ITEMS and r["p"] is not None]
            if not alls:
                continue
            p = min({float(r["p"]) for r in alls}, key=lambda x: (abs(x - self.p), x))
            out[sd] = {str(r["condition"]): r for r in alls if float(r["p"]) == p}
        return out

    def _sets(self) -> None:
        got = self._rows(Experiment.C)
        if not got:
            return
        rows: list[list[Cell]] = []
        paper: list[Cell] = []
        by: dict[tuple[float, str], list[dict[str, Any]]] = defaultdict(list)
        for rs in got.values():
            for r in rs:
                if r["grp"] == ALL_ITEMS and r["p"] is not None:
                    by[(float(r["p"]), str(r["condition"]))].append(r)
        order = {str(x): i for i, x in enumerate(SET_PARTS)}
        unablated = _mean(r["transfer0"] for rs in by.values() for r in rs)
        rows.append(["unablated", None, len(got), None, None, unablated, None, None, None, None])
        paper.append(PAPER_TRANSFER)
        for (p, cond) in sorted(by, key=lambda k: (k[0], order.get(k[1], 9), k[1])):
            rs = by[(p, cond)]
            rows.append([SET_LABELS.get(cond, cond), p, len(rs), _mean(r["n_neurons"] for r in rs),
                         _mean(r["transfer"] for r in rs), _mean(r["transfer0"] for r in rs),
                         _mean(r["transfer_delta"] for r in rs), _mean(r["random_transfer_mean"] for r in rs),
                         _pct(_mean(r["delta"] for r in rs)), _pct(_mean(r["delta_per_neuron"] for r in rs))])
            paper.append(PAPER_TRANSFER_AFTER.get(cond) if p == PAPER_P else None)
        self.add_table(name="specific_vs_shared", title="Experiment C: specific vs shared neurons in the mixed RM",
                       glossary="transferability",
                       columns=["set", "p %", "seeds", "neurons", "transferability after", "unablated",
                                "Δ transferability", "random Δ transferability", "Δ accuracy (pp)",
                                "Δ accuracy per neuron (pp)"], rows=rows, paper=paper,
                       formats={"p %": "g", "neurons": ".1f", "transferability after": ".3f", "unablated": ".3f",
                                "Δ transferability": "+.3f", "random Δ transferability": "+.3f",
                                "Δ accuracy (pp)": "+.2f", "Δ accuracy per neuron (pp)": "+.3g",
                                PAPER_COLUMN: ".3f"},
                       caption="Helpful-specific H \\ R, harmless-specific R \\ H and shared H ∩ R (by the single "
                               "RMs' magnitude top-p sets) zeroed in the mixed RM; mean over seeds.")
        data = []
        for part in SET_PARTS:
            keys = sorted(k for k in by if k[1] == part)
            if keys:
                data.append({"type": "bar", "name": SET_LABELS[part], "x": [f"p={k[0]:g}%" for k in keys],
                             "y": [_mean(r["transfer"] for r in by[k]) for k in keys]})
        shapes = [] if unablated is None else [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": unablated,
                                                "y1": unablated, "line": {"dash": "dash", "color": "#343a40"}}]
        self.add_figure("specific_vs_shared", "Experiment C: transferability after ablation (dashed: unablated)", {
            "data": data, "layout": {"barmode": "group", "margin": {"t": 20}, "shapes": shapes,
                                     "yaxis": {"title": {"text": "transferability"}, "range": [0, 1]}}},
            glossary="transferability")

    # -- claims -----------------------------------------------------------------------------------------------
    def claims(self) -> None:
        self.report.claims = [claim_1(self.boot, self.type_means), claim_2(self._rows(Experiment.B)),
                              claim_3(self.overlaps, self.c_rows(), self.p)]

    def caveats(self) -> None:
        n = len(self.results.seeds)
        if n < 3:
            spread = "a std over seeds needs two (shown as –)" if n == 1 else f"a std over {n} seeds is rough"
            self.report.caveats.insert(0, f"{n} seed(s): the paper averages three seeds and six base models; "
                                          f"{spread}, and the CIs are item-level only.")
        self.report.caveats.append(f"One base model ({self.results.model}); METHOD.md §6 averages six.")


def _rgba(hex_colour: str, alpha: float) -> str:
    h = hex_colour.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


# -- claims, one function each (pure: testable on constructed numbers) -----------------------------------------
def _combine(*parts: Verdict) -> Verdict:
    if FAILS in parts:
        return FAILS
    return HOLDS if all(p == HOLDS for p in parts) else INCONCLUSIVE


def _below(ci: tuple[float | None, float | None]) -> bool:
    return ci[1] is not None and ci[1] < 0


def _above(ci: tuple[float | None, float | None]) -> bool:
    return ci[0] is not None and ci[0] > 0


def claim_1(boot: dict[tuple[str, str], np.ndarray], means: dict[tuple[str, str], float | None]) -> Claim:
    """Claim 1 by paired bootstrap differences of per-type accuracy (see the module docstring)."""
    def make(verdict: Verdict, evidence: str) -> Claim:
        return Claim(number=1, statement=CLAIMS[1], verdict=verdict, rule=RULES[1], evidence=evidence)

    need = [(r, t) for r in REGIMES for t in OBJECTIVES]
    if any(k not in boot or means.get(k) is None for k in need):
        return make(INCONCLUSIVE, "waiting for the evaluation: the accuracy of all three RMs on both subset types.")
    d: dict[str, np.ndarray] = {}
    best: dict[str, str] = {}
    for t in OBJECTIVES:
        best[t] = max(SINGLE_REGIMES, key=lambda r: means[(r, t)] or -math.inf)  # noqa: B023
        d[t] = boot[(Regime.mixed, t)] - boot[(best[t], t)]
    point = {t: (means[(Regime.mixed, t)] or 0.0) - (means[(best[t], t)] or 0.0) for t in OBJECTIVES}
    ci_harm = _ci(d[Objective.harmless])
    gap = d[Objective.harmless] - d[Objective.helpful]
    ci_gap = _ci(gap)
    if _below(ci_harm) and _below(ci_gap):
        verdict = HOLDS
    elif _above(ci_harm) or _above(ci_gap):
        verdict = FAILS
    else:
        verdict = INCONCLUSIVE
    evidence = (f"d_harmless = {point[Objective.harmless]:+.1f} pp (mixed vs {best[Objective.harmless]} RM), "
                f"95% CI {_fmt_ci(*ci_harm)}; d_helpful = {point[Objective.helpful]:+.1f} pp (vs "
                f"{best[Objective.helpful]} RM), 95% CI {_fmt_ci(*_ci(d[Objective.helpful]))}; d_harmless − d_helpful "
                f"= {point[Objective.harmless] - point[Objective.helpful]:+.1f} pp, 95% CI {_fmt_ci(*ci_gap)} "
                "(paired item-level bootstrap).")
    return make(verdict, evidence)


def claim_2(b_rows: dict[tuple[str, int], list[dict[str, Any]]]) -> Claim:
    """Claim 2 from experiment B's own-type excess CIs and opposing-type Δ CIs (see the module docstring)."""
    def make(verdict: Verdict, evidence: str) -> Claim:
        return Claim(number=2, statement=CLAIMS[2], verdict=verdict, rule=RULES[2], evidence=evidence)

    singles = {(r, sd): rows for (r, sd), rows in b_rows.items() if r in SINGLE_REGIMES}
    have = {r for r, _ in singles}
    if have != set(SINGLE_REGIMES):
        missing = ", ".join(str(r) for r in SINGLE_REGIMES if r not in have)
        return make(INCONCLUSIVE, f"waiting for experiment B on the {missing} RM(s).")
    own_cis, opp_cis, notes = [], [], []
    for (regime, sd), rows in sorted(singles.items()):
        (own,) = objectives_of(regime)
        opp = next(t for t in OBJECTIVES if t != own)
        o, x = b_type_summary(rows, own), b_type_summary(rows, opp)
        own_cis.append(o["excess_ci"])
        opp_cis.append(x["ci"])
        notes.append(f"{regime} RM seed {sd}: own excess CI {_fmt_ci(*o['excess_ci'])} pp, opposing Δ "
                     f"{_fmt_num(x['delta'])} pp CI {_fmt_ci(*x['ci'])}")
    if all(_below(c) for c in own_cis):
        a = HOLDS
    elif any(_above(c) for c in own_cis):
        a = FAILS
    else:
        a = INCONCLUSIVE
    if any(_above(c) for c in opp_cis):
        b = HOLDS
    elif all(_below(c) for c in opp_cis):
        b = FAILS
    else:
        b = INCONCLUSIVE
    return make(_combine(a, b), f"(a) {a}, (b) {b}. " + "; ".join(notes) + ".")


def _fmt_num(x: float | None, spec: str = "+.1f") -> str:
    return "n/a" if x is None else format(x, spec)


def claim_3(overlaps: dict[int, neuron_service.Overlap], c_rows: dict[int, dict[str, dict[str, Any]]],
            p: float) -> Claim:
    """Claim 3 from the H–R hypergeometric test and experiment C's per-neuron Δ CIs (see the module docstring)."""
    def make(verdict: Verdict, evidence: str) -> Claim:
        return Claim(number=3, statement=CLAIMS[3], verdict=verdict, rule=RULES[3], evidence=evidence)

    notes: list[str] = []
    if overlaps:
        sigs = {sd: sel.overlap_significance(ov.masks[OverlapPart.helpful], ov.masks[OverlapPart.harmless])
                for sd, ov in sorted(overlaps.items())}
        if all(s["p_value"] < ALPHA for s in sigs.values()):
            a = HOLDS
        elif all(s["observed"] <= s["expected"] for s in sigs.values()):
            a = FAILS
        else:
            a = INCONCLUSIVE
        notes += [f"seed {sd}: |H ∩ R| = {s['observed']} vs {s['expected']:.1f} by chance, hypergeometric "
                  f"p = {s['p_value']:.3g}" for sd, s in sigs.items()]
    else:
        a = INCONCLUSIVE
        notes.append("waiting for the captures (overlap)")
    if c_rows:
        checks: list[Verdict] = []
        for sd, by_set in sorted(c_rows.items()):
            shared = by_set.get(OverlapPart.shared)
            specs = [by_set[s] for s in (OverlapPart.helpful_specific, OverlapPart.harmless_specific) if s in by_set]
            if shared is None or not specs:
                checks.append(INCONCLUSIVE)
                continue
            sh = _per_neuron_ci(shared)
            res: list[Verdict] = []
            for sp in specs:
                ci = _per_neuron_ci(sp)
                if sh[1] is not None and ci[0] is not None and sh[1] < ci[0]:
                    res.append(HOLDS)
                elif ci[1] is not None and sh[0] is not None and ci[1] < sh[0]:
                    res.append(FAILS)
                else:
                    res.append(INCONCLUSIVE)
                notes.append(f"seed {sd} p={float(sp['p']):g}: {SET_LABELS.get(str(sp['condition']), sp['condition'])} "
                             f"per-neuron Δ CI {_fmt_ci(*ci, digits=3)} pp vs shared {_fmt_ci(*sh, digits=3)} pp")
            checks.append(_combine(*res))
        b = FAILS if FAILS in checks else (HOLDS if all(c == HOLDS for c in checks) else INCONCLUSIVE)
    else:
        b = INCONCLUSIVE
        notes.append("waiting for experiment C")
    return make(_combine(a, b), f"(a) {a}, (b) {b}. " + "; ".join(notes) + ".")


def _per_neuron_ci(row: dict[str, Any]) -> tuple[float | None, float | None]:
    n = row.get("n_neurons")
    if not n or row.get("ci_lo") is None or row.get("ci_hi") is None:
        return None, None
    return 100 * row["ci_lo"] / n, 100 * row["ci_hi"] / n


# -- the entry point --------------------------------------------------------------------------------------------
def build_report(services: Services, results: StudyResults, *, p: float = 10.0) -> StudyReport:
    """Everything a study has produced so far as tables, figures and claim verdicts; what is missing is
    listed in `waiting` (never an error: a running study has a partial report)."""
    b = _Builder(services, results, p)
    b.evaluation()
    b.neurons()
    b.ablations()
    b.claims()
    b.caveats()
    return b.report
