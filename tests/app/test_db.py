"""The metadata schema migrates and round-trips on SQLite and on a real PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from app.core.db import Base, Checkpoint, Database, Dataset, Job, LiveToggleRecord, NeuronSet, Run, ShareLink, Study
from app.core.migrate import metadata_revision, upgrade_metadata


def test_migrations_reach_head_and_rows_round_trip(database_url: str) -> None:
    assert metadata_revision(database_url) is None
    rev = upgrade_metadata(database_url)
    assert rev == "0005"
    assert upgrade_metadata(database_url) == rev  # idempotent
    db = Database(database_url)
    tables = set(sa.inspect(db.engine).get_table_names())
    assert {"jobs", "checkpoints", "datasets", "runs", "neuron_sets", "share_links", "studies",
            "live_toggles", "alembic_version"} <= tables
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
        s.add(LiveToggleRecord(id="f" * 32, checkpoint="c1", base_model="tiny-bert", regime=None, what="<b>set</b>",
                               set_key="e" * 64, n_neurons=3, layers={"2": 3}, mode="zero", factor=0.0,
                               probe_limit=64, state="done", estimate={"helpful": {"delta_margin": -0.1,
                                                                                  "delta_accuracy": 0.0}},
                               exact=None, control_exact=None, timings={"estimate_ms": 3.5, "startup_ms": None}))
    with db.session() as s:
        job = s.get(Job, "j1")
        assert job is not None and job.params["nested"] == {"a": [1, 2]} and job.attempts == 0
        assert s.get(Checkpoint, "c1").meta == {"acc": 0.7}  # type: ignore[union-attr]
        assert s.get(NeuronSet, "s1").neurons == {"0": [1, 2]}  # type: ignore[union-attr]
        assert s.get(ShareLink, "t" * 32).read_only is True  # type: ignore[union-attr]
        study = s.get(Study, "s" * 24)
        assert study is not None and study.status == "running" and study.stage == "train"
        assert study.jobs == {"train/mixed/0": "j1"} and study.stage_times == {"train": [1.0, None]}
        toggle = s.get(LiveToggleRecord, "f" * 32)
        assert toggle is not None and toggle.created_by == "local" and toggle.created_at is not None
        assert toggle.layers == {"2": 3} and toggle.exact is None and toggle.timings["startup_ms"] is None
        assert toggle.estimate["helpful"]["delta_margin"] == -0.1
    db.dispose()


def test_the_migrations_build_exactly_the_models(database_url: str) -> None:
    """A model changed without a migration (or the reverse) shows up here, not on a user's database."""
    upgrade_metadata(database_url)
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == [], diff


def test_the_live_toggles_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    from alembic import command

    from app.core.migrate import alembic_config

    upgrade_metadata(database_url)
    command.downgrade(alembic_config(database_url), "0003")
    assert metadata_revision(database_url) == "0003"
    db = Database(database_url)
    assert "live_toggles" not in sa.inspect(db.engine).get_table_names()
    db.dispose()
    assert upgrade_metadata(database_url) == "0005"


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
