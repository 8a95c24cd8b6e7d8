"""Share links: an unguessable read-only token that opens one exact view from anywhere.

Views are reproducible from their URL alone (state in the query string, results content-addressed),
so a share link only needs to name the target path. Requests carrying a share token are read-only:
the middleware refuses every change made through them.
"""

from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from app.core.db import Database, ShareLink
from app.core.errors import Invalid, NotFound
from app.core.settings import Settings

HEADER = "x-tension-share"
PREFIX = "/s/"
"""Share links are `PREFIX + token`; they never point at another share link."""


def create_share(*, db: Database, target: str) -> ShareLink:
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith(PREFIX):
        raise Invalid(f"share target must be a path on this server such as /results/KEY, got {target!r}")
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    link = ShareLink(token=secrets.token_urlsafe(24), target=path, read_only=True)
    with db.session() as s:
        s.add(link)
    return link


def resolve(db: Database, token: str) -> ShareLink | None:
    """The link of a token, or None (unknown, revoked, or not a token at all)."""
    if not token or len(token) > 64:
        return None
    with db.session() as s:
        return s.get(ShareLink, token)


def opened(*, db: Database, token: str) -> str:
    """Where a share link leads: its target with the token riding along; an unknown token is a 404."""
    link = resolve(db, token)
    if link is None:
        raise NotFound("unknown or revoked share link")
    sep = "&" if "?" in link.target else "?"
    return f"{link.target}{sep}share={token}"


def share_url(*, settings: Settings, link: ShareLink, base: str) -> str:
    root = settings.public_base_url or base
    return root.rstrip("/") + f"{PREFIX}{link.token}"
