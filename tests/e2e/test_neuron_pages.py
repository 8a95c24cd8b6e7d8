"""The overlap dashboard and neuron pages in Chromium, on real captures of real (tiny) RMs.

The capture dataset is an upload whose texts are script/markup payloads: the neuron page must show them
as text (escaped by Jinja), never run them.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from types import SimpleNamespace

import httpx
import pytest

from tests.app.neurons.pipeline import RealRMs, settings_from, train_and_capture
from tests.conftest import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "tiny-bert"
SCRIPT = "<script>window.__xss=1</script>"
IMG = '<img src=x onerror="window.__xss=2">'


def _hostile_pairs() -> list[dict[str, str]]:
    """Payloads in the texts (the model sees them tokenized) and in the pair ids (kept verbatim)."""
    pairs = []
    for objective in ("helpful", "harmless"):
        for i in range(3):
            payload = (SCRIPT, IMG, "plain")[i]
            pairs.append({"pair_id": f"{payload} {objective} {i}", "prompt": "Say hi.",
                          "objective": objective, "chosen": f"Hi {i}! {SCRIPT}", "rejected": f"{IMG} bye {i}",
                          "source": "test", "subset": f"xss/{objective}", "split": "train"})
    return pairs


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, real_rms: RealRMs) -> Iterator[SimpleNamespace]:
    # The session's trained RMs (cache hits below), captured here on the hostile dataset.
    with LiveServer(settings_from(real_rms.trained, tmp_path_factory.mktemp("neuron-pages"))) as srv, \
            httpx.Client(base_url=srv.url, timeout=60) as http:
        body = "\n".join(json.dumps(p) for p in _hostile_pairs()).encode()
        up = http.post("/api/datasets", files={"file": ("xss.jsonl", io.BytesIO(body), "application/json")},
                       data={"format": "canonical", "name": "xss"})
        assert up.status_code == 201, up.text
        source = up.json()["source"]
        checkpoints = train_and_capture(http, capture_data={"source": source, "split": "all"})
        yield SimpleNamespace(url=srv.url, http=http, checkpoints=checkpoints, store=srv.services.store)


def _wait_plot(page, plot_id: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(f"#{plot_id}[data-rendered='1'] .main-svg").first.wait_for(timeout=20_000)


def test_dashboard_renders_three_plots_and_a_click_opens_the_neuron(page, site) -> None:  # type: ignore[no-untyped-def]
    page.goto(site.url + f"/models/{MODEL}/dashboard?p=10&stat=A&seed=0&shared=intersection")
    for plot_id in ("plot-venn", "plot-layers", "plot-scatter"):
        _wait_plot(page, plot_id)
    assert page.locator("#plot-venn .barlayer .point").count() == 7  # the seven exclusive regions
    assert page.locator("#plot-layers .hm").count() == 1  # the heatmap layer
    n_points = page.locator("#plot-scatter .scatterlayer .point").count()
    assert n_points == 256  # every neuron of tiny-bert (2 × 128)
    assert page.locator("#jaccard-hr").inner_text().strip() != ""
    assert page.js_errors == []

    # The controls are a GET form: changing p reproduces the view from the URL.
    page.fill("#view-form input[name=p]", "25")
    page.click("#view-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/dashboard\?.*p=25.*"))
    _wait_plot(page, "plot-scatter")
    api = site.http.get(f"/api/neurons/{MODEL}/overlap", params={"p": 25}).json()
    assert page.locator("#sig-observed").inner_text() == str(api["significance"]["observed"])

    # Click a point of the scatter: Plotly's click handler (neurons.js) opens that neuron's page.
    page.locator("#plot-scatter").scroll_into_view_if_needed()
    point = page.locator("#plot-scatter .scatterlayer .trace:last-child .point").first
    box = point.bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.wait_for_timeout(200)
    page.mouse.click(x, y)
    page.wait_for_url(re.compile(rf".*/models/{MODEL}/neurons/\d+/\d+$"), timeout=10_000)
    layer, index = (int(v) for v in page.url.rsplit("/", 2)[-2:])
    assert 0 <= layer < 2 and 0 <= index < 128
    assert page.locator("#neuron-title").inner_text().startswith(f"Neuron {index} of layer {layer}")
    _wait_plot(page, "plot-neuron-stats")
    assert page.js_errors == []


def test_part_links_lead_to_neuron_pages(page, site) -> None:  # type: ignore[no-untyped-def]
    page.goto(site.url + "/neurons")
    page.click("a.dashboard-link")
    page.wait_for_url(re.compile(r".*/dashboard\?.*"))
    link = page.locator("a.neuron-link").first
    href = link.get_attribute("href")
    link.click()
    page.wait_for_url("**" + href)
    _wait_plot(page, "plot-neuron-stats")
    assert page.locator("#neuron-stats tbody tr").count() == 12  # 3 RMs × 2 objectives × 2 sides
    page.click("#next-neuron")
    page.wait_for_url(re.compile(r".*/neurons/\d+/\d+$"))
    assert page.url != site.url + href
    assert page.js_errors == []


def test_hostile_dataset_text_is_shown_never_run(page, site) -> None:  # type: ignore[no-untyped-def]
    # Pick a neuron whose stored examples contain both payloads' markup.
    rows = site.store.query(
        "SELECT layer, neuron, text_before || token || text_after AS text FROM neuron_examples"
        " ORDER BY layer, neuron, rank")
    assert rows, "the capture stored no examples"
    by_neuron: dict[tuple[int, int], list[str]] = {}
    for r in rows:
        by_neuron.setdefault((r["layer"], r["neuron"]), []).append(r["text"])
    layer, index = next(k for k, texts in by_neuron.items()
                        if any("script" in t for t in texts) and any("onerror" in t for t in texts))

    page.goto(site.url + f"/models/{MODEL}/neurons/{layer}/{index}")
    _wait_plot(page, "plot-neuron-stats")
    examples = page.locator("#examples")
    assert examples.locator("td.ex-text").count() >= 2
    # Nothing from the dataset became markup: no script, image or other element inside the example cells
    # beyond the <mark> around the token, and neither payload ran.
    assert examples.locator("td.ex-text script, td.ex-text img").count() == 0
    assert examples.locator("td.ex-text *:not(mark)").count() == 0
    assert page.evaluate("window.__xss") is None
    shown = examples.inner_text()
    for text in by_neuron[(layer, index)]:
        assert text in shown  # exactly the stored text window (as the tokenizer decodes it), as text
    # The literal payloads are visible as text (pair ids are shown verbatim next to each example).
    assert examples.get_by_text(SCRIPT).count() >= 1 and examples.get_by_text(IMG).count() >= 1
    assert SCRIPT in shown and IMG in shown
    assert page.js_errors == []
