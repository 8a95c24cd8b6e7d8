"""One error hierarchy for every domain, mapped to HTTP once (in `app.main`).

Services raise these with a message a person can act on; routes never pick status codes. Every
invalid value is 422, whichever route it came through.
"""

from __future__ import annotations


class AppError(Exception):
    """A request that cannot be honoured. `status` is its HTTP status."""

    status: int = 422

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Invalid(AppError):
    """A value the request carries is not acceptable (a bad parameter, a malformed upload)."""

    status = 422


class NotFound(AppError):
    """Something the request names does not exist (a checkpoint, a job, a capture, a layer)."""

    status = 404


class Conflict(AppError):
    """The thing exists but is in the wrong state (cancelling a finished job)."""

    status = 409


class Forbidden(AppError):
    """The caller may not do this (a read-only share link that tries to change something)."""

    status = 403


class TooLarge(AppError):
    """An upload beyond the size limit."""

    status = 413


class Unavailable(AppError):
    """A helper process is not running or did not answer in time; retrying may work."""

    status = 503


class BadGateway(AppError):
    """A worker answered something outside the protocol."""

    status = 502


class Unauthorized(AppError):
    """No user: the request carries no (or an unknown) token or session, and this server needs one."""

    status = 401


class Gone(AppError):
    """A share link that was revoked or has expired."""

    status = 410


class TooManyRequests(AppError):
    """A rate limit (live toggles through one share link) was hit; retry later."""

    status = 429
