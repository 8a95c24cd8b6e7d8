"""Launch a scoring job from the browser, watch it progress, see the table and the histogram."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.e2e


def test_launch_score_job_and_see_results(page, live_server) -> None:  # type: ignore[no-untyped-def]
    page.goto(live_server.url + "/jobs")
    page.select_option("select[name=model]", "tiny-bert")
    page.fill("input[name=limit]", "8")
    page.click("#score-form button[type=submit]")
    status = page.locator("#launch-result .job-status")
    status.wait_for(timeout=10_000)
    assert status.get_attribute("data-status") in ("queued", "running", "succeeded")
    page.locator("#launch-result .job-status[data-status=succeeded]").wait_for(timeout=120_000)
    page.click("#launch-result a.result-link")
    page.wait_for_url("**/results/**")
    page.locator("#reward-hist[data-rendered='1'] .main-svg").first.wait_for(timeout=20_000)
    assert page.locator("#rewards-table tbody tr").count() == 32
    assert page.locator("#summary-table tbody tr").count() >= 2
    assert page.js_errors == []


def test_bad_input_in_form_shows_error_not_crash(page, live_server) -> None:  # type: ignore[no-untyped-def]
    page.goto(live_server.url + "/jobs")
    page.evaluate("document.querySelector('input[name=max_length]').removeAttribute('min')")
    page.fill("input[name=max_length]", "2")
    page.click("#score-form button[type=submit]")
    err = page.locator("#launch-result .error")
    err.wait_for(timeout=10_000)
    assert "max_length" in err.inner_text()
