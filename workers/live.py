"""Live-ablation worker: `python -m workers.live`, the typed protocol of `workers.contract.live` as JSON lines.

The first line is a `LiveSessionConfig`. Keeping the RM and its probe set warm in this process is what makes
toggles interactive. The session is a `LiveCore`, which only needs a function to send its messages with: here
one JSON line each on stdout; in a Ray Serve replica (`workers.serve_live`) the answer of an HTTP request. Two
threads:

* the reading thread (main; the replica's request handlers) parses each line; it answers estimates and
  cancels itself, so they never wait behind exact work, and queues exact requests;
* the compute thread sets the session up, makes the estimator table available, then runs exact requests one
  at a time (streams round by round, asking before every batch whether the request was cancelled).

Start-up order, for the first answer a user sees: the estimator table is looked up in the artifact store
before torch is even imported, so a cached estimate answers in about a second. The capture job leaves one for
the default probe set (`prepare_table`), and every session that builds one stores it, keyed by the RM, the
probe texts, the settings and the worker code. Then the model is loaded and the session records its prefix
states; if the table was not cached it is built now (one forward and backward pass over the probe set) and
stored; then `LiveReady`: a ready worker answers both estimates and exact toggles.
"""

from __future__ import annotations

import hashlib
import io
import json
import queue
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, TextIO

from pydantic import BaseModel, ValidationError

from workers.contract.artifacts import checkpoint_key, key_of
from workers.contract.live import (
    ROUND_PAIRS,
    LiveAnswer,
    LiveCancel,
    LiveError,
    LiveEstimateAnswer,
    LiveEstimateRequest,
    LiveReady,
    LiveRound,
    LiveSessionConfig,
    LiveStreamEnd,
    LiveStreamRequest,
    LiveToggleRequest,
)
from workers.contract.version import code_version
from workers.storage import ArtifactStore


class Output:
    """One line per message; the reading and compute threads both write."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def send(self, message: BaseModel) -> None:
        with self.lock:
            self.out.write(message.model_dump_json() + "\n")
            self.out.flush()


def _error(exc: Exception, rid: str | None = None) -> LiveError:
    if isinstance(exc, ValidationError):
        parts = [f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
        return LiveError(id=rid, error="invalid request: " + "; ".join(parts))
    return LiveError(id=rid, error=f"{type(exc).__name__}: {exc}")


class Probe:
    """The probe pairs by objective, and the means, as the config names them (no torch needed)."""

    def __init__(self, config: LiveSessionConfig, store: ArtifactStore, with_means: bool = True) -> None:
        import numpy as np

        from workers.data.loaders import load_dataset
        from workers.data.text import pair_texts

        self.by_objective: dict[str, list[Any]] = {}
        for p in load_dataset(config.probe, store=store):
            self.by_objective.setdefault(p.objective, []).append(p)
        self.means = None
        if config.means is not None and with_means:
            with np.load(io.BytesIO(store.read_bytes(key_of(config.means)))) as data:
                self.means = data["means"]
        h = hashlib.sha256()
        for o, pairs in self.by_objective.items():
            h.update(o.encode() + b"\0")
            for p in pairs:
                for t in pair_texts(p):
                    h.update(t.encode() + b"\0")
        self.texts_sha = h.hexdigest()


def table_key(config: LiveSessionConfig, probe: Probe) -> str:
    """Where a session's estimator table is kept: a hash of the RM, the probe texts, the settings and the
    worker code, so a table is only ever reused for exactly what built it. (The means that mode 'mean' fills
    with are the session's, set on the table when it is loaded: they are not part of what the table stores.)"""
    spec = json.dumps({"checkpoint": config.checkpoint, "texts": probe.texts_sha, "max_length": config.max_length,
                       "hook": str(config.hook), "code": code_version()}, sort_keys=True)
    return f"estimates/{hashlib.sha256(spec.encode()).hexdigest()[:32]}.npz"


def prepare_table(store: ArtifactStore, checkpoint: str, loaded: Any, hook: Any,
                  probe_limit: int | None = None) -> tuple[str, bool]:
    """Build and store the estimator table of a loaded RM on the default live probe set, unless stored
    already; (its key, whether it was built now). The capture job calls it, so the dashboard's first
    estimate never waits for a build."""
    from workers.ablation.estimate import FirstOrderEstimate
    from workers.contract.live import DEFAULT_PROBE_PAIRS, default_probe

    config = LiveSessionConfig(store_url=store.url, checkpoint=checkpoint,
                               probe=default_probe(probe_limit or DEFAULT_PROBE_PAIRS), hook=hook)
    probe = Probe(config, store, with_means=False)
    key = table_key(config, probe)
    if store.exists(key):
        return key, False
    table = FirstOrderEstimate(loaded, probe.by_objective, config.max_length, hook_point=config.hook).table()
    table.means = None
    store.write_bytes(key, table.to_bytes())
    return key, True


def open_session(config: LiveSessionConfig, probe: Probe, store: ArtifactStore) -> Any:
    from workers.ablation.live import LiveAblationSession
    from workers.models.registry import load_reward_model, read_checkpoint_meta

    ck_dir = store.local_dir(checkpoint_key(config.checkpoint))
    meta = read_checkpoint_meta(ck_dir)
    loaded = load_reward_model(str(meta.get("base_model", "")), checkpoint_dir=str(ck_dir), device=config.device)
    return LiveAblationSession(loaded, probe.by_objective, max_length=config.max_length, means=probe.means,
                               hook_point=config.hook, batch_size=8, round_pairs=ROUND_PAIRS)


class Estimates:
    """The session's estimator table: loaded from the store, or built from the session (then stored)."""

    def __init__(self) -> None:
        self.table: Any = None
        self.cached = False
        self.ready = threading.Event()
        self.failed: str | None = None

    def load(self, store: ArtifactStore, key: str, means: Any) -> bool:
        from workers.ablation.estimate_table import EstimateTable

        try:
            if not store.exists(key):
                return False
            table = EstimateTable.from_bytes(store.read_bytes(key))
            table.means = None if means is None else means.astype("float64")
            if table.means is not None and table.means.shape != (table.n_layers, table.n_neurons):
                raise ValueError(f"means of shape {table.means.shape} for a {table.n_layers}×{table.n_neurons} RM")
            self.table = table
        except Exception:  # a damaged table is rebuilt, never trusted
            traceback.print_exc()
            return False
        self.cached = True
        self.ready.set()
        return True

    def build(self, session: Any, store: ArtifactStore, key: str) -> None:
        from workers.ablation.estimate import FirstOrderEstimate

        try:
            self.table = FirstOrderEstimate.from_session(session).table()
            try:
                means, self.table.means = self.table.means, None
                data = self.table.to_bytes()
                self.table.means = means
                store.write_bytes(key, data)
            except Exception:  # a read-only store only costs the next session the build
                traceback.print_exc()
        except Exception as exc:
            traceback.print_exc()
            self.failed = f"{type(exc).__name__}: {exc}"
        self.ready.set()

    def answer(self, req: LiveEstimateRequest, waited: bool = False) -> LiveEstimateAnswer:
        """The estimate of one request; `waited`: it arrived before the table was ready (so it paid for the
        build, which `built_now` then says)."""
        from workers.ablation.live_stats import control_seed, layer_matched_control

        started = time.perf_counter()
        if self.failed is not None:
            raise RuntimeError(f"the estimator could not be built: {self.failed}")
        table = self.table
        built_now = waited and not self.cached
        layers = req.neurons.layers

        def summary(layers: dict[int, list[int]]) -> dict[str, Any]:
            est = table.estimate(layers, mode=str(req.mode), factor=float(req.factor))
            return {o: {k: v[k] for k in ("n_pairs", "baseline_accuracy", "baseline_mean_margin", "delta_margin",
                                          "delta_accuracy")} for o, v in est.items()}

        control = control_neurons = None
        if req.control:
            control_neurons = layer_matched_control(layers, table.n_neurons,
                                                    seed=control_seed(layers, str(req.mode), float(req.factor)))
            control = summary(control_neurons)
        return LiveEstimateAnswer.model_validate({
            "id": req.id, "objectives": summary(layers), "control": control,
            "control_neurons": control_neurons and {str(k): v for k, v in control_neurons.items()},
            "seconds": time.perf_counter() - started, "build_s": float(table.build_s), "built_now": built_now,
            "cached": self.cached})


class Streams:
    """The exact requests waiting or running, and which of them were cancelled."""

    def __init__(self) -> None:
        self.queue: queue.Queue[tuple[float, LiveStreamRequest | LiveToggleRequest] | None] = queue.Queue()
        self.cancelled: set[str] = set()
        self.lock = threading.Lock()

    def cancel(self, rid: str) -> None:
        with self.lock:
            self.cancelled.add(rid)

    def is_cancelled(self, rid: str | None) -> bool:
        with self.lock:
            return rid is not None and rid in self.cancelled


Send = Callable[[BaseModel], None]
"""Where a session's messages go: one line of stdout (`Output.send`), or a Serve replica's router."""


def _phase(session: Any, rid: str, phase: str, layers: dict[int, list[int]], req: LiveStreamRequest, started: float,
           queued_s: float, send: Send, stop: Callable[[], bool], counter: list[int],
           control_neurons: Any = None) -> None:
    """Stream one ablation's rounds, counting each computed round in `counter[0]`."""
    from workers.ablation.live_stats import running_delta

    totals = {o: int(n) for o, n in session.info()["objectives"].items()}
    for step in session.toggle_rounds(layers, mode=req.mode, factor=req.factor, path=req.path, should_stop=stop):
        counter[0] += 1
        running = {}
        for o in session.objectives:
            base, abl = session.pair_margins(step["rewards"], o, step["pairs_done"][o])
            running[o] = running_delta(base, abl, n_total=totals[o])
        answer = step["answer"]
        if answer is not None:
            answer["id"] = rid
        send(LiveRound.model_validate({
            "id": rid, "phase": phase, "round": step["round"], "n_rounds": step["n_rounds"],
            "seconds": time.perf_counter() - started, "queued_s": queued_s, "objectives": running,
            "final": step["final"], "path": step["path"], "answer": answer,
            "control_neurons": control_neurons and {str(k): v for k, v in control_neurons.items()}}))


def run_stream(session: Any, req: LiveStreamRequest, queued_s: float, send: Send, streams: Streams) -> None:
    """The set's rounds, then its control's; cancelled between any two batches."""
    from workers.ablation.live import Stopped
    from workers.ablation.live_stats import control_seed, layer_matched_control

    started = time.perf_counter()
    rounds = [0]
    layers = {int(k): list(v) for k, v in req.neurons.layers.items() if v}

    def stop() -> bool:
        return streams.is_cancelled(req.id)

    try:
        if stop():
            raise Stopped("cancelled while queued")
        _phase(session, req.id, "set", layers, req, started, queued_s, send, stop, rounds)
        if req.control and layers:
            control = layer_matched_control(layers, session.n_neurons,
                                            seed=control_seed(layers, str(req.mode), float(req.factor)))
            _phase(session, req.id, "control", control, req, started, queued_s, send, stop, rounds, control)
        end = "done"
    except Stopped:
        end = "cancelled"
    send(LiveStreamEnd(id=req.id, end=end, rounds_computed=rounds[0], seconds=time.perf_counter() - started))


class LiveCore:
    """One live session in this process, whoever carries its messages: `main()` (JSON lines on stdin and
    stdout) and the Serve replica of `workers.serve_live` drive the same code.

    Construction reads the probe set and looks the estimator table up (no torch yet; raises on a bad config);
    `start()` starts the compute thread, which sets the session up and sends `LiveReady` (or a `LiveError`
    without an id); `handle()` takes one request as parsed JSON: estimates and cancels are answered on the
    caller's thread (an estimate that must wait for the table's build waits on a thread of its own), exact
    requests are queued for the compute thread. Every answer goes to `send`, which the reading and compute
    threads both call."""

    def __init__(self, config: LiveSessionConfig, send: Send) -> None:
        self.config = config
        self.send = send
        self.estimates, self.streams = Estimates(), Streams()
        self.store = ArtifactStore(config.store_url)
        self.probe = Probe(config, self.store)
        self.estimates.load(self.store, table_key(config, self.probe), self.probe.means)
        self._thread = threading.Thread(target=self._compute, daemon=True, name="compute")

    def start(self) -> LiveCore:
        self._thread.start()
        return self

    def _compute(self) -> None:
        compute_loop(self.config, [self.probe], self.store, self.estimates, self.streams, self.send)

    def handle(self, raw: Any) -> None:
        """One request (a parsed JSON line); a bad one is answered with a `LiveError` carrying its id."""
        rid = raw.get("id") if isinstance(raw, dict) else None
        try:
            if isinstance(raw, dict) and "cancel" in raw:
                self.streams.cancel(LiveCancel.model_validate(raw).cancel)
            elif isinstance(raw, dict) and raw.get("estimate") is True:
                req = LiveEstimateRequest.model_validate(raw)
                if self.estimates.ready.is_set():
                    _answer_estimate(self.estimates, req, self.send)
                else:  # wait for the build without holding up cancels and other estimates
                    threading.Thread(target=_answer_estimate, args=(self.estimates, req, self.send, True),
                                     daemon=True).start()
            elif isinstance(raw, dict) and raw.get("stream") is True:
                self.streams.queue.put((time.perf_counter(), LiveStreamRequest.model_validate(raw)))
            else:
                self.streams.queue.put((time.perf_counter(), LiveToggleRequest.model_validate(raw)))
        except Exception as exc:
            self.send(_error(exc, rid if isinstance(rid, str) else None))

    def handle_line(self, line: str) -> None:
        try:
            raw = json.loads(line)
        except Exception as exc:
            self.send(_error(exc))
            return
        self.handle(raw)

    def close(self) -> None:
        """The compute thread ends after the request it is running (cancel streams first to stop sooner)."""
        self.streams.queue.put(None)


def compute_loop(config: LiveSessionConfig, probe_box: list[Any], store: ArtifactStore, estimates: Estimates,
                 streams: Streams, send: Send) -> None:
    """Set the session up, then answer exact requests in order."""
    try:
        probe = probe_box[0]
        session = open_session(config, probe, store)
        if not estimates.ready.is_set():  # before LiveReady: a ready worker answers estimates at once
            estimates.build(session, store, table_key(config, probe))
        info = session.info()
        info["estimator_cached"] = estimates.cached
        send(LiveReady.model_validate(info))
    except Exception as exc:
        traceback.print_exc()
        send(_error(exc))
        estimates.failed = estimates.failed or f"the session could not start: {exc}"
        estimates.ready.set()
        return
    while True:
        item = streams.queue.get()
        if item is None:
            return
        queued_at, req = item
        queued_s = time.perf_counter() - queued_at
        try:
            if isinstance(req, LiveStreamRequest):
                run_stream(session, req, queued_s, send, streams)
            else:
                ans = session.toggle(req.neurons.layers, mode=req.mode, factor=req.factor, path=req.path)
                ans["id"] = req.id
                send(LiveAnswer.model_validate(ans))
        except Exception as exc:  # a bad request must not kill the warm session
            traceback.print_exc()
            send(_error(exc, req.id))


def _answer_estimate(estimates: Estimates, req: LiveEstimateRequest, send: Send, waited: bool = False) -> None:
    estimates.ready.wait()
    try:
        send(estimates.answer(req, waited))
    except Exception as exc:
        send(_error(exc, req.id))


def main() -> int:
    out = Output(sys.stdout)
    sys.stdout = sys.stderr  # anything printed by libraries must not corrupt the protocol
    first = sys.stdin.readline()
    if not first:
        return 0
    try:
        core = LiveCore(LiveSessionConfig.model_validate_json(first), out.send)
    except Exception as exc:
        traceback.print_exc()
        out.send(_error(exc))
        return 1
    core.start()
    for line in sys.stdin:
        core.handle_line(line)
    core.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
