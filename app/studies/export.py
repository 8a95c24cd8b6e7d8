"""A study report's exports: one self-contained HTML file, CSV per table (zipped), LaTeX tables.

Every string in a report (subset names, model ids, anything from a dataset) is treated as hostile: HTML
escapes it, figure specs go into `application/json` script blocks with `<`, `>` and `&` escaped, LaTeX
escapes its specials, and CSV neutralises cells a spreadsheet would run as a formula.

The HTML file needs no network to open: Plotly's JavaScript is inlined from the installed package, and a
Content-Security-Policy in the file itself forbids every fetch (connections, images, fonts, frames), so a
figure can never reach out even if some label were to ask.
"""

from __future__ import annotations

import csv
import html
import io
import json
import zipfile
from typing import Any

from app.studies.report import Cell, ReportTable, StudyReport

CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; "
       "font-src data:; connect-src 'none'; frame-src 'none'; base-uri 'none'; form-action 'none'")
"""The exported file's own policy: its inline scripts and styles run, nothing is ever fetched."""

LATEX_TABLES: tuple[str, ...] = ("accuracy", "overlap", "ablation_delta", "specific_vs_shared")
"""The report's main tables, in the LaTeX export's order (the claims table follows them)."""

FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
"""A text cell starting with one of these is run as a formula by spreadsheets: it gets a leading quote."""

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #212529; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border-bottom: 1px solid #dee2e6; padding: .25rem .5rem; text-align: left; vertical-align: top; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.muted, figcaption, caption { color: #6c757d; font-size: .85rem; }
caption { caption-side: bottom; text-align: left; }
.verdict { font-weight: 600; }
.verdict.holds { color: #2b8a3e; } .verdict.fails { color: #c92a2a; } .verdict.inconclusive { color: #e67700; }
.plot { height: 420px; }
code { background: #f1f3f5; padding: .1rem .3rem; }
"""

_RENDER = """
document.querySelectorAll("[data-spec]").forEach(function (el) {
  var spec = JSON.parse(document.getElementById(el.getAttribute("data-spec")).textContent);
  Plotly.newPlot(el, spec.data, spec.layout || {}, {displaylogo: false, responsive: true})
    .then(function () { el.setAttribute("data-rendered", "1"); });
});
"""


def _esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def json_for_script(obj: Any) -> str:
    """JSON safe inside a `<script type="application/json">`: no `</script>`, no comment opener, strict
    (no NaN)."""
    text = json.dumps(obj, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def verdict_class(verdict: str) -> str:
    """The CSS class of a verdict: holds, fails or inconclusive."""
    return {"holds": "holds", "does not hold": "fails"}.get(verdict, "inconclusive")


def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    return js.replace("</script", "<\\/script").replace("<!--", "<\\!--")


def _table_html(t: ReportTable) -> str:
    head = "".join(f"<th>{_esc(c)}</th>" for c in t.header())
    body = []
    for raw, shown in zip(t.records(), t.display_rows(), strict=True):
        cells = "".join(f'<td class="num">{_esc(s)}</td>' if isinstance(v, int | float) and not isinstance(v, bool)
                        else f"<td>{_esc(s)}</td>" for v, s in zip(raw, shown, strict=True))
        body.append(f"<tr>{cells}</tr>")
    caption = f"<caption>{_esc(t.caption)}</caption>" if t.caption else ""
    return (f'<section id="table-{_esc(t.name)}"><h3>{_esc(t.title)}</h3><table data-table="{_esc(t.name)}">'
            f"{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table></section>")


def report_html(report: StudyReport, *, title: str, recompute_command: str) -> str:
    """The report as one HTML file that opens offline: claims, tables, every figure drawn by inlined Plotly."""
    parts = ["<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
             f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{_esc(title)}</title><style>{_STYLE}</style>",
             f"<script>{_plotly_js()}</script></head><body>",
             f"<h1>{_esc(title)}</h1>",
             f'<p class="muted">Model <code>{_esc(report.model)}</code> · seeds '
             f"{_esc(', '.join(str(s) for s in report.seeds))} · neuron sets at p = {report.p:g}% by magnitude. "
             f"Recompute: <code>{_esc(recompute_command)}</code></p>"]
    if report.waiting:
        parts.append('<ul id="waiting">' + "".join(f"<li>{_esc(w)}</li>" for w in report.waiting) + "</ul>")
    parts.append('<h2>Claims</h2><table id="claims"><thead><tr><th>#</th><th>claim</th><th>verdict</th>'
                 "<th>evidence</th><th>rule</th></tr></thead><tbody>")
    for c in report.claims:
        parts.append(f'<tr><td class="num">{c.number}</td><td>{_esc(c.statement)}</td>'
                     f'<td class="verdict {verdict_class(c.verdict)}">{_esc(c.verdict)}</td>'
                     f"<td>{_esc(c.evidence)}</td><td class=\"muted\">{_esc(c.rule)}</td></tr>")
    parts.append("</tbody></table>")
    if report.caveats:
        parts.append('<h2>Caveats</h2><ul id="caveats">' + "".join(f"<li>{_esc(c)}</li>" for c in report.caveats)
                     + "</ul>")
    parts.append("<h2>Tables</h2>")
    parts += [_table_html(t) for t in report.tables]
    parts.append("<h2>Figures</h2>")
    for f in report.figures:
        name = _esc(f.name)
        parts.append(f'<figure id="figure-{name}"><h3>{_esc(f.title)}</h3>'
                     f'<div class="plot" id="plot-{name}" data-spec="spec-{name}"></div>'
                     f'<script type="application/json" id="spec-{name}">{json_for_script(f.figure)}</script>'
                     + (f"<figcaption>{_esc(f.caption)}</figcaption>" if f.caption else "") + "</figure>")
    parts.append(f"<script>{_RENDER}</script></body></html>")
    return "\n".join(parts)


# -- CSV --------------------------------------------------------------------------------------------------------
def csv_cell(value: Cell) -> str:
    """A cell as CSV text: empty for None, numbers in full precision, formula-like text quoted."""
    if value is None:
        return ""
    if isinstance(value, str):
        return "'" + value if value.startswith(FORMULA_START) else value
    return repr(value) if isinstance(value, float) else str(value)


def table_csv(report: StudyReport, name: str) -> str:
    """One table as CSV: its header (the paper's column last, when it has one), then its raw rows."""
    t = report.table(name)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([csv_cell(c) for c in t.header()])
    w.writerows([csv_cell(v) for v in row] for row in t.records())
    return buf.getvalue()


def tables_csv_zip(report: StudyReport) -> bytes:
    """Every table as `<name>.csv` in one zip (fixed timestamps: the same report gives the same bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for t in report.tables:
            info = zipfile.ZipInfo(f"{t.name}.csv", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, table_csv(report, t.name))
    return buf.getvalue()


# -- LaTeX ----------------------------------------------------------------------------------------------------
_LATEX = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
          "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
          ">": r"\textgreater{}", "Δ": r"$\Delta$", "−": "$-$", "±": r"$\pm$", "∩": r"$\cap$", "∪": r"$\cup$",
          "θ": r"$\theta$", "→": r"$\to$", "≻": r"$\succ$", "∧": r"$\wedge$", "∨": r"$\vee$", "≈": r"$\approx$",
          "≥": r"$\geq$", "≤": r"$\leq$", "×": r"$\times$", "σ": r"$\sigma$", "–": "--", "—": "---", "§": r"\S{}",
          "·": r"$\cdot$", "∖": r"$\setminus$", "|": r"\textbar{}"}


def latex_escape(text: object) -> str:
    """Text for LaTeX: its special characters escaped and the report's few symbols as math, in one pass."""
    return "".join(_LATEX.get(ch, ch) for ch in str(text))


def _latex_table(title: str, header: list[str], rows: list[list[str]], spec: str, label: str) -> str:
    lines = [r"\begin{table}[ht]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(latex_escape(h) for h in header) + r" \\", r"\midrule"]
    lines += [" & ".join(latex_escape(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", rf"\caption{{{latex_escape(title)}}}",
              rf"\label{{tab:{latex_escape(label)}}}", r"\end{table}", ""]
    return "\n".join(lines)


def report_latex(report: StudyReport) -> str:
    """The main tables (accuracy, overlap, Δ, specific vs shared) and the claims, as a compilable document
    of booktabs tables; numbers as the report shows them."""
    out = [r"\documentclass{article}", r"\usepackage[utf8]{inputenc}", r"\usepackage{booktabs}",
           r"\usepackage[margin=2cm,landscape]{geometry}", r"\begin{document}", ""]
    names = {t.name for t in report.tables}
    for name in LATEX_TABLES:
        if name not in names:
            continue
        t = report.table(name)
        spec = "l" * 2 + "r" * (len(t.header()) - 2)
        out.append(_latex_table(t.title, t.header(), t.display_rows(), spec, name))
    claims = [[str(c.number), c.statement, c.verdict, c.evidence] for c in report.claims]
    out.append(_latex_table("Verdicts on the three claims", ["#", "claim", "verdict", "evidence"], claims,
                            "r p{5cm} l p{11cm}", "claims"))
    out.append(r"\end{document}")
    return "\n".join(out) + "\n"
