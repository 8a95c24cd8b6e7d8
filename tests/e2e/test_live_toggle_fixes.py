"""ACCEPTANCE: the live ablation toggle behaves on the second, third, ... toggle too, in a real Chromium.

On real tiny-bert RMs (trained and captured by real jobs, once per session): the shift chart re-renders as a
Plotly figure every time and never covers the "Queue the exact evaluation" button below it; a toggle takes
no snapshot of the (large) page for htmx's history cache and logs no history error, while its state still
goes into the page URL; editing a field and clicking "Toggle off" sends one request, not two; a neuron set
shows as `layer·index` links to the neurons' pages, never as JSON; a toggle superseded by a newer one stops
its exact work on the worker (asserted from the server's side).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest

from tests.app.neurons.pipeline import RealRMs, settings_from, train_and_capture
from tests.conftest import LiveServer
from tests.e2e.test_ablation_pages import MODEL, PROBE, WORKER_START_MS, _shift_data, _wait_shift

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DASHBOARD = f"/models/{MODEL}/dashboard?p=10&stat=A&seed=0&probe_limit={PROBE}"
LINK = re.compile(r"^\d+·\d+$")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, real_rms: RealRMs) -> Iterator[SimpleNamespace]:
    with LiveServer(settings_from(real_rms.captured, tmp_path_factory.mktemp("live-toggle"))) as srv, \
            httpx.Client(base_url=srv.url, timeout=120) as http:
        yield SimpleNamespace(url=srv.url, http=http, checkpoints=train_and_capture(http))


TOGGLE = re.compile(r"/ui/live(/(?!runs/|warm|dial|estimate)[^/?]+)?\?")


def _watch(page) -> SimpleNamespace:  # type: ignore[no-untyped-def]
    """Console messages, toggle requests (not the runs' polls) and run polls, from now on."""
    seen = SimpleNamespace(console=[], live=[], polls=[])

    def request(r) -> None:  # type: ignore[no-untyped-def]
        if "/ui/live/runs/" in r.url:
            seen.polls.append(r.url)
        elif TOGGLE.search(r.url):
            seen.live.append(r.url)

    page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text} ({m.location.get('url', '')})"))
    page.on("request", request)
    return seen


def _count_history_saves(page) -> None:  # type: ignore[no-untyped-def]
    """Count htmx's snapshots of the page for its history cache (`htmx:beforeHistorySave`) in window.historySaves."""
    page.evaluate("() => { window.historySaves = 0; document.body.addEventListener('htmx:beforeHistorySave',"
                  " function () { window.historySaves += 1; }); }")


def _mark_stale(page) -> None:  # type: ignore[no-untyped-def]
    """Remember the run on the page now: the next result is another run (its polls re-swap the old one)."""
    page.evaluate("() => { var r = document.getElementById('live-run'); window.staleRun = r ? r.dataset.run : ''; }")


def _wait_new_run(page, state: str | None = None) -> str:  # type: ignore[no-untyped-def]
    """Until the page shows a run other than the one marked stale (in `state`, if given); its id."""
    page.wait_for_function("(state) => { var r = document.getElementById('live-run');"
                           " return r && r.dataset.run !== window.staleRun && (!state || r.dataset.state === state); }",
                           arg=state, timeout=WORKER_START_MS)
    return str(page.locator("#live-run").get_attribute("data-run"))


def _wait_new_result(page) -> None:  # type: ignore[no-untyped-def]
    """Wait for a fresh result, its exact rounds streamed to the end (and its control's), settled by htmx,
    its chart drawn."""
    _wait_new_run(page, "done")
    page.wait_for_function("() => !document.getElementById('live-result').classList.contains('htmx-settling')")
    _wait_shift(page)
    page.wait_for_timeout(100)  # anything htmx or Plotly still does after settling has happened


def _check_chart_and_button(page) -> None:  # type: ignore[no-untyped-def]
    state = page.evaluate("""() => {
        var el = document.getElementById('plot-shift'), box = el.getBoundingClientRect();
        var svgs = Array.from(el.querySelectorAll('.main-svg'));
        return {cls: Array.from(el.classList), containers: el.querySelectorAll('.plot-container').length,
                svgSets: el.querySelectorAll('.svg-container').length, mainSvgs: svgs.length,
                positions: svgs.map(function (s) { return getComputedStyle(s).position; }),
                outside: svgs.filter(function (s) { var r = s.getBoundingClientRect();
                  return r.top < box.top - 1 || r.bottom > box.bottom + 1 || r.left < box.left - 1
                         || r.right > box.right + 1; }).length};
    }""")
    assert "js-plotly-plot" in state["cls"], state
    assert state["containers"] == 1 and state["svgSets"] == 1, state  # one figure, one set of SVG roots
    assert state["mainSvgs"] >= 1 and set(state["positions"]) == {"absolute"}, state  # Plotly's CSS applies
    assert state["outside"] == 0, state  # every SVG layer inside the chart's box
    button = page.locator("#queue-full")
    assert button.is_enabled()
    button.click(trial=True, timeout=5_000)  # Playwright's checks: visible, stable, enabled, receives the click
    hit = button.evaluate("b => { b.scrollIntoView({block: 'center'}); var r = b.getBoundingClientRect();"
                          " var e = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);"
                          " return e === b || b.contains(e); }")
    assert hit, "something covers #queue-full"


def _check_neuron_list(page, n_neurons: int) -> None:  # type: ignore[no-untyped-def]
    links = page.locator("#shift-neurons a.neuron-link")
    texts = links.all_inner_texts()
    assert texts and all(LINK.match(t) for t in texts), texts
    for a in links.all()[:3]:
        layer, index = a.inner_text().split("·")
        assert a.get_attribute("href") == f"/models/{MODEL}/neurons/{layer}/{index}"
    more = page.locator("#shift-neurons .neuron-more")
    if more.count():
        m = re.fullmatch(r"\+(\d+) more", more.inner_text())
        assert m and len(texts) + int(m.group(1)) == n_neurons
    else:
        assert len(texts) == n_neurons
    assert "{" not in page.locator("#live-shift").inner_text()


def _settle_autorun(page, seen) -> None:  # type: ignore[no-untyped-def]
    """The dashboard computes its default toggle on load: wait for it, then count from zero."""
    page.locator("#live-form").wait_for(timeout=20_000)
    page.locator("#live-run[data-state='done']").wait_for(timeout=WORKER_START_MS)
    seen.live.clear()
    seen.polls.clear()


def test_three_toggles_rerender_the_chart_below_no_control(page, site) -> None:  # type: ignore[no-untyped-def]
    seen = _watch(page)
    page.goto(site.url + DASHBOARD)
    _settle_autorun(page, seen)
    _count_history_saves(page)
    drawn: list[str] = []
    for part in ("helpful", "harmless", "mixed"):
        _mark_stale(page)
        page.select_option("#live-part", part)
        page.wait_for_url(re.compile(rf".*ck={site.checkpoints['mixed']}.*part={part}.*"), timeout=WORKER_START_MS)
        _wait_new_result(page)
        _check_chart_and_button(page)
        n_neurons = int(page.locator("#shift-n-neurons").inner_text())
        assert n_neurons > 0
        _check_neuron_list(page, n_neurons)
        drawn.append(_shift_data(page))
        # Its first-order estimate is shown beside the exact answer and the random control, labelled.
        kinds = page.locator("#run-table tbody tr").evaluate_all("rs => rs.map(r => r.dataset.kind)")
        assert sorted(set(kinds)) == ["control", "estimate", "exact"] and kinds.count("estimate") == 2, kinds
        assert "first-order" in page.locator("#estimate-caveat").inner_text()
        assert re.search(r"estimate \d+ ms", page.locator("#run-timing").inner_text())
        page.locator("#plot-run[data-rendered='1'] .main-svg").first.wait_for(timeout=5_000)
    assert len(set(drawn)) == 3  # each toggle drew its own numbers

    # The URL carried each toggle, yet htmx took no snapshot of the page and logged no history error.
    assert page.evaluate("window.historySaves") == 0
    assert not [m for m in seen.console if "historyCache" in m], seen.console
    assert not [m for m in seen.console if m.startswith("error:") and "/favicon.ico" not in m], seen.console
    assert len(seen.live) == 3, seen.live  # one request per toggle
    assert page.js_errors == []


def test_editing_a_field_then_clicking_sends_one_request(page, site) -> None:  # type: ignore[no-untyped-def]
    seen = _watch(page)
    page.goto(site.url + DASHBOARD)
    _settle_autorun(page, seen)
    page.select_option("#live-part", "helpful")
    _wait_new_result(page)
    page.wait_for_url(re.compile(r".*part=helpful.*"))

    for n, how in ((PROBE - 2, "click"), (PROBE - 1, "enter")):
        seen.live.clear()
        _mark_stale(page)
        page.fill("#live-form input[name='probe_limit']", str(n))
        if how == "click":
            page.click("#live-toggle")  # blurs the field (its `change`), then submits the form
        else:
            page.press("#live-form input[name='probe_limit']", "Enter")
        _wait_new_result(page)
        page.wait_for_url(re.compile(rf".*probe_limit={n}.*"))
        page.wait_for_timeout(1_000)  # a second, late request would have gone out by now
        assert len(seen.live) == 1, (how, seen.live)
        cells = page.locator("#shift-table td[data-col='n_pairs']")
        assert cells.count() == 2 and all(int(v) <= n for v in cells.evaluate_all("cs => cs.map(c => c.dataset.value)"))

    # A select alone still toggles at once: one request.
    seen.live.clear()
    _mark_stale(page)
    page.select_option("#live-part", "harmless")
    _wait_new_result(page)
    page.wait_for_timeout(500)
    assert len(seen.live) == 1, seen.live
    assert page.js_errors == []


def test_neuron_page_shows_its_neuron_as_a_link_not_json(page, site) -> None:  # type: ignore[no-untyped-def]
    page.goto(site.url + f"/models/{MODEL}/neurons/1/5?probe_limit={PROBE}")
    page.locator("#live-form").wait_for(timeout=20_000)
    page.select_option("#live-ck", site.checkpoints["harmless"])
    page.locator("#live-run[data-state='done']").wait_for(timeout=WORKER_START_MS)
    _wait_shift(page)
    what = page.locator("#shift-what")
    assert "{" not in what.inner_text() and "1·5" in what.inner_text()
    link = page.locator("#shift-what #shift-neurons a.neuron-link")
    assert link.count() == 1 and link.inner_text() == "1·5"
    assert link.get_attribute("href") == f"/models/{MODEL}/neurons/1/5"
    assert "{" not in page.locator("#live-panel").inner_text()
    # the same result re-rendered by a second toggle (another mode) still leaves the queue button free
    _mark_stale(page)
    page.select_option("#live-mode", "mean")
    _wait_new_result(page)
    _check_chart_and_button(page)
    assert page.js_errors == []


BIG_PROBE = 512  # pairs per objective: 64 rounds of exact work, long enough to be superseded mid-way


def test_a_superseded_toggle_stops_its_work_on_the_server(page, site) -> None:  # type: ignore[no-untyped-def]
    seen = _watch(page)
    page.goto(site.url + f"/models/{MODEL}/dashboard?p=50&stat=A&seed=0&probe_limit={BIG_PROBE}")
    _settle_autorun(page, seen)  # the RM's worker for this probe size is warm from here on
    _mark_stale(page)
    page.select_option("#live-part", "helpful")
    older = _wait_new_run(page)
    _mark_stale(page)
    page.select_option("#live-part", "harmless")  # at once: the older toggle is still streaming
    newer = _wait_new_run(page)
    assert newer != older
    _wait_new_run(page, "done")

    # From the server's side: the older run was superseded and its worker stopped computing it.
    old = site.http.get(f"/api/live/runs/{older}").json()
    new = site.http.get(f"/api/live/runs/{newer}").json()
    assert old["state"] == "superseded" and old["ended"], old
    total = 2 * old["exact"]["n_rounds"] if old["exact"] else None
    assert old["rounds_computed"] is not None and (total is None or old["rounds_computed"] < total), old
    assert new["state"] == "done" and new["rounds_computed"] == 2 * new["exact"]["n_rounds"], new
    assert page.js_errors == []


def test_the_tension_dial_draws_estimates_then_exact_points(page, site) -> None:  # type: ignore[no-untyped-def]
    seen = _watch(page)
    page.goto(site.url + DASHBOARD)
    _settle_autorun(page, seen)
    page.click("#dial-open")
    page.locator("#plot-dial[data-rendered='1'] .main-svg").first.wait_for(timeout=WORKER_START_MS)
    traces = page.evaluate("document.getElementById('plot-dial').data.map(function (t) {"
                           " return {meta: t.meta, n: (t.x || []).length}; })")
    estimated = [t for t in traces if t["meta"] and t["meta"].get("kind") == "estimate"]
    assert any(t["n"] == 9 for t in estimated), traces  # a set's curve through 0, 0.25, ..., 2
    # Move the slider to 0 (the sets ablated): exact points arrive, round by round, then the poll stops.
    page.locator("#dial-factor").fill("0")
    page.locator("#dial-factor").dispatch_event("change")
    page.locator("#dial-points[data-factor='0'][data-running='0']").wait_for(timeout=WORKER_START_MS)
    rows = page.locator("#dial-table tr[data-factor='0'][data-final='1']")
    assert rows.count() >= 1
    page.locator("#plot-dial[data-rendered='1'] .main-svg").first.wait_for(timeout=10_000)
    exact = page.evaluate("document.getElementById('plot-dial').data.filter(function (t) {"
                          " return t.meta && t.meta.kind === 'exact'; }).reduce(function (n, t) {"
                          " return n + t.x.length; }, 0)")
    assert exact == rows.count()  # one drawn point per exact row
    assert page.js_errors == []
