"""Share links: capabilities that read exactly one view (and what it loads) until they expire or are revoked.

Views are reproducible from their URL alone (state in the query string, results content-addressed), so a
link names its target path; `app.shares.scope` derives what else the view may load. Requests through a link
are read-only. Absolute URLs come from the configured public URL, never from a request's Host header.
"""

from __future__ import annotations

import secrets
import threading
import time
from datetime import datetime, timedelta
from urllib.parse import urlsplit

from sqlalchemy import select

from app.core.db import Database, ShareLink, current_actor, utcnow
from app.core.errors import Forbidden, Gone, Invalid, NotFound, TooManyRequests
from app.core.settings import Settings
from app.shares.scope import Scope, scope_of

HEADER = "x-tension-share"
PREFIX = "/s/"
"""Share links are `PREFIX + token`; they never point at another share link."""


def create_share(*, db: Database, settings: Settings, target: str, expires_in_days: float | None = None) -> ShareLink:
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/") or parts.path.startswith(PREFIX):
        raise Invalid(f"target: must be a path on this server such as /results/KEY, got {target[:200]!r}")
    scope = scope_of(target)
    days = settings.share_ttl_days if expires_in_days is None else expires_in_days
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    now = utcnow()
    link = ShareLink(token=secrets.token_urlsafe(24), target=path, read_only=True, scope=scope.as_json(),
                     created_at=now, expires_at=now + timedelta(days=days))
    with db.session() as s:
        s.add(link)
    return link


def expires_at(link: ShareLink, settings: Settings) -> datetime:
    """When the link stops working (links made before expiry existed get the default lifetime)."""
    return link.expires_at or link.created_at + timedelta(days=settings.share_ttl_days)


def lookup(db: Database, token: str) -> ShareLink | None:
    """The link of a token (live or not), or None."""
    if not token or len(token) > 64:
        return None
    with db.session() as s:
        return s.get(ShareLink, token)


def live_link(db: Database, settings: Settings, token: str) -> ShareLink:
    """The link of a token that still works: unknown is a 404, revoked or expired a 410."""
    link = lookup(db, token)
    if link is None:
        raise NotFound("share link: unknown token")
    if link.revoked_at is not None:
        raise Gone(f"share link: revoked at {link.revoked_at:%Y-%m-%d %H:%M} UTC")
    if expires_at(link, settings) <= utcnow():
        raise Gone(f"share link: expired at {expires_at(link, settings):%Y-%m-%d %H:%M} UTC")
    return link


def scope(link: ShareLink) -> Scope | None:
    return Scope.of_json(link.scope or {})


def opened(*, db: Database, settings: Settings, token: str) -> str:
    """Where a share link leads: its target with the token riding along."""
    link = live_link(db, settings, token)
    sep = "&" if "?" in link.target else "?"
    return f"{link.target}{sep}share={token}"


def share_url(*, settings: Settings, link: ShareLink) -> str:
    return settings.public_url + f"{PREFIX}{link.token}"


def list_shares(*, db: Database, everyone: bool = False) -> list[ShareLink]:
    """The caller's links (newest first); `everyone` for all of them."""
    with db.session() as s:
        q = select(ShareLink).order_by(ShareLink.created_at.desc())
        if not everyone:
            q = q.where(ShareLink.created_by == current_actor())
        return list(s.scalars(q))


def revoke(*, db: Database, token: str) -> ShareLink:
    """Revoke one of the caller's links; revoking twice is harmless."""
    with db.session() as s:
        link = s.get(ShareLink, token[:64])
        if link is None:
            raise NotFound("share link: unknown token")
        if link.created_by != current_actor():
            raise Forbidden("share link: only the person who made it can revoke it")
        if link.revoked_at is None:
            link.revoked_at = utcnow()
        return link


class RateLimiter:
    """A token bucket per share link: `per_minute` live toggles a minute, bursts up to that many."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            level, at = self._buckets.get(key, (self.capacity, now))
            level = min(self.capacity, level + (now - at) * self.rate)
            if level < 1.0:
                wait = (1.0 - level) / self.rate
                self._buckets[key] = (level, now)
                raise TooManyRequests(f"share link: at most {int(self.capacity)} live toggles a minute; "
                                      f"retry in {wait:.0f} s")
            self._buckets[key] = (level - 1.0, now)
            if len(self._buckets) > 10_000:
                self._buckets.pop(next(iter(self._buckets)))
