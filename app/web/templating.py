"""Jinja2 templates with autoescaping everywhere: dataset text is hostile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from app.shares.scope import is_shareable

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "frontend" / "templates"
templates = Jinja2Templates(directory=str(TEMPLATES_DIR))
templates.env.autoescape = True
templates.env.globals["shareable"] = is_shareable


def render(request: Request, name: str, /, **ctx: Any) -> Response:
    """Render `frontend/templates/<name>` with `ctx` (the request is always in the context)."""
    return templates.TemplateResponse(request, name, ctx)
