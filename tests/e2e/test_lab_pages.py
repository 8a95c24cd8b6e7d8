"""The reward-model lab in Chromium.

1. The whole flow through the browser with real worker jobs: train tiny-bert in all three regimes from the
   lab form, evaluate the three checkpoints from the same page, open the runs list and the comparison.
2. The comparison and RM pages on factory rows (tests/factories/evaluation.py) with several seeds and a
   hostile subset name.
"""

from __future__ import annotations

import pytest

from tests.factories import evaluation as lab
from workers.contract.vocab import REGIMES as ALL_REGIMES
from workers.contract.vocab import Regime

pytestmark = pytest.mark.e2e

REGIMES = list(ALL_REGIMES)


def _wait_plot(page, plot_id: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(f"#{plot_id}[data-rendered='1'] .main-svg").first.wait_for(timeout=20_000)


def _trace_names(page, plot_id: str) -> list[str]:  # type: ignore[no-untyped-def]
    return page.evaluate(f"document.getElementById('{plot_id}').data.map(t => t.name)")  # type: ignore[no-any-return]


def _wait_succeeded(page, container: str, n: int, timeout_ms: int = 540_000) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        "([sel, n]) => { const s = Array.from(document.querySelectorAll(sel + ' .job-status'));"
        " if (s.some(e => e.dataset.status === 'failed' || e.dataset.status === 'cancelled')) return true;"
        " return s.length === n && s.every(e => e.dataset.status === 'succeeded'); }",
        arg=[container, n], timeout=timeout_ms, polling=1000)
    failed = page.locator(f"{container} .job-status[data-status=failed] .error")
    assert failed.count() == 0, failed.first.inner_text()


def test_train_evaluate_and_compare_from_the_browser(page, live_server) -> None:  # type: ignore[no-untyped-def]
    page.goto(live_server.url + "/lab")
    page.select_option("#train-form select[name=model]", "tiny-bert")
    page.select_option("#train-form select[name=regime]", "all")
    page.select_option("#train-form select[name=preset]", "demo")
    page.fill("#train-form input[name=limit]", "8")
    page.click("#train-form button[type=submit]")
    page.locator("#train-result .job-status").nth(2).wait_for(timeout=15_000)
    _wait_succeeded(page, "#train-result", 3)

    page.reload()
    boxes = page.locator("#evaluate-form input[name=checkpoints]")
    assert boxes.count() == 3
    for i in range(3):
        boxes.nth(i).check()
    page.fill("#evaluate-form input[name=limit]", "8")
    page.click("#evaluate-form button[type=submit]")
    _wait_succeeded(page, "#evaluate-result", 1)

    page.goto(live_server.url + "/lab/runs")
    group = page.locator(".run-group[data-base-model='tiny-bert']")
    assert group.locator("tbody tr").count() == 3
    assert "not evaluated" not in group.inner_text()
    group.locator("a.compare-link").click()
    page.wait_for_url("**/lab/compare/tiny-bert")
    for plot_id in ("plot-accuracy", "plot-types", "plot-transfer", "plot-reliability"):
        _wait_plot(page, plot_id)
    assert _trace_names(page, "plot-accuracy") == REGIMES
    assert _trace_names(page, "plot-types") == REGIMES
    assert _trace_names(page, "plot-reliability") == ["perfect calibration", *REGIMES]
    assert page.evaluate("document.getElementById('plot-transfer').data[0].type") == "heatmap"
    # Three bars per subset: one per regime, each with its error bar.
    n_subsets = page.locator("#compare-subsets tbody tr").count()
    assert page.locator("#plot-accuracy .barlayer .point").count() == 3 * n_subsets
    assert page.locator("#flips .flip-block").count() == 2

    page.locator("#compare-checkpoints tr[data-regime=mixed] a").first.click()
    page.wait_for_url("**/lab/rm/**")
    for plot_id in ("plot-training", "plot-accuracy", "plot-reliability"):
        _wait_plot(page, plot_id)
    assert _trace_names(page, "plot-accuracy")[0] == "mixed RM"
    assert "ECE" in page.locator("#calibration-numbers").inner_text()
    assert page.js_errors == []


def test_compare_page_with_seeds_and_hostile_names(page, live_server) -> None:  # type: ignore[no-untyped-def]
    lab.seed_lab(live_server.services)
    page.add_init_script("window.__xss = 0; window.alert = () => { window.__xss = 1; };")
    page.goto(live_server.url + "/lab/compare/" + lab.BASE)
    for plot_id in ("plot-accuracy", "plot-types", "plot-transfer", "plot-reliability"):
        _wait_plot(page, plot_id)
    assert _trace_names(page, "plot-accuracy") == REGIMES
    # Two seeds: the error bars are the std over seeds, symmetric.
    err = page.evaluate("document.getElementById('plot-accuracy').data.map(t => t.error_y.array[0])")
    assert all(e > 0 for e in err)
    assert len(_trace_names(page, "plot-reliability")) == 1 + 6
    assert lab.EVIL in page.locator("#compare-subsets").inner_text()  # shown as text
    assert page.evaluate("window.__xss") == 0
    page.click("a[href$='?seed=1']")
    page.wait_for_url("**?seed=1")
    _wait_plot(page, "plot-reliability")
    assert _trace_names(page, "plot-reliability") == ["perfect calibration", *REGIMES]
    page.goto(live_server.url + "/lab/rm/" + lab.ck_id(Regime.harmless, 1))
    for plot_id in ("plot-training", "plot-accuracy", "plot-reliability"):
        _wait_plot(page, plot_id)
    assert page.evaluate("window.__xss") == 0
    assert page.js_errors == []
