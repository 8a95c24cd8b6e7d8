"""The code version in every result key: a hash of the worker sources, never a number typed by hand.

A result is only as current as the code that computed it, so the key covers every `.py` file under
`workers/`. Change one and every key changes: nothing
computed by older code can be served as if it were current. Computed once per process, from the
files themselves (a wheel or image carries them), in a few milliseconds.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

WORKERS_DIR = Path(__file__).resolve().parents[1]


def _sources() -> list[Path]:
    files = [p for p in WORKERS_DIR.rglob("*.py") if "__pycache__" not in p.parts]
    return sorted(files, key=lambda p: p.relative_to(WORKERS_DIR).as_posix())


@lru_cache(maxsize=1)
def code_version() -> str:
    """sha256 (16 hex) over the relative path and bytes of every worker source file."""
    h = hashlib.sha256()
    for path in _sources():
        h.update(path.relative_to(WORKERS_DIR).as_posix().encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]
