"""The metadata schema migrates and round-trips on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

from app.core.db import Checkpoint, Database, Dataset, Job, NeuronSet, Run, ShareLink, Study
from app.core.migrate import metadata_revision, upgrade_metadata


def test_migrations_reach_head_and_rows_round_trip(database_url: str) -> None:
    assert metadata_revision(database_url) is None
    rev = upgrade_metadata(database_url)
    assert rev == "0003"
    assert upgrade_metadata(database_url) == rev  # idempotent
    db = Database(database_url)
    tables = set(sa.inspect(db.engine).get_table_names())
    assert {"jobs", "checkpoints", "datasets", "runs", "neuron_sets", "share_links", "studies",
            "alembic_version"} <= tables
    with db.session() as s:
        s.add(Job(id="j1", kind="score", params={"model": "tiny-bert", "nested": {"a": [1, 2]}},
                  result_key="k1", status="queued", metrics={}))
        s.add(Checkpoint(id="c1", base_model="tiny-bert", regime="mixed", path="/x", meta={"acc": 0.7}))
        s.add(Dataset(id="d1", name="n", format="canonical", path="/d", n_pairs=3, objectives=["helpful"]))
        s.add(Run(result_key="k1", kind="score", job_id="j1", summary={"n": 3}))
        s.add(NeuronSet(id="s1", name="shared", base_model="tiny-bert", formula={"op": "and"},
                        neurons={"0": [1, 2]}, size=2))
        s.add(ShareLink(token="t" * 32, target="/results/k1"))
        s.add(Study(key="s" * 24, preset="smoke", model="tiny-bert", spec={"seeds": [0]}, jobs={"train/mixed/0": "j1"},
                    stage_times={"train": [1.0, None]}))
    with db.session() as s:
        job = s.get(Job, "j1")
        assert job is not None and job.params["nested"] == {"a": [1, 2]} and job.attempts == 0
        assert s.get(Checkpoint, "c1").meta == {"acc": 0.7}  # type: ignore[union-attr]
        assert s.get(NeuronSet, "s1").neurons == {"0": [1, 2]}  # type: ignore[union-attr]
        assert s.get(ShareLink, "t" * 32).read_only is True  # type: ignore[union-attr]
        study = s.get(Study, "s" * 24)
        assert study is not None and study.status == "running" and study.stage == "train"
        assert study.jobs == {"train/mixed/0": "j1"} and study.stage_times == {"train": [1.0, None]}
    db.dispose()


def test_unique_neuron_set_names_enforced(database_url: str) -> None:
    upgrade_metadata(database_url)
    db = Database(database_url)
    with db.session() as s:
        s.add(NeuronSet(id="a", name="same", base_model="m", formula={}, neurons={}, size=0))
    try:
        with db.session() as s:
            s.add(NeuronSet(id="b", name="same", base_model="m", formula={}, neurons={}, size=0))
        raise AssertionError("duplicate name accepted")
    except sa.exc.IntegrityError:
        pass
    with db.session() as s:
        assert s.scalar(sa.select(sa.func.count()).select_from(NeuronSet)) == 1
    db.dispose()
