"""Live-ablation worker: `python -m workers.live`, JSON lines on stdin/stdout.

The first line configures the session (checkpoint, probe set); each following line is a toggle.
Keeping the RM and its probe set warm in this process is what makes toggles interactive.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any

from workers.specs import DatasetRef, checkpoint_dir


def _session(config: dict[str, Any]) -> Any:
    import numpy as np

    from workers.ablation.live import LiveAblationSession
    from workers.data.loaders import load_dataset
    from workers.models.registry import load_reward_model, read_checkpoint_meta

    ck_dir = checkpoint_dir(config["artifact_root"], config["checkpoint"])
    meta = read_checkpoint_meta(ck_dir)
    loaded = load_reward_model(str(meta.get("base_model", "")), checkpoint_dir=str(ck_dir),
                               device=config.get("device", "auto"))
    ref = DatasetRef.model_validate(config.get("probe", {"source": "bundled", "split": "test", "limit": 64}))
    pairs = load_dataset(ref)
    by_objective: dict[str, list[Any]] = {}
    for p in pairs:
        by_objective.setdefault(p.objective, []).append(p)
    means = np.asarray(config["means"]) if config.get("means") is not None else None
    return LiveAblationSession(loaded, by_objective, max_length=int(config.get("max_length", 128)), means=means,
                               hook_point=config.get("hook_point", "down_proj_input"))


def main() -> int:
    out = sys.stdout
    sys.stdout = sys.stderr  # anything printed by libraries must not corrupt the protocol
    first = sys.stdin.readline()
    if not first:
        return 0
    try:
        session = _session(json.loads(first))
        out.write(json.dumps({"ready": True, **session.info()}, default=float) + "\n")
    except Exception as exc:
        traceback.print_exc()
        out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
        return 1
    out.flush()
    for line in sys.stdin:
        try:
            req = json.loads(line)
            neurons = {int(k): v for k, v in (req.get("neurons") or {}).items()}
            ans = session.toggle(neurons, mode=req.get("mode", "zero"), factor=float(req.get("factor", 0.0)),
                                 path=req.get("path", "fast"))
            out.write(json.dumps(ans, default=float) + "\n")
        except Exception as exc:  # a bad request must not kill the warm session
            out.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
