"""What every request of the API to a Ray cluster shares, for Ray jobs (`app.jobs.ray_executor`) and Serve
live sessions (`app.ablation.serve_pool`) alike: the bearer token, the environment a worker gets, and the
`workers` package shipped as a runtime_env `py_modules` entry."""

from __future__ import annotations

import os
from typing import Any

import httpx

from workers.contract.version import WORKERS_DIR

FORWARDED_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")
"""Passed on when this process has them: a cluster with no hub access would otherwise hang on downloads."""
SHIPPED_EXCLUDES = ["__pycache__", "*.pyc"]


def bearer_headers(token: str | None) -> dict[str, str]:
    """Headers for a cluster with token authentication (none without a token); never logged."""
    return {"Authorization": f"Bearer {token}"} if token else {}


def worker_env() -> dict[str, str]:
    """Environment variables a worker gets on top of the node's: the local executor's defaults and the
    offline switches."""
    env = {"TOKENIZERS_PARALLELISM": os.environ.get("TOKENIZERS_PARALLELISM", "false")}
    env.update({k: os.environ[k] for k in FORWARDED_ENV if k in os.environ})
    return env


def shipped_code() -> dict[str, Any]:
    """The runtime_env entries that ship the `workers` package (the worker never imports `app`)."""
    return {"py_modules": [str(WORKERS_DIR)], "excludes": list(SHIPPED_EXCLUDES)}


def alive_node_totals(address: str, headers: dict[str, str]) -> list[dict[str, float]]:
    """Total resources of each alive node, from the dashboard's state API (HTTP, no `ray.init`); raises
    httpx.HTTPStatusError on a refusal (401/403 under token authentication)."""
    r = httpx.get(f"{address.rstrip('/')}/api/v0/nodes", params={"detail": "true", "limit": 10000},
                  headers=headers, timeout=10)
    r.raise_for_status()
    nodes = r.json()["data"]["result"]["result"]
    return [dict(n.get("resources_total") or {}) for n in nodes if n.get("state") == "ALIVE"]
