"""schemathesis over the OpenAPI document, every check on, against a real server with seeded results.

The server runs with logins on and a researcher's bearer token (so every route is reached, CSRF does not
apply to token requests). Path parameters are pinned to seeded results so that the 200 answers are checked
against their schemas, not only 404s. Pass: 0 server errors, 0 response-schema violations, 0 failures of
any other check; the number of cases is written to `bench/results/schemathesis.json`.

`positive_data_acceptance` also accepts 404, 409 and 422: a schema-valid request may name a model, a
checkpoint or a neuron outside the stored ones, which OpenAPI cannot express.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.auth import users
from app.auth.schemas import Role
from tests.conftest import LiveServer, make_settings
from tests.factories.ablation import ablation_result, captured_rms
from tests.factories.evaluation import BASE, FULL, ck_id, seed_lab
from tests.factories.jobs import score_result, some_pairs
from workers.contract.vocab import Experiment, Regime

ROOT = Path(__file__).resolve().parents[2]
MAX_EXAMPLES = int(os.environ.get("TENSION_SCHEMATHESIS_EXAMPLES", "40"))
CONFIG = """
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "401", "403", "404", "409", "413", "422", "429"]

[[operations]]
include-name = "GET /api/results/{{result_key}}"
parameters = {{ result_key = "{score}" }}

[[operations]]
include-name = "GET /api/results/{{result_key}}/rewards"
parameters = {{ result_key = "{score}" }}

[[operations]]
include-name = "GET /api/ablations/{{result_key}}"
parameters = {{ result_key = "{ablation}" }}

[[operations]]
include-name = "GET /api/lab/evaluations/{{result_key}}"
parameters = {{ result_key = "{evaluation}" }}

[[operations]]
include-name = "GET /api/lab/evaluations/{{result_key}}/flips"
parameters = {{ result_key = "{evaluation}" }}

[[operations]]
include-name = "GET /api/lab/checkpoints/{{checkpoint}}"
parameters = {{ checkpoint = "{lab_checkpoint}" }}

[[operations]]
include-name = "GET /api/lab/checkpoints/{{checkpoint}}/history"
parameters = {{ checkpoint = "{lab_checkpoint}" }}

[[operations]]
include-name = "GET /api/lab/compare/{{base_model}}"
parameters = {{ base_model = "{lab_model}" }}

[[operations]]
include-name = "GET /api/neurons/{{base_model}}/overlap"
parameters = {{ base_model = "{model}" }}

[[operations]]
include-name = "GET /api/neurons/{{base_model}}/scores"
parameters = {{ base_model = "{model}" }}
"""


def _seed(services: Any) -> tuple[str, dict[str, str]]:
    """A researcher's token, and results to pin into the path parameters."""
    _, token = users.add_user(services.db, "fuzzer", Role.researcher)
    cks = captured_rms(services)
    seed_lab(services)
    ablation, _ = ablation_result(services, checkpoint=cks[Regime.mixed], regime=Regime.mixed,
                                  experiment=Experiment.B, percents=[10.0])
    seeded = {"score": score_result(services, some_pairs()), "ablation": ablation, "evaluation": FULL,
              "lab_checkpoint": ck_id(Regime.mixed, 0), "lab_model": BASE, "model": "tiny-bert"}
    return token, seeded


def test_openapi_contract_holds_under_schemathesis(tmp_path: Path) -> None:
    # Logins on; jobs are queued, never run.
    with LiveServer(make_settings(tmp_path, auth="on"), start_supervisor=False) as srv:
        token, seeded = _seed(srv.services)
        url = srv.url
        config = tmp_path / "schemathesis.toml"
        config.write_text(CONFIG.format(**seeded))
        report = tmp_path / "report.json"
        proc = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "--config-file", str(config), "run", f"{url}/openapi.json",
             "--checks", "all", "--max-examples", str(MAX_EXAMPLES), "--seed", "1", "--workers", "1",
             "-H", f"Authorization: Bearer {token}", "--report", "ndjson", "--report-ndjson-path", str(report),
             "--no-color"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    summary = out[out.rfind("SUMMARY"):] if "SUMMARY" in out else out[-3000:]
    cases = _cases(out)
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "schemathesis.json").write_text(json.dumps(
        {"exit_code": proc.returncode, "cases": cases, "max_examples": MAX_EXAMPLES, "summary": summary[-2000:]},
        indent=2))
    assert cases > 500, summary
    assert proc.returncode == 0, out[-20000:]


def _cases(out: str) -> int:
    import re

    m = re.search(r"(\d+) generated", out)
    return int(m.group(1)) if m else 0


if __name__ == "__main__":  # pragma: no cover
    pytest.main([__file__, "-q"])
