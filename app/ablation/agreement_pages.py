"""Estimate against exact over every recorded live toggle: `/live/agreement` (page), `/api/live/agreement` and
`/api/live/records` (JSON). For signed-in users only: no share link reaches these routes (app.shares.scope)."""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.ablation import records
from app.ablation.figures import OBJECTIVE_COLOURS, OTHER_COLOUR
from app.ablation.record_schemas import AgreementOut, AgreementPoint, ToggleRecordOut
from app.core.deps import DatabaseDep
from app.neurons.figures import json_safe
from app.web.templating import render
from workers.contract.vocab import OBJECTIVES

router = APIRouter(tags=["ablation"])

CheckpointFilter = Annotated[str | None, Query(max_length=64, description="only the toggles of this checkpoint "
                                                                         "(blank: every checkpoint)")]


def _checkpoint(value: str | None) -> str | None:
    """A blank filter (the form's "every checkpoint") is no filter."""
    return (value or "").strip() or None


@router.get("/api/live/agreement", response_model=AgreementOut)
def agreement_json(db: DatabaseDep, checkpoint: CheckpointFilter = None) -> AgreementOut:
    """How well the first-order estimate of live toggles predicted their exact shift: Spearman and mean absolute
    error of Δ margin and Δ accuracy overall, per objective, by set size and by layers spanned, the sets it
    missed most, and every (toggle, objective) point."""
    return records.agreement(db, checkpoint=_checkpoint(checkpoint))


@router.get("/api/live/records", response_model=list[ToggleRecordOut])
def records_json(db: DatabaseDep, checkpoint: CheckpointFilter = None,
                 limit: Annotated[int, Query(ge=1, le=records.MAX_LIST_LIMIT)] = records.LIST_LIMIT,
                 ) -> list[ToggleRecordOut]:
    """Recorded live toggles, newest first: each one's estimate and exact shift side by side."""
    return records.list_records(db, checkpoint=_checkpoint(checkpoint), limit=limit)


# -- figures --------------------------------------------------------------------------------------------------
def _text(s: object) -> str:
    """Set descriptions may hold dataset text: HTML-escaped, so Plotly's label parser sees no tags."""
    return html.escape(str(s), quote=True)


def calibration_spec(points: list[AgreementPoint], *, accuracy: bool = False) -> dict[str, Any] | None:
    """Estimate (y) against the exact shift (x), one trace per objective, the exact answer's 95% interval as
    horizontal bars, and the line y = x on which a perfect estimate lies. Δ accuracy in percentage points."""
    if not points:
        return None
    scale = 100.0 if accuracy else 1.0
    unit, fmt = ("Δ accuracy (pp)", ".1f") if accuracy else ("Δ margin", ".4f")
    data: list[dict[str, Any]] = []
    lo, hi = float("inf"), float("-inf")
    for o in OBJECTIVES:
        pts = [p for p in points if p.objective == o]
        if not pts:
            continue
        xs = [scale * (p.exact_accuracy if accuracy else p.exact_margin) for p in pts]
        ys = [scale * (p.estimate_accuracy if accuracy else p.estimate_margin) for p in pts]
        cis = [p.exact_accuracy_ci if accuracy else p.exact_margin_ci for p in pts]
        lo, hi = min(lo, *xs, *ys), max(hi, *xs, *ys)
        trace: dict[str, Any] = {
            "type": "scatter", "mode": "markers", "name": _text(o), "x": xs, "y": ys,
            "marker": {"color": OBJECTIVE_COLOURS.get(o, OTHER_COLOUR), "size": 8, "opacity": 0.8},
            "customdata": [[_text(p.what), p.n_neurons, p.n_layers, _text(p.checkpoint[:12])] for p in pts],
            "hovertemplate": "%{customdata[0]}<br>%{customdata[1]} neurons in %{customdata[2]} layer(s), RM "
                             f"%{{customdata[3]}}<br>exact %{{x:{fmt}}} · estimate %{{y:{fmt}}}"
                             f"<extra>{_text(o)}</extra>"}
        if any(ci is not None for ci in cis):
            bounds = [(x, x) if ci is None else (scale * ci[0], scale * ci[1]) for ci, x in zip(cis, xs, strict=True)]
            trace["error_x"] = {"type": "data", "symmetric": False, "thickness": 1, "width": 0,
                                "array": [max(0.0, b[1] - x) for b, x in zip(bounds, xs, strict=True)],
                                "arrayminus": [max(0.0, x - b[0]) for b, x in zip(bounds, xs, strict=True)]}
        data.append(trace)
    pad = max(hi - lo, 1e-3 * scale) * 0.05
    data.insert(0, {"type": "scatter", "mode": "lines", "name": "y = x (a perfect estimate)",
                    "x": [lo - pad, hi + pad], "y": [lo - pad, hi + pad], "hoverinfo": "skip",
                    "line": {"color": "#868e96", "dash": "dash", "width": 1}})
    layout = {"xaxis": {"title": {"text": f"exact {unit}"}, "zeroline": True},
              "yaxis": {"title": {"text": f"estimated {unit}"}, "zeroline": True},
              "margin": {"l": 70, "r": 20, "t": 20, "b": 60}, "hovermode": "closest",
              "legend": {"orientation": "h", "y": -0.2}}
    return json_safe({"data": data, "layout": layout})  # type: ignore[no-any-return]


# -- page -----------------------------------------------------------------------------------------------------
@router.get("/live/agreement", response_class=HTMLResponse, include_in_schema=False)
def agreement_page(request: Request, db: DatabaseDep, checkpoint: CheckpointFilter = None) -> Response:
    """Calibration plots and agreement tables of every recorded live toggle (optionally of one checkpoint)."""
    out = records.agreement(db, checkpoint=_checkpoint(checkpoint))
    specs = {"margin": calibration_spec(out.points), "accuracy": calibration_spec(out.points, accuracy=True)}
    return render(request, "ablation/agreement.html", agreement=out, specs=specs,
                  rows=[out.overall, *out.by_objective, *out.by_size, *out.by_layers])
