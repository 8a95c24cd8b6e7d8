"""Studies: create (or find, or resume) one, advance it stage by stage, cancel it, describe it.

`advance_all` runs on the job supervisor's thread after each of its ticks: it submits the jobs of each
running study's current stage (cached jobs come back at once), and moves on when they all succeeded. All
state is in the `studies` row (the current stage and a label -> job id map), so an API restart resumes a
study where it stood, and cancelling one cancels the jobs of its current stage.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from app.core.db import CURRENT_ACTOR, Job, Study, utcnow
from app.core.errors import Conflict, Invalid, NotFound
from app.core.services import Services
from app.core.settings import Settings
from app.studies.pipeline import JOB_STAGES, STAGE_TITLES, STAGES, expand_spec, plan_stage, results_of, study_key
from app.studies.schemas import StageOut, StudyCreate, StudyOut

log = logging.getLogger("tension.studies")

ADVANCE_EVERY_S = 1.0
"""How often the supervisor looks at running studies (a stage's jobs take seconds to minutes)."""

_FAILED = ("failed", "cancelled")


def create(services: Services, request: StudyCreate) -> tuple[Study, bool]:
    """The study `request` defines; returns (study, existed). A failed or cancelled one is resumed."""
    spec = expand_spec(request)
    key = study_key(spec)
    with services.db.session() as s:
        existed = s.get(Study, key) is not None
        if not existed:
            s.add(Study(key=key, preset=spec["name"], model=spec["model"], spec=spec, status="running",
                        stage=STAGES[0], jobs={}, stage_times={STAGES[0]: [time.time(), None]}))
    if existed:
        return resume(services, key), True
    advance(services, key)
    return get(services, key), False


def resume(services: Services, key: str) -> Study:
    """Run a failed or cancelled study again: its finished jobs are reused, its failed ones rerun.
    A running or finished study is left as it is."""
    with services.db.session() as s:
        row = s.get(Study, key)
        if row is None:
            raise NotFound(f"no study with key {key!r}")
        if row.status in _FAILED:
            failed = set(s.scalars(select(Job.id).where(Job.id.in_(list(row.jobs.values())),
                                                        Job.status.in_(_FAILED))))
            row.jobs = {label: jid for label, jid in row.jobs.items() if jid not in failed}
            row.stage_times = {**row.stage_times, row.stage: [time.time(), None]}
            row.status, row.error, row.finished_at = "running", None, None
    advance(services, key)
    return get(services, key)


def get(services: Services, key: str) -> Study:
    with services.db.session() as s:
        row = s.get(Study, key)
        if row is None:
            raise NotFound(f"no study with key {key!r}")
        return row


def latest(services: Services) -> Study | None:
    """The study the home page shows: the newest finished one, else the newest."""
    with services.db.session() as s:
        done = s.scalars(select(Study).where(Study.status == "succeeded").order_by(Study.created_at.desc())).first()
        return done or s.scalars(select(Study).order_by(Study.created_at.desc())).first()


def list_studies(services: Services, limit: int = 100) -> list[Study]:
    with services.db.session() as s:
        return list(s.scalars(select(Study).order_by(Study.created_at.desc()).limit(limit)))


def cancel(services: Services, key: str) -> Study:
    """Stop a running study and every unfinished job of its current stage."""
    study = get(services, key)
    if study.status != "running":
        raise Conflict(f"study {key} is already {study.status}")
    with services.db.session() as s:
        row = s.get(Study, key)
        assert row is not None
        row.status, row.finished_at, row.error = "cancelled", utcnow(), "cancelled by user"
        job_ids = list(row.jobs.values())
        active = list(s.scalars(select(Job.id).where(Job.id.in_(job_ids), Job.status.in_(("queued", "running")))))
    for job_id in active:
        with contextlib.suppress(Conflict):  # it finished meanwhile
            services.jobs.cancel(job_id)
    return get(services, key)


def ticker(services: Services) -> Callable[[], None]:
    """`advance_all`, at most every ADVANCE_EVERY_S: the supervisor ticks far more often than stages move."""
    last = [0.0]

    def tick() -> None:
        if time.monotonic() - last[0] >= ADVANCE_EVERY_S:
            last[0] = time.monotonic()
            advance_all(services)

    return tick


def advance_all(services: Services) -> None:
    """One step of every running study (called by the job supervisor)."""
    with services.db.session() as s:
        keys = list(s.scalars(select(Study.key).where(Study.status == "running")))
    for key in keys:
        try:
            advance(services, key)
        except Exception as exc:  # one broken study must not stop the others
            log.exception("study %s could not advance", key)
            _fail(services, key, f"internal error while advancing: {exc}")


def _fail(services: Services, key: str, error: str) -> None:
    with services.db.session() as s:
        row = s.get(Study, key)
        if row is not None and row.status == "running":
            row.status, row.error, row.finished_at = "failed", error[:4000], utcnow()


def _job_rows(services: Services, jobs: dict[str, str]) -> dict[str, Job]:
    """The job rows of a study's label -> job id map, in one query."""
    with services.db.session() as s:
        return {j.id: j for j in s.scalars(select(Job).where(Job.id.in_(list(jobs.values()))))}


def _succeeded_keys(jobs: dict[str, str], rows: dict[str, Job]) -> dict[str, str]:
    """label -> result key of the study's succeeded jobs."""
    return {label: rows[jid].result_key for label, jid in jobs.items()
            if jid in rows and rows[jid].status == "succeeded"}


def advance(services: Services, key: str) -> None:
    """Submit the current stage's missing jobs; move to the next stage once all of them succeeded."""
    study = get(services, key)
    token = CURRENT_ACTOR.set(study.created_by)  # the study's jobs are its creator's
    try:
        while study.status == "running":
            jobs = dict(study.jobs)
            rows = _job_rows(services, jobs)
            results = results_of(study.spec, _succeeded_keys(jobs, rows))
            stage = study.stage
            if stage not in JOB_STAGES:
                _finish_stage(services, key, stage)
                return
            planned = plan_stage(stage, study.spec, results)
            statuses: dict[str, Job] = {}
            for pj in planned:
                job_id = jobs.get(pj.label)
                job = rows.get(job_id) if job_id else None
                if job is None:
                    try:
                        job, _cached = services.jobs.submit(pj.kind, pj.params)
                    except (Invalid, NotFound, Conflict) as exc:
                        _fail(services, key, f"stage {stage}: {pj.label} could not be submitted: {exc}")
                        return
                    jobs[pj.label] = job.id
                statuses[pj.label] = job
            _save_jobs(services, key, jobs)
            bad = [(label, j) for label, j in statuses.items() if j.status in _FAILED]
            if bad:
                label, j = bad[0]
                _fail(services, key, f"stage {stage}: job {label} ({j.id}) {j.status}: {j.error or j.message}")
                return
            if any(j.status != "succeeded" for j in statuses.values()):
                return
            _finish_stage(services, key, stage)
            study = get(services, key)
    finally:
        CURRENT_ACTOR.reset(token)


def _save_jobs(services: Services, key: str, jobs: dict[str, str]) -> None:
    with services.db.session() as s:
        row = s.get(Study, key)
        assert row is not None
        if row.jobs != jobs:
            row.jobs = jobs


def _finish_stage(services: Services, key: str, stage: str) -> None:
    now = time.time()
    with services.db.session() as s:
        row = s.get(Study, key)
        assert row is not None
        times = {k: list(v) for k, v in row.stage_times.items()}
        times.setdefault(stage, [now, None])[1] = now
        nxt = STAGES.index(stage) + 1
        if nxt < len(STAGES) and STAGES[nxt] in JOB_STAGES:
            row.stage = STAGES[nxt]
            times[row.stage] = [now, None]
        else:  # the report is read from the stored results: nothing left to run
            row.stage = STAGES[-1]
            times[row.stage] = [now, now]
            row.status, row.finished_at = "succeeded", utcnow()
        row.stage_times = times


# -- describing ------------------------------------------------------------------------------------------


def describe(services: Services, settings: Settings, study: Study) -> StudyOut:
    """The study with each stage's jobs, progress and wall time."""
    rows = _job_rows(services, dict(study.jobs))
    current = STAGES.index(study.stage) if study.stage in STAGES else len(STAGES)
    stages: list[StageOut] = []
    for i, name in enumerate(STAGES):
        jobs: list[dict[str, Any]] = []
        for label, jid in study.jobs.items():
            if _stage_of(label) != name:
                continue
            j = rows.get(jid)
            jobs.append({"label": label, "job_id": jid, "status": j.status if j else "missing",
                         "progress": j.progress if j else 0.0, "message": j.message if j else "",
                         "kind": j.kind if j else ""})
        if i < current or study.status == "succeeded":
            status = "succeeded"
        elif i == current:
            status = {"running": "running", "failed": "failed", "cancelled": "cancelled"}.get(study.status, "running")
        else:
            status = "waiting"
        progress = 1.0 if status == "succeeded" else (sum(j["progress"] for j in jobs) / len(jobs) if jobs else 0.0)
        t = study.stage_times.get(name)
        wall = None
        if t and t[0] is not None:
            end = t[1] if t[1] is not None else (time.time() if status == "running" else None)
            wall = round(end - t[0], 1) if end is not None else None
        stages.append(StageOut(name=name, title=STAGE_TITLES[name], status=status, progress=progress, jobs=jobs,
                               wall_s=wall))
    first = min((t[0] for t in study.stage_times.values() if t and t[0] is not None), default=None)
    last = max((t[1] for t in study.stage_times.values() if t and t[1] is not None), default=None)
    end = last if study.status != "running" else time.time()
    return StudyOut(key=study.key, preset=study.preset, model=study.model, seeds=list(study.spec["seeds"]),
                    status=study.status, stage=study.stage, error=study.error, spec=study.spec, stages=stages,
                    results=results_of(study.spec, _succeeded_keys(dict(study.jobs), rows)),
                    created_by=study.created_by, created_at=study.created_at,
                    finished_at=study.finished_at, wall_s=round(end - first, 1) if first and end else None,
                    url=f"{settings.public_url}/studies/{study.key}")


def _stage_of(label: str) -> str:
    head = label.split("/", 1)[0]
    return {"train": "train", "evaluate": "evaluate", "capture": "capture"}.get(head, "experiments")
