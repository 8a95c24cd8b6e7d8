"""Live-ablation worker: `python -m workers.live`, the typed protocol of `workers.contract.live` as JSON lines.

The first line is a `LiveSessionConfig` (checkpoint, probe set); each following line a `LiveToggleRequest`.
Keeping the RM and its probe set warm in this process is what makes toggles interactive.
"""

from __future__ import annotations

import io
import json
import sys
import traceback
from typing import Any, TextIO

from pydantic import BaseModel, ValidationError

from workers.contract.artifacts import checkpoint_key, key_of
from workers.contract.live import (
    LiveAnswer,
    LiveError,
    LiveEstimateAnswer,
    LiveEstimateRequest,
    LiveReady,
    LiveSessionConfig,
    LiveToggleRequest,
)
from workers.storage import ArtifactStore


def open_session(config: LiveSessionConfig) -> Any:
    import numpy as np

    from workers.ablation.live import LiveAblationSession
    from workers.data.loaders import load_dataset
    from workers.models.registry import load_reward_model, read_checkpoint_meta

    store = ArtifactStore(config.store_url)
    ck_dir = store.local_dir(checkpoint_key(config.checkpoint))
    meta = read_checkpoint_meta(ck_dir)
    loaded = load_reward_model(str(meta.get("base_model", "")), checkpoint_dir=str(ck_dir), device=config.device)
    by_objective: dict[str, list[Any]] = {}
    for p in load_dataset(config.probe, store=store):
        by_objective.setdefault(p.objective, []).append(p)
    means = None
    if config.means is not None:
        with np.load(io.BytesIO(store.read_bytes(key_of(config.means)))) as data:
            means = data["means"]
    return LiveAblationSession(loaded, by_objective, max_length=config.max_length, means=means,
                               hook_point=config.hook)


class Estimates:
    """The session's first-order estimator, built on the first estimate request (one forward and backward
    pass over the probe set), then answering any set from memory."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.estimator: Any = None

    def answer(self, req: LiveEstimateRequest) -> LiveEstimateAnswer:
        import time

        started = time.perf_counter()
        built_now = self.estimator is None
        if built_now:
            from workers.ablation.estimate import FirstOrderEstimate

            self.estimator = FirstOrderEstimate.from_session(self.session)
        est = self.estimator.estimate(req.neurons.layers, mode=req.mode, factor=req.factor)
        objectives = {o: {k: v[k] for k in ("n_pairs", "baseline_accuracy", "baseline_mean_margin", "delta_margin",
                                            "delta_accuracy")} for o, v in est.items()}
        return LiveEstimateAnswer.model_validate({
            "objectives": objectives, "seconds": time.perf_counter() - started,
            "build_s": float(self.estimator.build_s), "built_now": built_now})


def _send(out: TextIO, message: BaseModel) -> None:
    out.write(message.model_dump_json() + "\n")
    out.flush()


def _error(exc: Exception) -> LiveError:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return LiveError(error="invalid request: " + "; ".join(parts))
    return LiveError(error=f"{type(exc).__name__}: {exc}")


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # anything printed by libraries must not corrupt the protocol
    first = sys.stdin.readline()
    if not first:
        return 0
    try:
        session = open_session(LiveSessionConfig.model_validate_json(first))
        _send(out, LiveReady.model_validate(session.info()))
    except Exception as exc:
        traceback.print_exc()
        _send(out, _error(exc))
        return 1
    estimates = Estimates(session)
    for line in sys.stdin:
        try:
            if json.loads(line).get("estimate") is True:
                _send(out, estimates.answer(LiveEstimateRequest.model_validate_json(line)))
                continue
            req = LiveToggleRequest.model_validate_json(line)
            ans = session.toggle(req.neurons.layers, mode=req.mode, factor=req.factor, path=req.path)
            _send(out, LiveAnswer.model_validate(ans))
        except Exception as exc:  # a bad request must not kill the warm session
            _send(out, _error(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
