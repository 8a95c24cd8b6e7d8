"""ACCEPTANCE: a new user's whole journey in Chromium, on the `smoke` preset and real jobs.

Empty home page → start the study → watch the stages → the report → a neuron from it → a live ablation
toggle → share the report → the link in a fresh browser context shows the same numbers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.conftest import LiveServer, make_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

STUDY_MS = 600_000  # the smoke study, real jobs: ~100 s on an idle machine, ~200 s on a loaded one
WORKER_START_MS = 120_000  # the first live toggle starts a worker that imports torch and loads the RM


@pytest.fixture
def server(tmp_path) -> Iterator[LiveServer]:  # type: ignore[no-untyped-def]
    with LiveServer(make_settings(tmp_path)) as srv:
        yield srv


def _report_numbers(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Every number cell of the report's tables, in order (what a reader compares)."""
    return page.evaluate("Array.from(document.querySelectorAll('#study-report table td'))"
                         ".map(function (td) { return td.innerText.trim(); })")


@pytest.mark.timeout(900)
def test_from_empty_home_to_a_shared_report(browser, page, server) -> None:  # type: ignore[no-untyped-def]
    page.goto(server.url + "/")
    assert page.locator("#run-demo").is_visible()
    assert "minutes" in page.locator("#front-door").inner_text()
    for href in ("/studies", "/lab", "/neurons", "/ablations", "/datasets", "/jobs"):
        assert page.locator(f"nav#menu a[href='{href}']").count() == 1

    # Start the smoke study from the other presets, and land on its page.
    page.click("#other-presets summary")
    page.select_option("#study-preset", "smoke")
    page.click("#start-study-button")
    page.wait_for_url(re.compile(r".*/studies/[0-9a-f]{24}$"))
    key = page.url.rsplit("/", 1)[1]
    # The stages update while it runs (polled), then the page reloads with the report.
    page.locator("#study-stages li[data-stage=train][data-status=running], "
                 "#study-stages li[data-stage=train][data-status=succeeded]").first.wait_for(timeout=30_000)
    page.locator("#study-stages[data-status=succeeded]").wait_for(timeout=STUDY_MS)
    assert page.locator("#study-stages li[data-status=succeeded]").count() == 5
    page.locator("#study-report").wait_for(timeout=30_000)
    claims = page.locator("#claims-table tbody tr")
    assert claims.count() == 3
    numbers = _report_numbers(page)
    assert len(numbers) > 10
    assert page.locator("a[href$='/export.html']").count() >= 1

    # The home page is now this report.
    page.goto(server.url + "/")
    assert key in page.locator("#study-link").inner_text()
    assert page.locator("#run-demo").count() == 0

    # Open a neuron from the report and toggle its ablation live.
    page.goto(server.url + f"/studies/{key}")
    link = page.locator("#study-explore a.neuron-link").first
    link.click()
    page.wait_for_url(re.compile(r".*/models/tiny-bert/neurons/\d+/\d+.*"))
    page.locator("#live-form").wait_for(timeout=20_000)
    options = page.locator("#live-ck option").evaluate_all("(os) => os.map(function (o) { return o.value; })")
    page.select_option("#live-ck", [o for o in options if o][0])
    page.locator("#plot-shift[data-rendered='1'] .main-svg").first.wait_for(timeout=WORKER_START_MS)
    assert page.locator("#shift-n-neurons").inner_text() == "1"

    # Share the report; a fresh context (no cookies) opens the link and sees the same numbers.
    page.goto(server.url + f"/studies/{key}")
    page.locator("#study-report").wait_for(timeout=30_000)
    page.click("#share-button")
    page.wait_for_function("() => document.getElementById('share-url').value.indexOf('/s/') > 0")
    url = page.locator("#share-url").input_value()
    assert page.js_errors == []
    ctx = browser.new_context()
    try:
        other = ctx.new_page()
        errors: list[str] = []
        other.on("pageerror", lambda e: errors.append(str(e)))
        other.goto(url)
        other.wait_for_url(re.compile(rf".*/studies/{key}\?.*share=.*"))
        assert other.locator("#read-only-badge").is_visible()
        other.locator("#study-report").wait_for(timeout=30_000)
        assert _report_numbers(other) == numbers
        assert other.locator("#claims-table tbody tr").count() == 3
        assert other.locator("#cancel-study, #resume-study").count() == 0
        assert errors == []
    finally:
        ctx.close()
