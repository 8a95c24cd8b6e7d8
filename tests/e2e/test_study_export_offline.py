"""The exported study report opens with the network off: every figure draws from the inlined Plotly, no
request leaves the file, no script error, no Content-Security-Policy violation."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.studies.export import report_html
from tests.app.studies.test_report import build_world

pytestmark = pytest.mark.e2e


def test_exported_report_draws_every_figure_offline(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    world = build_world(tmp_path / "study")
    try:
        report = world.report
        page_html = report_html(report, title="Offline study <b>report</b>", recompute_command="tension study")
    finally:
        world.services.close()
    path = tmp_path / "report.html"
    path.write_text(page_html, encoding="utf-8")
    assert len(report.figures) >= 8

    ctx = browser.new_context(offline=True)
    requests: list[str] = []

    def guard(route) -> None:  # type: ignore[no-untyped-def]
        if route.request.url.startswith("file://"):
            route.continue_()
        else:
            requests.append(route.request.url)
            route.abort()

    ctx.route("**/*", guard)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: None if r.url.startswith(("file://", "data:")) else requests.append(r.url))
    try:
        page.goto(path.as_uri())
        for f in report.figures:
            page.locator(f"#plot-{f.name}[data-rendered='1'].js-plotly-plot svg.main-svg").first.wait_for(
                timeout=20_000)
        assert page.locator(".js-plotly-plot").count() == len(report.figures)
        assert page.locator("#claims tbody tr").count() == 3
        assert page.title() == "Offline study <b>report</b>"
        assert page.evaluate("document.querySelectorAll('b').length") == 0  # the title's markup stayed text
    finally:
        ctx.close()
    assert requests == [] and errors == []
