"""The study report: its numbers against independent computations from the seeded rows, its verdict rules on
constructed numbers, and a running study's partial report (what exists, and "waiting for" the rest)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from app.core.services import Services
from app.studies.report import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    StudyReport,
    build_report,
    claim_1,
    claim_2,
    claim_3,
    type_bootstrap,
)
from app.studies.schemas import StudyResults
from tests.conftest import make_settings
from tests.factories.ablation import SUBSETS as B_SUBSETS
from tests.factories.ablation import ablation_result, rows_b, rows_c
from tests.factories.evaluation import BASE, FULL, SEEDS, SUBSETS, ck_id, correct, evaluate, seed_lab, train_checkpoint
from tests.factories.neurons import Capture, add_three_regimes
from workers.contract.results import EvalItemRow, EvalSubsetRow
from workers.contract.vocab import OBJECTIVES, REGIMES, Experiment, Objective, OverlapPart, Regime

P = 10.0


def build_world(tmp_path: Path) -> SimpleNamespace:
    """A finished two-seed study of `BASE` through the real ingest path: the lab's evaluation, captures of
    the three RMs per seed, and experiments A, B (every RM) and C (mixed) per seed."""
    services = Services.build(make_settings(tmp_path))
    seed_lab(services)
    results = StudyResults(model=BASE, seeds=list(SEEDS), evaluation=FULL,
                           checkpoints={str(r): {str(s): ck_id(r, s) for s in SEEDS} for r in REGIMES})
    captures: dict[int, dict[str, Capture]] = {}
    for s in SEEDS:
        captures[s] = add_three_regimes(services, base_model=BASE, seed=s)
        for r in REGIMES:
            results.captures[f"{r}/{s}"] = captures[s][str(r)].result_key
        for exp in (Experiment.A, Experiment.B, Experiment.C):
            for r in (REGIMES if exp != Experiment.C else (Regime.mixed,)):
                key, _ = ablation_result(services, checkpoint=ck_id(r, s), regime=r, experiment=exp,
                                         percents=[0.0, 10.0, 20.0] if exp == Experiment.A else None)
                results.ablations[f"{exp}/{r}/{s}"] = key
    return SimpleNamespace(services=services, results=results, captures=captures,
                           report=build_report(services, results, p=P))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    w = build_world(tmp_path_factory.mktemp("report"))
    yield w
    w.services.close()


def rows_of(report: StudyReport, name: str) -> list[list[Any]]:
    return report.table(name).rows


# -- evaluation numbers -------------------------------------------------------------------------------------
def _type_accuracy(regime: Regime, stype: Objective) -> float:
    """Per seed the mean over the type's subsets of the fraction correct, then the mean over seeds (in %)."""
    per_seed = []
    for s in SEEDS:
        subs = [sum(correct(regime, s, sub, i) for i in range(4)) / 4 for sub, t in SUBSETS.items() if t == stype]
        per_seed.append(sum(subs) / len(subs))
    return 100 * sum(per_seed) / len(per_seed)


def test_accuracy_per_type_matches_the_verdicts_and_the_headline_is_the_per_type_mean(world: SimpleNamespace) -> None:
    table = world.report.table("accuracy")
    by = {(r[0], r[1]): r for r in table.rows}
    for regime in REGIMES:
        for stype in OBJECTIVES:
            row = by[(str(regime), f"{stype}-type")]
            assert row[4] == pytest.approx(_type_accuracy(regime, stype))
            assert row[6] <= row[4] <= row[7]  # the bootstrap CI holds the estimate
        headline = by[(str(regime), "per-type mean (headline)")]
        assert headline[4] == pytest.approx(sum(_type_accuracy(regime, t) for t in OBJECTIVES) / 2)
    paper = dict(zip([(r[0], r[1]) for r in table.rows], table.paper or [], strict=True))
    assert paper[("mixed", "harmless-type")] == 60.6 and paper[("helpful", "helpful-type")] == 51.3


def test_length_transfer_and_calibration_come_from_the_stored_rows(world: SimpleNamespace) -> None:
    length = {r[0]: r for r in rows_of(world.report, "length_baselines")}
    assert length["helpful-type"][2:] == [50.0, 25.0] and length["harmless-type"][2:] == [50.0, 25.0]
    transfer = {r[0]: r for r in rows_of(world.report, "transfer")}
    assert transfer["per-type mean (headline)"][4] == pytest.approx(0.55)  # 0.5 + 0.1 * seed, seeds 0 and 1
    assert transfer["rm-bench/chat"][5] == pytest.approx(math.sqrt(0.005))
    t = world.report.table("transfer")
    assert t.paper is not None and t.paper[-1] == 0.586
    cal = {r[0]: r for r in rows_of(world.report, "calibration")}
    assert cal["mixed"][2] == pytest.approx(0.055) and cal["mixed"][3] == pytest.approx(math.sqrt(0.00005))


def test_headline_is_the_per_type_mean_not_the_item_weighted_accuracy(tmp_path: Path) -> None:
    """8 helpful-type items all right, 2 harmless-type all wrong: the item-weighted accuracy is 80%, the
    headline 50%. Only the evaluation exists: the rest of the report is 'waiting for'."""
    services = Services.build(make_settings(tmp_path))
    try:
        sizes = {"h-sub": (Objective.helpful, 8, True), "r-sub": (Objective.harmless, 2, False)}
        items, subsets = [], []
        for regime in REGIMES:
            ck = train_checkpoint(services, regime, 0, history=False)
            meta = {"checkpoint": ck, "base_model": BASE, "regime": regime, "seed": 0}
            for sub, (kind, n, ok) in sizes.items():
                items += [{**meta, "item_id": f"{sub}#{i}", "objective": kind, "subset": sub, "correct": ok,
                           "margin": 1.0} for i in range(n)]
                subsets.append({**meta, "subset": sub, "subset_type": kind, "n_items": n, "accuracy": float(ok),
                                "ci_lo": None, "ci_hi": None, "mean_margin_correct": None, "length_longer": None,
                                "length_shorter": None, "ece": None, "brier": None, "nll": None})
        key = evaluate(services, [ck_id(r, 0) for r in REGIMES], {EvalItemRow: items, EvalSubsetRow: subsets},
                       key="eval-uneven")
        results = StudyResults(model=BASE, seeds=[0], evaluation=key,
                               checkpoints={str(r): {"0": ck_id(r, 0)} for r in REGIMES})
        report = build_report(services, results)
        heads = {r[0]: r for r in report.table("accuracy").rows if r[1] == "per-type mean (headline)"}
        assert heads["mixed"][4] == pytest.approx(50.0)
        assert heads["mixed"][6:] == [pytest.approx(50.0), pytest.approx(50.0)]  # no item varies: a point CI
        names = [t.name for t in report.tables]
        assert "accuracy" in names and "overlap" not in names and "ablation_delta" not in names
        waiting = " | ".join(report.waiting)
        assert "waiting for the captures" in waiting and "waiting for experiment A" in waiting
        assert "waiting for experiment C" in waiting
        verdicts = {c.number: c for c in report.claims}
        assert "waiting for experiment B" in verdicts[2].evidence and verdicts[2].verdict == INCONCLUSIVE
        assert "waiting for the captures" in verdicts[3].evidence
    finally:
        services.close()


def test_a_study_with_nothing_yet_or_unknown_keys_says_waiting_and_never_fails(world: SimpleNamespace) -> None:
    empty = build_report(world.services, StudyResults(model="nobody/none", seeds=[0, 1]))
    assert empty.tables == [] and empty.figures == []
    assert any(w.startswith("waiting for the evaluation") for w in empty.waiting)
    assert [c.verdict for c in empty.claims] == [INCONCLUSIVE] * 3
    ghost = StudyResults(model=BASE, seeds=[0], evaluation="no-such-key", ablations={"B/helpful/0": "no-such"},
                         checkpoints={"helpful": {"0": ck_id(Regime.helpful, 0)}})
    report = build_report(world.services, ghost)
    assert any("experiment B" in w and "helpful/0" in w for w in report.waiting)


def test_bootstrap_is_paired_exact_at_the_extremes_and_matches_the_normal_width() -> None:
    info = {"a": ("helpful", 0), "b": ("mixed", 0), "c": ("harmless", 0)}
    rng = np.random.default_rng(5)
    verdicts = rng.random(400) < 0.7
    items = [{"checkpoint": ck, "subset": "s", "item_id": str(i), "correct": bool(v if ck != "c" else True)}
             for ck in info for i, v in enumerate(verdicts)]
    boot = type_bootstrap(items, {"s": "helpful"}, info)
    assert np.array_equal(boot[("helpful", "helpful")], boot[("mixed", "helpful")])  # same items, same resample
    assert np.all(boot[("harmless", "helpful")] == 100.0)
    lo, hi = np.percentile(boot[("helpful", "helpful")], [2.5, 97.5])
    p = verdicts.mean()
    half = 1.96 * math.sqrt(p * (1 - p) / 400) * 100
    assert lo == pytest.approx(100 * p - half, abs=1.0) and hi == pytest.approx(100 * p + half, abs=1.0)


# -- neuron numbers, computed independently from the capture rows ------------------------------------------------
def _scores(cap: Capture, shape: tuple[int, int]) -> np.ndarray:
    """S = (X_chosen + X_rejected) / 2 with X the token-weighted mean activation over the RM's own objectives."""
    own = {"helpful": ["helpful"], "harmless": ["harmless"], "mixed": ["helpful", "harmless"]}[cap.regime]
    sides = {}
    for side in ("chosen", "rejected"):
        num, den = np.zeros(shape), np.zeros(shape)
        for r in cap.rows:
            if r["side"] == side and r["objective"] in own:
                num[r["layer"], r["neuron"]] += r["n_tokens"] * r["mean"]
                den[r["layer"], r["neuron"]] += r["n_tokens"]
        sides[side] = num / den
    return (sides["chosen"] + sides["rejected"]) / 2


def _top(cap: Capture) -> np.ndarray:
    s = _scores(cap, (3, 16))
    return s >= np.percentile(s, 100 - P)


def test_overlap_jaccard_hypergeometric_and_layer_fractions_match_an_independent_computation(
        world: SimpleNamespace) -> None:
    jac: dict[str, list[float]] = {"helpful–harmless": [], "mixed–helpful": [], "mixed–harmless": []}
    pvals: dict[str, list[float]] = {k: [] for k in jac}
    late: list[float] = []
    for s in SEEDS:
        h, r, m = (_top(world.captures[s][str(x)]) for x in REGIMES)
        for name, a, b in (("helpful–harmless", h, r), ("mixed–helpful", m, h), ("mixed–harmless", m, r)):
            jac[name].append((a & b).sum() / (a | b).sum())
            n, ka, kb, k = a.size, int(a.sum()), int(b.sum()), int((a & b).sum())
            pvals[name].append(sum(math.comb(ka, i) * math.comb(n - ka, kb - i)
                                   for i in range(k, min(ka, kb) + 1)) / math.comb(n, kb))
        late.append(m[2].sum() / m.sum())
    rows = {r[0]: r for r in rows_of(world.report, "overlap")}
    for name in jac:
        assert rows[name][2] == pytest.approx(np.mean(jac[name]))
        assert rows[name][6] == pytest.approx(max(pvals[name]))
    fr = {r[0]: r for r in rows_of(world.report, "layer_fractions")}
    assert fr["mixed"][4] == pytest.approx(np.mean(late))
    assert world.report.table("overlap").paper[:3] == [0.48, 0.61, 0.50]  # type: ignore[index]
    migration = [r for r in rows_of(world.report, "migration_regimes") if r[0] == 0]
    h, r_, m = (_top(world.captures[0][str(x)]) for x in REGIMES)
    shared = next(x for x in migration if x[1] == "shared")
    assert shared[2:5] == [int((h & r_).sum()), int((h & r_ & m).sum()), int((h & r_ & ~m).sum())]
    assert sum(x[2] for x in migration) == h.size
    seeds = rows_of(world.report, "migration_seeds")
    assert sum(sum(x[2:6]) for x in seeds) == h.size  # every neuron moves somewhere


# -- ablation numbers -----------------------------------------------------------------------------------------
def test_delta_table_is_the_mean_over_the_types_subsets(world: SimpleNamespace) -> None:
    rows = {(r[0], r[1]): r for r in rows_of(world.report, "ablation_delta")}
    for regime in REGIMES:
        b = rows_b("x", regime, 10.0)
        for stype in OBJECTIVES:
            subs = [x for x in b if x["grp"] in {f"subset:{s}" for s in B_SUBSETS[stype]}]
            want = 100 * sum(x["delta"] for x in subs) / len(subs)
            row = rows[(str(regime), f"{stype}-type")]
            assert row[4] == pytest.approx(want)
            assert row[2] == ("own" if stype == regime or regime == Regime.mixed else "opposing")
    paper = dict(zip(rows, world.report.table("ablation_delta").paper or [], strict=True))
    assert paper[("harmless", "harmless-type")] == -12.9 and paper[("helpful", "harmless-type")] == 5.5


def test_specific_vs_shared_and_dose_response(world: SimpleNamespace) -> None:
    c = rows_c("x", Regime.mixed, [10.0, 20.0])
    rows = {(r[0], r[1]): r for r in rows_of(world.report, "specific_vs_shared")}
    shared10 = next(x for x in c if x["condition"] == OverlapPart.shared and x["p"] == 10.0 and x["grp"] == "all")
    assert rows[("shared", 10.0)][4] == pytest.approx(shared10["transfer"])
    assert rows[("unablated", None)][5] == pytest.approx(0.5)
    paper = dict(zip(rows, world.report.table("specific_vs_shared").paper or [], strict=True))
    assert paper[("shared", 10.0)] == 0.496 and paper[("shared", 20.0)] is None
    dose = {(r[0], r[1], r[2]): r for r in rows_of(world.report, "dose_response")}
    assert dose[("helpful", "magnitude", 10.0)][4] == pytest.approx(-4.0)  # delta = -0.004 p
    assert dose[("helpful", "random", 10.0)][4] == pytest.approx(100 * np.mean([-0.015, -0.005]))
    names = [f.name for f in world.report.figures]
    assert {"accuracy", "overlap_venn", "migration_regimes", "migration_seeds", "dose_response",
            "ablation_delta", "specific_vs_shared"} <= set(names)
    assert world.report.waiting == []


def test_figures_are_strict_json_with_dataset_text_escaped(world: SimpleNamespace) -> None:
    import json

    for f in world.report.figures:
        json.dumps(f.figure, allow_nan=False)
    labels = json.dumps(world.report.figure("transfer").figure)
    assert "<script>" not in labels and "&lt;script&gt;" in labels


# -- verdict rules on constructed numbers --------------------------------------------------------------------------
def _boot(values: dict[tuple[str, str], float], noise: float, n: int = 2000) -> dict[tuple[str, str], np.ndarray]:
    rng = np.random.default_rng(1)
    shared = rng.normal(0, noise, n)  # the items' common resampling noise (paired)
    return {k: v + shared + rng.normal(0, noise / 4, n) for k, v in values.items()}


def _acc(mixed: tuple[float, float], helpful: tuple[float, float], harmless: tuple[float, float]
         ) -> dict[tuple[str, str], float]:
    """(helpful-type, harmless-type) accuracy of each RM."""
    out = {}
    for regime, accs in (("mixed", mixed), ("helpful", helpful), ("harmless", harmless)):
        out[(regime, "helpful")], out[(regime, "harmless")] = accs
    return out


def test_claim_1_rule() -> None:
    paper_like = _acc(mixed=(50.4, 60.6), helpful=(51.3, 30.5), harmless=(43.9, 70.8))
    assert claim_1(_boot(paper_like, 1.0), paper_like).verdict == HOLDS  # type: ignore[arg-type]
    better = _acc(mixed=(55.0, 80.0), helpful=(51.3, 30.5), harmless=(43.9, 70.8))
    assert claim_1(_boot(better, 1.0), better).verdict == FAILS  # type: ignore[arg-type]
    close = _acc(mixed=(51.0, 70.0), helpful=(51.3, 30.5), harmless=(43.9, 70.8))
    c = claim_1(_boot(close, 5.0), close)  # type: ignore[arg-type]
    assert c.verdict == INCONCLUSIVE and "95% CI" in c.evidence and "harmless RM" in c.evidence
    assert claim_1({}, {}).verdict == INCONCLUSIVE


def _b(regime: str, own_excess: tuple[float, float], opp: tuple[float, float]) -> list[dict[str, Any]]:
    own = "helpful" if regime == "helpful" else "harmless"
    other = "harmless" if own == "helpful" else "helpful"
    base = {"group_type": None, "delta": -0.05, "random_delta_mean": 0.0, "p": 10.0}
    return [{**base, "grp": f"objective:{own}", "ci_lo": -0.1, "ci_hi": 0.0, "excess_ci_lo": own_excess[0],
             "excess_ci_hi": own_excess[1]},
            {**base, "grp": f"objective:{other}", "delta": sum(opp) / 2, "ci_lo": opp[0], "ci_hi": opp[1],
             "excess_ci_lo": None, "excess_ci_hi": None}]


def test_claim_2_rule() -> None:
    hurts, helps, flat = (-0.08, -0.02), (0.01, 0.05), (-0.02, 0.02)
    assert claim_2({("helpful", 0): _b("helpful", hurts, helps),
                    ("harmless", 0): _b("harmless", hurts, flat)}).verdict == HOLDS
    assert claim_2({("helpful", 0): _b("helpful", (0.01, 0.04), helps),
                    ("harmless", 0): _b("harmless", hurts, flat)}).verdict == FAILS  # own hurt less than random
    assert claim_2({("helpful", 0): _b("helpful", hurts, (-0.05, -0.01)),
                    ("harmless", 0): _b("harmless", hurts, (-0.05, -0.01))}).verdict == FAILS  # never helps
    assert claim_2({("helpful", 0): _b("helpful", flat, helps),
                    ("harmless", 0): _b("harmless", hurts, flat)}).verdict == INCONCLUSIVE
    assert claim_2({("helpful", 0): _b("helpful", hurts, helps)}).verdict == INCONCLUSIVE  # no harmless RM yet


def _masks(n_shared: int) -> Any:
    h = np.zeros((3, 100), dtype=bool)
    r = np.zeros((3, 100), dtype=bool)
    h.flat[:30] = True
    r.flat[30 - n_shared:60 - n_shared] = True
    return SimpleNamespace(masks={OverlapPart.helpful: h, OverlapPart.harmless: r})


def _c(shared: tuple[float, float], specific: tuple[float, float], n: int = 10) -> dict[str, dict[str, Any]]:
    return {str(part): {"condition": str(part), "p": 10.0, "n_neurons": n, "ci_lo": ci[0], "ci_hi": ci[1]}
            for part, ci in ((OverlapPart.shared, shared), (OverlapPart.helpful_specific, specific),
                             (OverlapPart.harmless_specific, specific))}


def test_claim_3_rule() -> None:
    big, none_ = {0: _masks(20)}, {0: _masks(0)}  # 20 of 30 shared (chance: 3), or disjoint
    strong, weak = (-0.5, -0.3), (-0.1, 0.0)
    assert claim_3(big, {0: _c(strong, weak)}, 10.0).verdict == HOLDS
    assert claim_3(none_, {0: _c(strong, weak)}, 10.0).verdict == FAILS  # no overlap beyond chance
    assert claim_3(big, {0: _c(weak, strong)}, 10.0).verdict == FAILS  # a specific set moves more
    assert claim_3(big, {0: _c((-0.3, 0.0), (-0.2, 0.1))}, 10.0).verdict == INCONCLUSIVE  # CIs overlap
    c = claim_3(big, {}, 10.0)
    assert c.verdict == INCONCLUSIVE and "waiting for experiment C" in c.evidence
    assert "hypergeometric p" in c.evidence


def test_claims_of_the_seeded_study_name_their_evidence(world: SimpleNamespace) -> None:
    claims = {c.number: c for c in world.report.claims}
    assert set(claims) == {1, 2, 3}
    assert "95% CI" in claims[1].evidence and "bootstrap" in claims[1].evidence
    # the seeded B rows: the helpful RM's own excess CI [-9.5, +0.5] straddles 0, opposing Δ CIs lie below 0
    assert claims[2].verdict == FAILS and "(b) does not hold" in claims[2].evidence
    assert all(c.rule for c in claims.values())


def test_a_std_over_one_seed_is_shown_as_a_dash_not_as_zero() -> None:
    from app.studies.report import ReportTable

    t = ReportTable(name="t", title="t", columns=["RM", "seeds", "accuracy %", "std over seeds"],
                    rows=[["a", 1, 60.0, 0.0], ["b", 3, 55.0, 1.5]], formats={"std over seeds": ".1f"})
    assert t.display_rows() == [["a", "1", "60", "–"], ["b", "3", "55", "1.5"]]
