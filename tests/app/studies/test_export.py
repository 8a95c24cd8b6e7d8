"""Report exports: CSV equals the table rows, LaTeX escapes its specials, the HTML file holds every figure,
references nothing on the network and escapes every string; the in-app partial renders the same report."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Iterator
from html import unescape
from html.parser import HTMLParser
from types import SimpleNamespace

import pytest

from app.studies.export import (
    LATEX_TABLES,
    csv_cell,
    latex_escape,
    report_html,
    report_latex,
    table_csv,
    tables_csv_zip,
)
from app.studies.report import Claim, ReportFigure, ReportTable, StudyReport
from tests.app.studies.test_report import build_world

HOSTILE = '</script><script>alert("x")</script><img src="https://evil.example/x.png">&amp;'
LATEX_HOSTILE = r"50% of $x_1$ & {#2} ~ \input{/etc/passwd} ^"


def hostile_report() -> StudyReport:
    """Every kind of string a report carries, hostile; one figure whose label is hostile too."""
    table = ReportTable(name="accuracy", title=f"Accuracy {HOSTILE}", columns=["RM", "subset", "accuracy %"],
                        rows=[["mixed", HOSTILE, 61.25], ["helpful", "=cmd|' /C calc'!A0", None],
                              ["harmless", LATEX_HOSTILE, 12.5]],
                        paper=[60.6, None, "0.15 / 0.30"], formats={"accuracy %": ".1f"}, caption=HOSTILE)
    figure = ReportFigure(name="accuracy", title=HOSTILE, caption=HOSTILE,
                          figure={"data": [{"type": "bar", "x": [HOSTILE, "b"], "y": [1, 2]}], "layout": {}})
    claims = [Claim(number=1, statement="s", verdict="holds", rule=HOSTILE, evidence=HOSTILE)]
    return StudyReport(model=f"org/{HOSTILE}", seeds=[0], p=10.0, tables=[table], figures=[figure], claims=claims,
                       caveats=[HOSTILE], waiting=[f"waiting for {HOSTILE}"])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    w = build_world(tmp_path_factory.mktemp("export"))
    yield w
    w.services.close()


def _outside_plotly(page: str) -> str:
    """The page with the inlined Plotly bundle cut out (the library's own source mentions URLs in strings)."""
    start = page.index("<script>")
    return page[:start] + page[page.index("</script>", start):]


class _Urls(HTMLParser):
    """Every src/href/action attribute of the page's elements (script bodies are raw text to the parser)."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v or "" for k, v in attrs if k in ("src", "href", "action", "srcset", "data")]


def _element_urls(page: str) -> list[str]:
    parser = _Urls()
    parser.feed(page)
    return parser.urls


# -- CSV ------------------------------------------------------------------------------------------------------
def _parsed(value: str) -> object:
    if value == "":
        return None
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def test_every_csv_parses_back_to_its_table(world: SimpleNamespace) -> None:
    report = world.report
    archive = zipfile.ZipFile(io.BytesIO(tables_csv_zip(report)))
    assert sorted(archive.namelist()) == sorted(f"{t.name}.csv" for t in report.tables)
    for t in report.tables:
        rows = list(csv.reader(io.StringIO(archive.read(f"{t.name}.csv").decode())))
        assert rows[0] == t.header()
        assert [[_parsed(v) for v in r] for r in rows[1:]] == [
            [v if not isinstance(v, str) else _parsed(v) for v in r] for r in t.records()]
    assert tables_csv_zip(report) == tables_csv_zip(report)  # fixed timestamps: same bytes


def test_csv_quotes_formulas_and_keeps_hostile_text() -> None:
    rows = list(csv.reader(io.StringIO(table_csv(hostile_report(), "accuracy"))))
    assert rows[0][-1] == "paper (METHOD.md §6)"
    assert rows[1] == ["mixed", HOSTILE, "61.25", "60.6"]
    assert rows[2][1] == "'=cmd|' /C calc'!A0" and rows[2][2] == ""
    assert csv_cell(-1.5) == "-1.5" and csv_cell("-x") == "'-x"
    with pytest.raises(KeyError):
        table_csv(hostile_report(), "nope")


# -- LaTeX ----------------------------------------------------------------------------------------------------
def test_latex_escapes_specials_and_has_the_main_tables(world: SimpleNamespace) -> None:
    assert latex_escape(LATEX_HOSTILE) == (r"50\% of \$x\_1\$ \& \{\#2\} \textasciitilde{} "
                                           r"\textbackslash{}input\{/etc/passwd\} \textasciicircum{}")
    assert latex_escape("Δ −7.3 ± 1") == r"$\Delta$ $-$7.3 $\pm$ 1"
    tex = report_latex(hostile_report())
    assert r"\textbackslash{}input" in tex and r"\input{" not in tex
    tex = report_latex(world.report)
    assert tex.startswith(r"\documentclass{article}") and tex.rstrip().endswith(r"\end{document}")
    for name in (*LATEX_TABLES, "claims"):
        assert rf"\label{{tab:{latex_escape(name)}}}" in tex
    assert tex.count(r"\toprule") == len(LATEX_TABLES) + 1 and tex.count(r"\bottomrule") == len(LATEX_TABLES) + 1
    acc = world.report.table("accuracy")
    first = " & ".join(latex_escape(c) for c in acc.display_rows()[0]) + r" \\"
    assert first in tex
    hostile = report_latex(hostile_report())
    assert latex_escape(LATEX_HOSTILE) in hostile and "50% of" not in hostile
    assert r"\caption{Accuracy \textless{}/script\textgreater{}" in hostile


# -- HTML -----------------------------------------------------------------------------------------------------
def test_html_holds_every_figure_and_table_and_references_no_network(world: SimpleNamespace) -> None:
    report = world.report
    page = report_html(report, title="Study x", recompute_command="tension study --preset smoke")
    for f in report.figures:
        spec = re.search(rf'<script type="application/json" id="spec-{f.name}">(.*?)</script>', page, re.S)
        assert spec, f.name
        assert json.loads(spec.group(1)) == json.loads(json.dumps(f.figure))
        assert f'data-spec="spec-{f.name}"' in page
    for t in report.tables:
        assert f'data-table="{t.name}"' in page
    assert page.index('id="claims"') < page.index('data-table="accuracy"')
    from plotly.offline import get_plotlyjs

    assert get_plotlyjs()[:2000] in page  # the library itself, inlined
    outside = _outside_plotly(page)
    assert not re.search(r"https?:", outside), "a network reference outside the Plotly bundle"
    assert _element_urls(page) == []  # no element of the page loads or links anything
    assert "default-src 'none'" in page and "cdn" not in outside.lower()


def test_html_escapes_every_hostile_string() -> None:
    page = report_html(hostile_report(), title=HOSTILE, recompute_command=f"tension study --model '{HOSTILE}'")
    outside = _outside_plotly(page)
    assert "<script>alert" not in outside and '<img src="https' not in outside and _element_urls(page) == []
    assert outside.count("&lt;/script&gt;&lt;script&gt;alert(&quot;x&quot;)") >= 8  # title ×2, cell, caption, …
    spec = re.search(r'id="spec-accuracy">(.*?)</script>', page, re.S)
    assert spec and "<" not in spec.group(1) and json.loads(spec.group(1))["data"][0]["x"][0] == HOSTILE
    # the only script elements: the Plotly bundle, the JSON spec and the renderer
    assert len(re.findall(r"<script\b", page)) == 3


def test_the_in_app_partial_renders_claims_first_tables_and_figures(world: SimpleNamespace) -> None:
    from app.web.templating import templates

    report = world.report
    html = templates.env.get_template("studies/_report.html").render(report=report, study_key="k1",
                                                                      request=SimpleNamespace())
    assert html.index('id="claims-table"') < html.index('data-table="accuracy"')
    for f in report.figures:
        assert f'data-plot="plot-report-{f.name}-spec"' in html
    for href in ("/studies/k1/export.html", "/studies/k1/tables.zip", "/studies/k1/report.tex",
                 "/glossary#transferability", "/glossary#jaccard"):
        assert f'href="{href}"' in html
    assert "<script>" not in html  # only JSON data blocks (CSP: script-src 'self')
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in html and "<script>alert(1)" not in html
    verdicts = re.findall(r'data-verdict="([^"]+)"', html)
    assert verdicts == [unescape(c.verdict) for c in report.claims]
    partial = StudyReport(model="m", seeds=[0], p=10.0, waiting=["waiting for the captures: seed(s) 0"])
    html = templates.env.get_template("studies/_report.html").render(report=partial, study_key="k2",
                                                                      request=SimpleNamespace())
    assert "waiting for the captures: seed(s) 0" in html
    # included by studies/study.html, which passes the study itself rather than its key
    html = templates.env.get_template("studies/_report.html").render(report=partial, study=SimpleNamespace(key="k3"),
                                                                      request=SimpleNamespace())
    assert 'href="/studies/k3/tables.zip"' in html
