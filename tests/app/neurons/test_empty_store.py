"""Neuron routes before anything is captured: empty lists, clear 4xx messages, pages that say what to do."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient


def test_nothing_captured_yet(client: TestClient) -> None:
    assert client.get("/api/neurons/captures").json() == []
    assert client.get("/api/neuron-sets").json() == []
    page = client.get("/neurons")
    assert page.status_code == 200 and 'id="no-captures"' in page.text


@pytest.mark.parametrize(("method", "url", "body", "status", "needle"), [
    ("get", "/api/neurons/org/model/overlap", None, 404, "no capture for the harmless, helpful, mixed RM(s)"),
    ("get", "/api/neurons/org/model/overlap?p=120", None, 422, "p must be a percentage within [0, 100]"),
    ("get", "/api/neurons/org/model/overlap?stat=Z", None, 422, "query.stat: Input should be 'A', 'C' or 'P'"),
    ("get", "/api/neurons/org/model/scores", None, 404, "no capture of the mixed RM"),
    ("get", "/api/neuron-sets/none", None, 404, "no neuron set named 'none'"),
    ("post", "/api/neuron-sets", {"name": "s", "checkpoint": "ck"}, 404,
     "no neuron capture for checkpoint 'ck'"),
    ("post", "/api/neuron-sets/combine", {"name": "s", "op": "union", "args": ["a", "b"]}, 404,
     "no neuron set named 'a'"),
])
def test_api_errors(client: TestClient, method: str, url: str, body: dict | None, status: int,  # type: ignore[type-arg]
                    needle: str) -> None:
    r = client.get(url) if method == "get" else client.post(url, json=body)
    assert r.status_code == status, r.text
    assert needle in r.json()["detail"]


def test_pages_answer_404_with_a_message(client: TestClient) -> None:
    for url, needle in [("/models/org/model/dashboard", "no capture"),
                        ("/models/org/model/neurons/0/0", "no neuron capture of base model")]:
        r = client.get(url)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert needle in r.text
    partial = client.get("/models/org/model/dashboard", headers={"hx-request": "true"})
    assert partial.status_code == 404 and partial.text.startswith('<div class="error"')
