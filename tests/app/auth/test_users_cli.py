"""`tension users add|list|remove` and `tension token` against a real metadata database."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app import cli
from app.auth import users
from app.core.db import Database
from app.core.settings import get_settings

runner = CliRunner()


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TENSION_DATA_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()


def _token(output: str) -> str:
    m = re.search(r"(tns_[A-Za-z0-9_-]+)", output)
    assert m, output
    return m.group(1)


def test_add_list_rotate_remove(data_dir: Path) -> None:
    added = runner.invoke(cli.app, ["users", "add", "alice", "--role", "researcher", "--password-stdin"],
                          input="correct horse battery\n")
    assert added.exit_code == 0, added.output
    first = _token(added.output)
    db = Database(get_settings().resolved_database_url)
    try:
        assert users.user_by_token(db, first).name == "alice"  # type: ignore[union-attr]
        assert users.authenticate(db, "alice", "correct horse battery") is not None

        listed = runner.invoke(cli.app, ["users", "list", "--json"])
        assert listed.exit_code == 0 and '"name": "alice"' in listed.output and first not in listed.output

        rotated = runner.invoke(cli.app, ["token", "alice"])
        second = _token(rotated.output)
        assert second != first
        assert users.user_by_token(db, first) is None and users.user_by_token(db, second) is not None

        assert runner.invoke(cli.app, ["users", "remove", "alice"]).exit_code == 0
        assert users.user_by_token(db, second) is None
    finally:
        db.dispose()


def test_bad_input_is_a_cli_error_naming_it(data_dir: Path) -> None:
    bad_role = runner.invoke(cli.app, ["users", "add", "bob", "--role", "admin", "--no-password"])
    assert bad_role.exit_code == 2 and "--role" in bad_role.output
    bad_name = runner.invoke(cli.app, ["users", "add", "../bob", "--no-password"])
    assert bad_name.exit_code == 1 and "user name" in bad_name.output
    short = runner.invoke(cli.app, ["users", "add", "bob", "--password-stdin"], input="short\n")
    assert short.exit_code == 1 and "at least 8" in short.output
    assert runner.invoke(cli.app, ["users", "add", "bob", "--no-password"]).exit_code == 0
    twice = runner.invoke(cli.app, ["users", "add", "bob", "--no-password"])
    assert twice.exit_code == 1 and "exists" in twice.output
    missing = runner.invoke(cli.app, ["token", "nobody"])
    assert missing.exit_code == 1 and "no user named" in missing.output
