"""ACCEPTANCE: live ablation toggles, shareable views and ablation result pages in a real Chromium.

On real tiny-bert RMs (trained in three regimes and captured by real jobs): open the overlap dashboard, toggle
a set off and watch the shift chart appear and change, create a share link, open it in a fresh browser
context and see the same numbers, and have a job launch through the read-only link refused (403).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest

from tests.app.neurons.pipeline import RealRMs, settings_from, train_and_capture
from tests.conftest import LiveServer, wait_job

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny-bert"
PROBE = 8  # live probe pairs per objective (small: fast toggles)
WORKER_START_MS = 120_000  # the first toggle on an RM starts a worker that imports torch and loads the RM


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, real_rms: RealRMs) -> Iterator[SimpleNamespace]:
    with LiveServer(settings_from(real_rms.captured, tmp_path_factory.mktemp("ablation-pages"))) as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as http:
        checkpoints = train_and_capture(http)
        params = {"experiment": "A", "checkpoint": checkpoints["helpful"], "percents": [0, 10, 50],
                  "random_seeds": [0, 1], "max_length": 64, "dataset": {"source": "bundled", "split": "test",
                                                                         "limit": 8}}
        r = http.post("/api/jobs", json={"kind": "ablate", "params": params})
        assert r.status_code == 202, r.text
        job = wait_job(lambda j: http.get(f"/api/jobs/{j}").json(), r.json()["id"], timeout=600)
        assert job["status"] == "succeeded", job.get("error")
        yield SimpleNamespace(url=srv.url, http=http, checkpoints=checkpoints, dose_key=job["result_key"])


def _shift_data(page) -> str:  # type: ignore[no-untyped-def]
    """What the shift chart currently draws (its traces' y values), as drawn by Plotly in the page."""
    return page.evaluate("JSON.stringify((document.getElementById('plot-shift') || {data: []}).data"
                         ".map(function (t) { return [t.name, t.x, t.y]; }))")


def _wait_shift(page, timeout: float = WORKER_START_MS) -> None:  # type: ignore[no-untyped-def]
    """Until the toggle's run has streamed to its end (exact rounds, then its random control) and its shift
    chart is drawn."""
    page.locator("#live-run[data-state='done']").wait_for(timeout=timeout)
    page.locator("#plot-shift[data-rendered='1'] .main-svg").first.wait_for(timeout=timeout)


def _numbers(page) -> list[list[str]]:  # type: ignore[no-untyped-def]
    return page.evaluate("Array.from(document.querySelectorAll('#shift-table tbody tr')).map(function (tr) {"
                         " return Array.from(tr.cells).map(function (td) {"
                         " return (td.dataset.value || '') + '|' + td.textContent.trim(); }); })")


def test_toggle_share_and_read_only_refusal(browser, page, site) -> None:  # type: ignore[no-untyped-def]
    mixed = site.checkpoints["mixed"]
    n_jobs = len(site.http.get("/api/jobs").json())
    page.goto(site.url + f"/models/{MODEL}/dashboard?p=10&stat=A&seed=0&probe_limit={PROBE}")
    page.locator("#live-form").wait_for(timeout=20_000)
    assert page.locator("#live-ck").input_value() == mixed  # the mixed RM of this base model and seed
    # Opening the dashboard computes its default toggle (the shared set) without a click.
    _wait_shift(page)
    assert "shared" in page.locator("#shift-what").inner_text()
    before = _shift_data(page)

    # Toggle H (the helpful RM's set) off: a new run replaces the default one.
    default_run = page.locator("#live-run").get_attribute("data-run")
    page.select_option("#live-part", "helpful")
    page.wait_for_function("(old) => { var r = document.getElementById('live-run');"
                           " return r && r.dataset.run !== old && r.dataset.state === 'done'; }",
                           arg=default_run, timeout=WORKER_START_MS)
    _wait_shift(page)
    first = _shift_data(page)
    assert first != before and '"helpful objective"' in first
    assert page.locator("#shift-n-neurons").inner_text() != "0"
    assert re.search(r"(cached_prefix|full|answer_cache)", page.locator("#shift-path").inner_text())
    # The toggle state is in the page URL now: the URL alone reproduces the view.
    page.wait_for_url(re.compile(rf".*ck={mixed}.*part=helpful.*"))

    # Toggle R instead: the chart's data changes.
    page.select_option("#live-part", "harmless")
    page.wait_for_url(re.compile(r".*part=harmless.*"), timeout=60_000)
    page.wait_for_function("(prev) => { var el = document.getElementById('plot-shift');"
                           " return el && el.data && JSON.stringify(el.data.map(function (t) {"
                           " return [t.name, t.x, t.y]; })) !== prev; }", arg=first, timeout=60_000)
    _wait_shift(page)
    second = _shift_data(page)
    assert second != first
    numbers = _numbers(page)
    assert len(numbers) == 2 and all(len(r) == 10 for r in numbers)

    # Share this exact view.
    page.click("#share-button")
    share = page.locator("#share-url")
    share.wait_for(state="visible")
    page.wait_for_function("() => document.getElementById('share-url').value.indexOf('/s/') > 0")
    url = share.input_value()
    token = url.rsplit("/s/", 1)[1]
    assert page.js_errors == []

    # A fresh browser context (no cookies, no history) opens it and sees the same numbers.
    ctx = browser.new_context()
    try:
        other = ctx.new_page()
        errors: list[str] = []
        other.on("pageerror", lambda e: errors.append(str(e)))
        other.goto(url)
        other.wait_for_url(re.compile(rf".*/models/{MODEL}/dashboard\?.*share={token}.*"))
        assert other.locator("#read-only-badge").is_visible()
        assert other.locator("#share-button").count() == 0
        _wait_shift(other, timeout=60_000)
        assert _shift_data(other) == second
        assert _numbers(other) == numbers
        assert other.locator("#live-part").input_value() == "harmless"

        # Launching a job through the read-only link is refused: by the API, and by the queue button
        # (rendered disabled; re-enabled here, the server still refuses and the page shows the 403).
        status = other.evaluate(
            "async (token) => (await fetch('/api/jobs', {method: 'POST', headers: {'Content-Type':"
            " 'application/json', 'X-Tension-Share': token}, body: JSON.stringify({kind: 'ablate', params:"
            " {experiment: 'single', checkpoint: '" + mixed + "', neuron_set: {'1': [5]}}})})).status", token)
        assert status == 403
        button = other.locator("#queue-full")
        assert button.is_disabled()
        with other.expect_response(lambda r: r.url.endswith("/ui/ablation/queue")) as resp:
            button.evaluate("b => { b.disabled = false; b.click(); }")
        assert resp.value.status == 403
        other.locator("#queue-result .error").wait_for(timeout=10_000)
        assert "read-only" in other.locator("#queue-result").inner_text()
        assert len(site.http.get("/api/jobs").json()) == n_jobs  # nothing was launched
        assert errors == []
    finally:
        ctx.close()


def test_neuron_page_toggles_its_neuron_and_queues_the_exact_job(page, site) -> None:  # type: ignore[no-untyped-def]
    page.goto(site.url + f"/models/{MODEL}/neurons/1/5?probe_limit={PROBE}")
    page.locator("#live-form").wait_for(timeout=20_000)
    page.select_option("#live-ck", site.checkpoints["harmless"])  # any captured RM
    _wait_shift(page)
    assert page.locator("#shift-n-neurons").inner_text() == "1"
    page.wait_for_url(re.compile(rf".*/neurons/1/5\?.*ck={site.checkpoints['harmless']}.*"))
    # The queue button launches the full-test evaluation and shows the job's live progress fragment.
    page.click("#queue-full")
    frag = page.locator("#queue-result .job-status")
    frag.wait_for(timeout=20_000)
    assert frag.get_attribute("data-status") in ("queued", "running", "succeeded")
    job_id = frag.get_attribute("id").removeprefix("job-")  # type: ignore[union-attr]
    job = site.http.get(f"/api/jobs/{job_id}").json()
    assert job["kind"] == "ablate" and job["params"]["experiment"] == "single"
    assert job["params"]["neuron_set"] == {"1": [5]} and job["params"]["checkpoint"] == site.checkpoints["harmless"]
    site.http.post(f"/api/jobs/{job_id}/cancel")  # the full test split is not needed here
    assert page.js_errors == []


def test_dose_response_page_draws_the_band_and_lines(page, site) -> None:  # type: ignore[no-untyped-def]
    page.goto(site.url + "/ablations")
    page.click(f"a.ablation-link[href='/ablations/{site.dose_key}']")
    page.wait_for_url(f"**/ablations/{site.dose_key}")
    page.locator("#plot-dose[data-rendered='1'] .main-svg").first.wait_for(timeout=20_000)
    names = page.evaluate("document.getElementById('plot-dose').data.map(function (t) { return t.name; })")
    assert "random ± std over seeds" in names and "magnitude-based" in names
    assert "layer-matched random of magnitude" in names
    assert page.locator("#dose-table tbody tr").count() >= 3
    assert page.locator("#recompute-cmd").inner_text().startswith("tension submit ablate '{")
    assert page.js_errors == []
