"""The two planes stay apart, enforced by import-linter (contracts in pyproject.toml), plus a real
subprocess check that the web process never loads torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], capture_output=True, text=True, cwd=root,
                          env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("tree")
    for name in ("app", "workers"):
        shutil.copytree(ROOT / name, dst / name, ignore=shutil.ignore_patterns("__pycache__", "bundled"))
    shutil.copy(ROOT / "pyproject.toml", dst / "pyproject.toml")
    return dst


def test_import_contracts_hold() -> None:
    out = _lint_imports(ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize("module,line,contract", [
    ("app/_scratch.py", "import workers.models.registry\n", "app reaches workers only through"),
    ("app/_scratch.py", "from workers.jobs import capture\n", "app reaches workers only through"),
    ("workers/_scratch.py", "from app.core import settings\n", "workers never import the control plane"),
    ("workers/contract/_scratch.py", "import numpy\n", "the contract is pydantic only"),
    ("app/_scratch.py", "import torch\n", "the web process never loads torch"),
])
def test_a_bad_import_breaks_a_contract(tree_copy: Path, module: str, line: str, contract: str) -> None:
    scratch = tree_copy / module
    scratch.write_text(line)
    try:
        out = _lint_imports(tree_copy)
    finally:
        scratch.unlink()
    assert out.returncode != 0
    assert f"{contract}" in out.stdout and "BROKEN" in out.stdout, out.stdout


def test_web_process_does_not_load_torch() -> None:
    code = ("import sys; import app.main, app.cli; "
            "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""
