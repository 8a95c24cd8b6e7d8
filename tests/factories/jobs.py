"""Factories of the small domains: scoring results (`rewards` rows), and a stand-in worker interpreter.

`score_result` seeds a finished score job through the real ingest path. `fake_worker` writes an
executable that the local executor runs in place of `python -m workers SPEC`: it reads the spec,
reports progress, waits as long as told, then writes a real `rewards` table and manifest, so job
lifecycle tests (cancel, SIGKILL, queueing, recovery, CLI) exercise every step but the model.
"""

from __future__ import annotations

import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.core.services import Services
from tests.factories import ingest_result
from workers.contract.results import RewardRow
from workers.contract.vocab import JobKind, Objective, Side, Split

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class ScoredPair:
    pair_id: str
    objective: Objective
    subset: str
    chosen: float
    rejected: float


def reward_rows(pairs: list[ScoredPair], *, model: str = "tiny-bert", split: Split = Split.test,
                n_tokens: int = 12) -> list[dict[str, Any]]:
    """Two `rewards` rows (chosen, rejected) per pair, as the score worker writes them."""
    rows = []
    for p in pairs:
        for side, reward in ((Side.chosen, p.chosen), (Side.rejected, p.rejected)):
            rows.append({"model": model, "checkpoint": None, "pair_id": p.pair_id, "item_id": None,
                         "objective": p.objective, "subset": p.subset, "split": split, "side": side,
                         "n_chars": 40, "n_tokens": n_tokens, "reward": reward})
    return rows


def score_result(services: Services, pairs: list[ScoredPair], *, model: str = "tiny-bert") -> str:
    """A finished score job over `pairs`; returns its result key."""
    return ingest_result(services, JobKind.score, {RewardRow: reward_rows(pairs, model=model)},
                         params={"model": model, "dataset": {"source": "bundled", "split": Split.test}},
                         summary={"n_pairs": len(pairs)})


def some_pairs() -> list[ScoredPair]:
    """Six pairs over two objectives and three subsets, with known wins and losses."""
    return [
        ScoredPair("h1", Objective.helpful, "chat", 1.5, 0.5),
        ScoredPair("h2", Objective.helpful, "chat", -0.25, 0.75),
        ScoredPair("h3", Objective.helpful, "code", 2.0, -1.0),
        ScoredPair("r1", Objective.harmless, "harmless-base", 0.125, -0.5),
        ScoredPair("r2", Objective.harmless, "harmless-base", 0.25, 0.5),
        ScoredPair("r3", Objective.harmless, "harmless-base", 1.0, 0.0),
    ]


FAKE_WORKER = r'''#!{python}
"""Stand-in for `python -m workers SPEC_URL` (see tests/factories/jobs.py)."""
import sys, time
sys.path.insert(0, {root!r})
from pathlib import Path
from workers.contract.artifacts import MANIFEST_FILE, PROGRESS_FILE, ProgressReport, ResultManifest, ResultTable
from workers.contract.jobs import JobSpec
from workers.contract.results import RewardRow
from workers.jobs.io import rows_table
from workers.storage import ArtifactStore
import io
import pyarrow.parquet as pq

spec_url = sys.argv[-1]
root, _, rest = spec_url.rpartition("/jobs/")
store = ArtifactStore(root)
spec = JobSpec.model_validate_json(store.read_bytes("jobs/" + rest))
seconds = float(Path(__file__).with_suffix(".seconds").read_text())
start = time.time()
while True:
    fraction = min(1.0, (time.time() - start) / seconds) if seconds > 0 else 1.0
    report = ProgressReport(fraction=fraction * 0.9, message="scoring", heartbeat=time.time())
    store.write_json(f"{{spec.output}}/{PROGRESS}", report.model_dump())
    if fraction >= 1.0:
        break
    time.sleep(0.05)
params = spec.params
limit = params.dataset.limit or 2
rows = []
for objective in params.dataset.objectives:
    for i in range(limit):
        for side, reward in (("chosen", 1.0 + i), ("rejected", 0.5 * i)):
            rows.append(dict(model=params.model, checkpoint=params.checkpoint, pair_id=f"{{objective}}-{{i}}",
                             item_id=None, objective=objective, subset="fake", split=params.dataset.split,
                             side=side, n_chars=10, n_tokens=5, reward=reward))
buf = io.BytesIO()
pq.write_table(rows_table(RewardRow, rows), buf)
key = f"{{spec.output}}/rewards.parquet"
store.write_bytes(key, buf.getvalue())
manifest = ResultManifest(job_id=spec.job_id, kind=spec.kind, result_key=spec.result_key,
                          tables=[ResultTable(table="rewards", key=key, rows=len(rows))],
                          summary={{"n_pairs": len(rows) // 2}})
store.write_json(f"{{spec.output}}/{MANIFEST}", manifest.model_dump(mode="json"))
'''


def fake_worker(directory: Path, *, seconds: float = 0.0) -> Path:
    """An executable for `Settings(python=...)`: each score job takes `seconds`, then succeeds.

    `set_worker_seconds` changes the duration of the next jobs (a retry after a kill, say)."""
    from workers.contract.artifacts import MANIFEST_FILE, PROGRESS_FILE

    path = directory / "fake-python"
    path.write_text(FAKE_WORKER.replace("{PROGRESS}", PROGRESS_FILE).replace("{MANIFEST}", MANIFEST_FILE)
                    .format(python=sys.executable, root=str(ROOT)))
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    set_worker_seconds(path, seconds)
    return path


def set_worker_seconds(worker: Path, seconds: float) -> None:
    worker.with_suffix(".seconds").write_text(str(seconds))
