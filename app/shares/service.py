"""Share links: an unguessable read-only token that opens one exact view from anywhere.

Views are reproducible from their URL alone (state in the query string, results content-addressed),
so a share link only needs to name the target path. Requests carrying a share token are read-only:
the middleware refuses every change made through them.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from app.core.db import ShareLink
from app.core.errors import Invalid

if TYPE_CHECKING:
    from app.core.services import Services

HEADER = "x-tension-share"


def create_share(services: Services, target: str) -> ShareLink:
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith("/s/"):
        raise Invalid(f"share target must be a path on this server such as /results/KEY, got {target!r}")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    link = ShareLink(token=secrets.token_urlsafe(24), target=path, read_only=True)
    with services.db.session() as s:
        s.add(link)
    return link


def resolve(services: Services, token: str) -> ShareLink | None:
    if not token or len(token) > 64:
        return None
    with services.db.session() as s:
        return s.get(ShareLink, token)


def share_url(services: Services, link: ShareLink, base: str) -> str:
    root = services.settings.public_base_url or base
    return root.rstrip("/") + f"/s/{link.token}"
