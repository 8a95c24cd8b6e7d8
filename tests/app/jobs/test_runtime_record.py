"""A job's runtime record with the `local` executor (Ray's is in test_ray_executor.py): the worker's host, code
and peak memory on the job's JSON and page; no resources reserved; the `runtime` column's migration."""

from __future__ import annotations

import socket
from pathlib import Path

import sqlalchemy as sa

from tests.conftest import make_settings, wait_job
from tests.factories.http import app_client

ROOT = Path(__file__).resolve().parents[3]


def test_a_local_job_records_where_it_ran_and_its_peak_memory(tmp_path: Path) -> None:
    from app.main import create_app

    params = {"model": "tiny-bert", "max_length": 32, "dataset": {"source": "bundled", "split": "test", "limit": 4}}
    with app_client(create_app(make_settings(tmp_path, ray_dashboard_url="http://dash.example"))) as c:
        r = c.post("/api/jobs", json={"kind": "score", "params": params})
        assert r.status_code == 202, r.text
        assert r.json()["runtime"] == {"request": {}, "parameters": 2_057_601, "placement": {}, "worker": None}
        job = wait_job(lambda j: c.get(f"/api/jobs/{j}").json(), r.json()["id"], timeout=300)
        assert job["status"] == "succeeded", job["error"]
        worker = job["runtime"]["worker"]
        assert worker["finished"] and worker["hostname"] == socket.gethostname()
        assert worker["code_path"] == str(ROOT / "workers") and worker["ray_submission_id"] is None
        assert 100 * 2**20 < worker["peak_rss_bytes"] < 8 * 2**30
        page = c.get(f"/jobs/{job['id']}").text
        assert f'Ran on <span class="runtime-host">{socket.gethostname()}</span>' in page
        assert f"peak memory <span class=\"runtime-peak\">{worker['peak_rss_bytes'] / 2**20:.0f} MB" in page
        assert "Ray dashboard" not in page  # a local job has no Ray job to link


def test_the_job_runtime_migration_downgrades_and_upgrades_again(database_url: str) -> None:
    from alembic import command

    from app.core.migrate import alembic_config, metadata_revision, upgrade_metadata

    assert upgrade_metadata(database_url) == "0005"
    command.downgrade(alembic_config(database_url), "0004")
    assert metadata_revision(database_url) == "0004"
    engine = sa.create_engine(database_url)
    try:
        assert "runtime" not in {c["name"] for c in sa.inspect(engine).get_columns("jobs")}
    finally:
        engine.dispose()
    assert upgrade_metadata(database_url) == "0005"
