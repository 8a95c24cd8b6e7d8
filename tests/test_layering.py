"""The two planes stay apart: app/ never imports torch, workers/ never imports app."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_workers_never_import_app_or_fastapi() -> None:
    for f in (ROOT / "workers").rglob("*.py"):
        bad = {n for n in _imports(f) if n.split(".")[0] in {"app", "fastapi", "sqlalchemy", "duckdb"}}
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def test_app_reaches_workers_only_through_torch_free_modules() -> None:
    allowed = ("workers.specs", "workers.data", "workers.models.names", "workers.neurons.selection",
               "workers.evaluation.metrics", "workers.training.presets", "workers")
    for f in (ROOT / "app").rglob("*.py"):
        for n in _imports(f):
            if n.startswith("workers"):
                assert n.startswith(allowed), f"{f.relative_to(ROOT)} imports {n}"


def test_web_process_does_not_load_torch() -> None:
    code = ("import sys; import app.main, app.cli; "
            "print(','.join(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == ""
