"""Job, result, dataset and share pages and their JSON twins, on rows seeded through ingest (no model)."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from app.core.db import Job
from tests.factories import add_checkpoint
from tests.factories.jobs import ScoredPair, score_result, some_pairs
from workers.contract.vocab import Objective


def _services(client: TestClient):  # type: ignore[no-untyped-def]
    return client.app.state.services  # type: ignore[attr-defined]


def _expected_summary(pairs: list[ScoredPair]) -> dict[tuple[str, str], dict[str, float]]:
    groups: dict[tuple[str, str], list[ScoredPair]] = {}
    for p in pairs:
        groups.setdefault((p.objective, p.subset), []).append(p)
    return {k: {"n_pairs": len(g), "accuracy": sum(p.chosen > p.rejected for p in g) / len(g),
                "mean_chosen": sum(p.chosen for p in g) / len(g), "mean_rejected": sum(p.rejected for p in g) / len(g)}
            for k, g in groups.items()}


def test_rewards_api_summarises_the_seeded_rows(client: TestClient) -> None:
    pairs = some_pairs()
    key = score_result(_services(client), pairs)
    body = client.get(f"/api/results/{key}/rewards").json()
    assert body["result_key"] == key
    got = {(s["objective"], s["subset"]): s for s in body["summary"]}
    expected = _expected_summary(pairs)
    assert set(got) == set(expected)
    for k, e in expected.items():
        for field, value in e.items():
            assert got[k][field] == pytest.approx(value), (k, field)
    assert [(r["pair_id"], r["side"]) for r in body["rows"]][:2] == [("h1", "chosen"), ("h1", "rejected")]
    assert len(body["rows"]) == 2 * len(pairs)
    page = client.get(f"/api/results/{key}/rewards?limit=3&offset=2").json()["rows"]
    assert [(r["pair_id"], r["side"]) for r in page] == [("h2", "chosen"), ("h2", "rejected"), ("h3", "chosen")]
    manifest = client.get(f"/api/results/{key}").json()
    assert manifest["result_key"] == key and manifest["kind"] == "score" and manifest["summary"] == {"n_pairs": 6}
    assert manifest["tables"][0]["table"] == "rewards" and manifest["tables"][0]["rows"] == 12


def test_unknown_result_is_404_on_api_and_page(client: TestClient) -> None:
    for path in ("/api/results/nope", "/api/results/nope/rewards", "/results/nope"):
        r = client.get(path)
        assert r.status_code == 404 and "nope" in r.json()["detail"], path


def test_result_page_shows_summary_rows_and_histogram(client: TestClient) -> None:
    pairs = some_pairs()
    key = score_result(_services(client), pairs)
    r = client.get(f"/results/{key}")
    assert r.status_code == 200
    html = r.text
    assert f"/results/{key}" in html and "6 pairs" in html
    summary = html.split('id="summary-table"')[1].split("</table>")[0]
    assert summary.count("<tr>") == 1 + len(_expected_summary(pairs))
    # helpful/chat: one win of two, mean chosen 0.625, mean rejected 0.625
    assert re.search(r"<td>helpful</td><td>chat</td><td class=\"num\">2</td>\s*<td class=\"num\">0.500</td>"
                     r"<td class=\"num\">0.625</td><td class=\"num\">0.625</td>", summary)
    rows = html.split('id="rewards-table"')[1].split("</table>")[0]
    assert rows.count("<tr>") == 1 + 2 * len(pairs) and "<td class=\"num\">1.5000</td>" in rows
    spec = html.split('id="reward-hist-spec">')[1].split("</script>")[0]
    assert '"name": "chosen"' in spec and '"name": "rejected"' in spec
    assert "-0.25" in spec and "0.75" in spec


def test_index_lists_models_checkpoints_datasets_and_jobs(client: TestClient) -> None:
    services = _services(client)
    ck = add_checkpoint(services, base_model="tiny-bert", regime="helpful", seed=3)
    key = score_result(services, some_pairs())
    html = client.get("/jobs").text
    assert '<option value="tiny-bert">' in html
    assert f'<option value="{ck}">tiny-bert · helpful · seed 3 · {ck[:10]}</option>' in html
    assert "<option>test</option><option>train</option><option>all</option>" in html
    with services.db.session() as s:
        job = s.query(Job).filter(Job.result_key == key).one()
    assert f'href="/jobs/{job.id}"' in html
    assert f'href="/jobs/{job.id}"' in client.get("/ui/jobs").text


def test_job_page_and_status_partial(client: TestClient) -> None:
    services = _services(client)
    key = score_result(services, some_pairs())
    with services.db.session() as s:
        job = s.query(Job).filter(Job.result_key == key).one()
    html = client.get(f"/jobs/{job.id}").text
    assert f"Job {job.id}" in html and 'data-status="succeeded"' in html
    assert f'href="/results/{key}">open results</a>' in html and "&#34;model&#34;: &#34;tiny-bert&#34;" in html
    status = client.get(f"/ui/jobs/{job.id}/status").text
    assert 'data-status="succeeded"' in status and "hx-trigger" not in status
    assert client.get("/jobs/nope").status_code == 404


def test_job_api_lists_and_filters_with_typed_params(client: TestClient) -> None:
    services = _services(client)
    score_result(services, some_pairs())
    jobs = client.get("/api/jobs").json()
    assert len(jobs) == 1 and jobs[0]["kind"] == "score" and jobs[0]["status"] == "succeeded"
    assert client.get("/api/jobs?status=succeeded&kind=score").json() == jobs
    assert client.get("/api/jobs?status=running").json() == []
    r = client.get("/api/jobs?status=sleeping")
    assert r.status_code == 422 and "status" in r.json()["detail"]
    r = client.get("/api/jobs?kind=dance")
    assert r.status_code == 422 and "kind" in r.json()["detail"]
    assert client.post(f"/api/jobs/{jobs[0]['id']}/cancel").status_code == 409


def test_score_form_errors_name_the_field(client: TestClient) -> None:
    r = client.post("/ui/jobs/score", data={"model": "tiny-bert", "limit": "many"}, headers={"hx-request": "1"})
    assert r.status_code == 422 and "whole number" in r.text and 'class="error"' in r.text
    r = client.post("/ui/jobs/score", data={"model": "tiny-bert", "split": "dev"})
    assert r.status_code == 422 and "split" in r.json()["detail"]
    r = client.post("/ui/jobs/score", data={"model": "tiny-bert", "max_length": "2"})
    assert r.status_code == 422 and "max_length" in r.json()["detail"]


def test_share_link_opens_the_view_read_only(client: TestClient) -> None:
    key = score_result(_services(client), some_pairs())
    r = client.post("/api/shares", json={"target": f"/results/{key}?x=1"})
    assert r.status_code == 201, r.text
    link = r.json()
    assert link["read_only"] is True and link["target"] == f"/results/{key}?x=1"
    assert link["url"].endswith(f"/s/{link['token']}")
    opened = client.get(f"/s/{link['token']}", follow_redirects=False)
    assert opened.status_code == 303 and opened.headers["location"] == f"/results/{key}?x=1&share={link['token']}"
    page = client.get(opened.headers["location"])
    assert page.status_code == 200 and "read-only shared view" in page.text
    refused = client.post(f"/api/shares?share={link['token']}", json={"target": "/"})
    assert refused.status_code == 403
    assert client.get("/s/unknown", follow_redirects=False).status_code == 404
    bad = client.post("/api/shares", json={"target": "https://elsewhere.example/"})
    assert bad.status_code == 422 and "path on this server" in bad.json()["detail"]


def test_datasets_page_lists_bundled_and_uploaded(client: TestClient) -> None:
    from tests.app.datasets.test_upload import GOOD, _lines

    up = client.post("/ui/datasets", files={"file": ("mine.jsonl", _lines(GOOD, GOOD | {"pair_id": "p2"}))})
    assert up.status_code == 200 and "Stored <b>mine.jsonl</b>: 2 pairs (helpful)" in up.text
    html = client.get("/datasets").text
    assert "<td>helpful, harmless</td>" in html and "<td>mine.jsonl</td>" in html
    assert "<option>hh-rlhf</option>" in html
    assert client.get("/api/datasets").json()[0]["objectives"] == [Objective.helpful]
