"""A hook without a capture is offered as a button that queues the missing captures, with the settings of
the view's existing ones."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from app.core.errors import Conflict, NotFound
from app.neurons import service
from tests.factories.neurons import add_three_regimes
from workers.contract.vocab import HookPoint

MODEL = "queue-model"


def test_missing_capture_params_copy_each_rm_s_capture_at_the_new_hook(client: TestClient) -> None:
    services = client.app.state.services  # type: ignore[attr-defined]
    caps = add_three_regimes(services, base_model=MODEL, seed=0)
    params = service.missing_capture_params(store=services.store, db=services.db, base_model=MODEL, seed=0,
                                            hook=HookPoint.act_output)
    assert sorted(p["checkpoint"] for p in params) == sorted(c.checkpoint for c in caps.values())
    assert {p["hook"] for p in params} == {"act_output"} and {p["base_model"] for p in params} == {MODEL}
    with pytest.raises(Conflict, match="already captured at down_proj_input"):
        service.missing_capture_params(store=services.store, db=services.db, base_model=MODEL, seed=0,
                                       hook=HookPoint.down_proj_input)
    with pytest.raises(NotFound, match="seed 3 has no capture"):
        service.missing_capture_params(store=services.store, db=services.db, base_model=MODEL, seed=3,
                                       hook=HookPoint.act_output)

    html = client.get(f"/models/{MODEL}/dashboard").text
    assert 'id="uncaptured-hooks"' in html and 'data-hook="act_output"' in html
    assert f'name="base_model" value="{MODEL}"' in html
    assert 'data-hook="down_proj_input"' not in html
    # The route refuses what the service refuses, by name, never a 500.
    r = client.post("/ui/neurons/queue-capture", data={"base_model": MODEL, "hook": "down_proj_input", "seed": "0"})
    assert r.status_code == 409 and "already captured" in r.text
    r = client.post("/ui/neurons/queue-capture", data={"base_model": MODEL, "hook": "nope", "seed": "0"})
    assert r.status_code == 422 and "hook" in r.text
