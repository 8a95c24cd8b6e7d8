"""Users, roles, API tokens and passwords.

Passwords are hashed with Argon2 (pwdlib). API tokens are 256-bit random strings shown once and stored as
their SHA-256 digest: a token has full entropy, so a fast digest is the usual practice (GitHub, PyPI) and lets
every request be checked by one indexed lookup instead of a deliberately slow hash.
"""

from __future__ import annotations

import hashlib
import secrets
from functools import lru_cache

from pwdlib import PasswordHash
from sqlalchemy import exists, select

from app.auth.schemas import USER_NAME, Role
from app.core.db import Database, User, utcnow
from app.core.errors import Conflict, Invalid, NotFound

TOKEN_PREFIX = "tns_"
MIN_PASSWORD = 8


@lru_cache(maxsize=1)
def _hasher() -> PasswordHash:
    return PasswordHash.recommended()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """Verified against when a user name is unknown, so both failures take the same time."""
    return _hasher().hash(secrets.token_urlsafe(16))


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _check_name(name: str) -> str:
    if not USER_NAME.match(name):
        raise Invalid(f"user name {name[:80]!r}: use 1-64 letters, digits, '.', '_' or '-'")
    return name


def _check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise Invalid(f"password: at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise Invalid("password: at most 1024 characters")
    return password


def add_user(db: Database, name: str, role: Role, password: str | None = None) -> tuple[User, str]:
    """A new user and their first API token (returned once, stored only as a digest)."""
    _check_name(name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session() as s:
        if s.scalar(select(User).where(User.name == name)) is not None:
            raise Conflict(f"user {name!r} exists; `tension token {name}` makes a new token")
        user = User(name=name, role=Role(role).value, token_hash=token_digest(token), token_created_at=utcnow(),
                    password_hash=_hasher().hash(_check_password(password)) if password else None)
        s.add(user)
    return user, token


def set_password(db: Database, name: str, password: str) -> None:
    hashed = _hasher().hash(_check_password(password))
    with db.session() as s:
        user = _get(s, name)
        user.password_hash = hashed


def rotate_token(db: Database, name: str) -> str:
    """A new API token for `name`; the old one stops working at once."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session() as s:
        user = _get(s, name)
        user.token_hash, user.token_created_at = token_digest(token), utcnow()
    return token


def remove_user(db: Database, name: str) -> None:
    """Delete the user; their token and sessions stop working. What they created stays, still credited."""
    with db.session() as s:
        s.delete(_get(s, name))


def list_users(db: Database) -> list[User]:
    with db.session() as s:
        return list(s.scalars(select(User).order_by(User.name)))


def users_exist(db: Database) -> bool:
    with db.session() as s:
        return bool(s.scalar(select(exists().where(User.active.is_(True)))))


def user_by_token(db: Database, token: str) -> User | None:
    if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
        return None
    with db.session() as s:
        return s.scalar(select(User).where(User.token_hash == token_digest(token), User.active.is_(True)))


def user_by_id(db: Database, user_id: object) -> User | None:
    if not isinstance(user_id, int):
        return None
    with db.session() as s:
        user = s.get(User, user_id)
        return user if user is not None and user.active else None


def authenticate(db: Database, name: str, password: str) -> User | None:
    """The user if the password is right; None otherwise, after the same amount of hashing work."""
    with db.session() as s:
        user = s.scalar(select(User).where(User.name == name[:64], User.active.is_(True)))
    hashed = user.password_hash if user is not None and user.password_hash else _dummy_hash()
    ok = _hasher().verify(password[:1024], hashed)
    return user if ok and user is not None and user.password_hash else None


def _get(s, name: str) -> User:  # type: ignore[no-untyped-def]
    user = s.scalar(select(User).where(User.name == name))
    if user is None:
        raise NotFound(f"no user named {name[:80]!r}")
    return user  # type: ignore[no-any-return]
