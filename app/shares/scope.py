"""What a share link may read: exactly the view it was made for and the data that view loads.

A link's scope is derived once, from its target, when it is made: a study (its report, stages and
exports), a result key (a score, evaluation or
ablation result), a checkpoint (an RM's lab page), or a base model (its neuron dashboard, neuron pages and the
panels and live toggles they load). Every request through the link is then checked against the route table
below; a route that is not listed is refused. Live toggles are pinned to the view's worker settings
(`probe_limit`, `hook`), so a link holder can never start a worker the view did not use.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from app.core.db import Checkpoint, Database
from app.core.errors import Invalid
from workers.contract.live import DEFAULT_PROBE_PAIRS
from workers.contract.vocab import HookPoint

RESULT, CHECKPOINT, MODEL, STUDY = "result", "checkpoint", "model", "study"
PINNED_DEFAULTS: dict[str, str] = {"probe_limit": str(DEFAULT_PROBE_PAIRS), "hook": str(HookPoint.down_proj_input)}
"""Live-toggle settings a share link holder cannot change (each value picks a worker process)."""

LIVE_PATHS = re.compile(r"^/(ui/live(/[^/]+|/dial/points)?|api/live/[^/]+/(toggle|estimate|stream))$")
"""Routes that run the model: rate-limited per link."""
POLL_PATHS = re.compile(r"^/ui/live/dial/poll$")
"""A poll may (re)compute estimates, so it keeps the pinned settings too, but is not rate-limited."""

_KEY = r"(?P<key>[A-Za-z0-9_-]{1,64})"
_CK = r"(?P<ck>[A-Za-z0-9_-]{1,64})"
_BM = r"(?P<bm>[^?#]{1,200}?)"

# Views a link can be made for: pattern -> the scope it grants.
_TARGETS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(rf"^/results/{_KEY}$"), RESULT),
    (re.compile(rf"^/ablations/{_KEY}$"), RESULT),
    (re.compile(rf"^/studies/{_KEY}$"), STUDY),
    (re.compile(rf"^/lab/rm/{_CK}$"), CHECKPOINT),
    (re.compile(rf"^/lab/compare/{_BM}$"), MODEL),
    (re.compile(rf"^/models/{_BM}/dashboard$"), MODEL),
    (re.compile(rf"^/models/{_BM}/neurons/\d+/\d+$"), MODEL),
)
SHAREABLE = "a study's report (/studies/KEY), a result (/results/KEY, /ablations/KEY), " \
            "an RM (/lab/rm/CHECKPOINT), a comparison " \
            "(/lab/compare/MODEL) or a model's neuron dashboard or neuron page (/models/MODEL/…)"


@dataclass(frozen=True)
class Scope:
    kind: str
    value: str
    pinned: dict[str, str]

    def as_json(self) -> dict[str, object]:
        return {"kind": self.kind, "value": self.value, "pinned": self.pinned}

    @classmethod
    def of_json(cls, raw: dict[str, object]) -> Scope | None:
        if not raw or "kind" not in raw:
            return None
        pinned = raw.get("pinned") or {}
        return cls(str(raw["kind"]), str(raw["value"]), {str(k): str(v) for k, v in dict(pinned).items()})  # type: ignore[call-overload]


def scope_of(target: str) -> Scope:
    """The scope a link to `target` grants; a target that is not a shareable view is a 422."""
    parts = urlsplit(target)
    path = unquote(parts.path)
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    for pattern, kind in _TARGETS:
        m = pattern.match(path)
        if m:
            value = m.groupdict().get("key") or m.groupdict().get("ck") or m.group("bm")
            pinned = {k: query.get(k) or d for k, d in PINNED_DEFAULTS.items()}
            return Scope(kind, value, pinned)
    raise Invalid(f"target: {path[:200]!r} cannot be shared; share {SHAREABLE}")


def is_shareable(path: str) -> bool:
    """Whether a page at `path` can be shared (its "Share this view" button shows only then)."""
    decoded = unquote(path)
    return any(pattern.match(decoded) for pattern, _ in _TARGETS)


Rule = Callable[[Database, Scope, "re.Match[str]", dict[str, str]], bool]


def _base_model_of(db: Database, checkpoint: str) -> str | None:
    with db.session() as s:
        row = s.get(Checkpoint, checkpoint[:64])
        return row.base_model if row is not None else None


def _result(db: Database, sc: Scope, m: re.Match[str], q: dict[str, str]) -> bool:
    return sc.kind == RESULT and m.group("key") == sc.value


def _study(db: Database, sc: Scope, m: re.Match[str], q: dict[str, str]) -> bool:
    return sc.kind == STUDY and m.group("key") == sc.value


def _model(db: Database, sc: Scope, m: re.Match[str], q: dict[str, str]) -> bool:
    return sc.kind == MODEL and m.group("bm") == sc.value


def _checkpoint(db: Database, sc: Scope, m: re.Match[str], q: dict[str, str]) -> bool:
    ck = m.group("ck")
    if sc.kind == CHECKPOINT:
        return ck == sc.value
    return sc.kind == MODEL and _base_model_of(db, ck) == sc.value


def _panel(field: str) -> Rule:
    """A dashboard or neuron-page panel: its model is the shared one, and so is the RM it targets."""
    def rule(db: Database, sc: Scope, m: re.Match[str], q: dict[str, str]) -> bool:
        if sc.kind != MODEL or q.get(field) != sc.value:
            return False
        ck = q.get("ck")
        return not ck or _base_model_of(db, ck) == sc.value
    return rule


def _live_form(db: Database, sc: Scope, m: re.Match[str], q: dict[str, str]) -> bool:
    ck = q.get("ck", "")
    return sc.kind == MODEL and bool(ck) and _base_model_of(db, ck) == sc.value


def _own_run(db: Database, sc: Scope, m: re.Match[str], q: dict[str, str]) -> bool:
    """Polling a live run: the run itself answers only the channel (this link) that started it."""
    return True


# Routes a link may read: pattern over the decoded path -> who may.
_ROUTES: tuple[tuple[re.Pattern[str], Rule], ...] = (
    (re.compile(rf"^/results/{_KEY}$"), _result),
    (re.compile(rf"^/api/results/{_KEY}(/rewards)?$"), _result),
    (re.compile(rf"^/studies/{_KEY}(/stages|/export\.html|/tables\.zip|/report\.tex)?$"), _study),
    (re.compile(rf"^/api/studies/{_KEY}$"), _study),
    (re.compile(rf"^/ablations/{_KEY}$"), _result),
    (re.compile(rf"^/api/ablations/{_KEY}$"), _result),
    (re.compile(rf"^/api/lab/evaluations/{_KEY}(/flips)?$"), _result),
    (re.compile(rf"^/lab/rm/{_CK}$"), _checkpoint),
    (re.compile(rf"^/api/lab/checkpoints/{_CK}(/history)?$"), _checkpoint),
    (re.compile(rf"^/ui/live/{_CK}$"), _checkpoint),
    (re.compile(rf"^/api/live/{_CK}/(toggle|estimate|stream)$"), _checkpoint),
    (re.compile(r"^/ui/live(/estimate)?$"), _live_form),
    (re.compile(r"^/ui/live/warm$"), _panel("base_model")),
    (re.compile(r"^/ui/live/dial(/points|/poll)?$"), _panel("base_model")),
    (re.compile(r"^/(ui|api)/live/runs/[0-9a-f]{1,64}$"), _own_run),
    (re.compile(rf"^/lab/compare/{_BM}$"), _model),
    (re.compile(rf"^/api/lab/compare/{_BM}$"), _model),
    (re.compile(rf"^/models/{_BM}/dashboard$"), _model),
    (re.compile(rf"^/models/{_BM}/neurons/\d+/\d+$"), _model),
    (re.compile(rf"^/api/neurons/{_BM}/(overlap|scores)$"), _model),
    (re.compile(r"^/ui/ablation/panel$"), _panel("base_model")),
    (re.compile(r"^/ui/ablation/neuron-panel$"), _panel("model")),
)


def refusal(db: Database, scope: Scope | None, target: str, path: str, query: str) -> str | None:
    """None if a link of `scope` may GET `path?query`; otherwise why not (the 403's message)."""
    q = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if scope is None:  # a link made before scopes existed: its target only
        allowed = path == unquote(urlsplit(target).path)
    else:
        allowed = any((m := pattern.match(path)) is not None and rule(db, scope, m, q) for pattern, rule in _ROUTES)
    if not allowed:
        return f"this share link opens {urlsplit(target).path[:200]} and what it loads, not {path[:200]}"
    if scope is not None and (LIVE_PATHS.match(path) or POLL_PATHS.match(path)):
        for name, value in scope.pinned.items():
            sent = q.get(name) or PINNED_DEFAULTS[name]
            if sent != value:
                return f"{name}: a share link toggles with the shared view's settings ({name}={value}), not {sent}"
    return None
