"""Fixtures for the data-package tests: small fixture files written into tmp_path, the real source data."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[3]
SHARED_DATA = Path(os.environ.get("TENSION_SHARED_DATA", REPO.parent / "shared" / "data"))


class Files:
    """Writes fixture files into one directory."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def jsonl(self, name: str, records: list[Any]) -> Path:
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        path = self.root / name
        path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
        return path

    def json(self, name: str, obj: Any) -> Path:
        path = self.root / name
        path.write_text(json.dumps(obj, indent=2))
        return path

    def raw(self, name: str, data: bytes) -> Path:
        path = self.root / name
        path.write_bytes(data)
        return path

    @staticmethod
    def canon(i: int, **kw: Any) -> dict[str, Any]:
        rec = {"pair_id": f"p{i}", "prompt": f"question {i}", "chosen": f"good answer {i}",
               "rejected": f"bad answer {i}", "objective": "helpful" if i % 2 else "harmless",
               "source": "unit", "subset": "unit/a" if i < 3 else "unit/b",
               "split": "train" if i % 3 else "test"}
        rec.update(kw)
        return rec

    @staticmethod
    def hh(turns: list[tuple[str, str]], last_human: str, chosen: str, rejected: str) -> dict[str, str]:
        """An HH-RLHF record: earlier turns, a final Human turn, then two different final replies."""
        body = "".join(f"\n\nHuman: {h}\n\nAssistant: {a}" for h, a in turns) + f"\n\nHuman: {last_human}"
        return {"chosen": f"{body}\n\nAssistant: {chosen}", "rejected": f"{body}\n\nAssistant: {rejected}"}

    @staticmethod
    def rm_bench(rid: int, prompt: str, subset: str = "alpacaeval") -> dict[str, Any]:
        return {"id": rid, "subset": subset, "prompt": prompt,
                "chosen": [f"{prompt} c{k}" for k in range(3)],
                "rejected": [f"{prompt} r{k}" for k in range(3)]}


@pytest.fixture
def files(tmp_path: Path) -> Files:
    return Files(tmp_path)


@pytest.fixture
def shared_data() -> Path:
    """The real public source files (HH-RLHF, RM-Bench); skip where this checkout has none."""
    if not (SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz").is_file():
        pytest.skip(f"real source data not at {SHARED_DATA}")
    return SHARED_DATA
