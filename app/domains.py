"""Wire each domain's job hooks into the job service (validation at submission, rows on success)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.jobs.service import KindHandlers
from workers.contract.vocab import JobKind

if TYPE_CHECKING:
    from app.core.services import Services


def register_job_kinds(services: Services) -> None:
    from app.ablation import service as ablation
    from app.evaluation import service as evaluation
    from app.neurons import service as neurons
    from app.scoring import service as scoring
    from app.studies import service as studies
    from app.training import service as training

    services.jobs.register(JobKind.score, KindHandlers(prepare=lambda p: scoring.prepare_score(services, p)))
    services.jobs.register(JobKind.train, KindHandlers(
        prepare=lambda p: training.prepare_train(services, p),
        on_success=lambda job, m: training.record_checkpoint(services, job, m)))
    services.jobs.register(JobKind.evaluate, KindHandlers(
        prepare=lambda p: evaluation.prepare_evaluate(services, p)))
    services.jobs.register(JobKind.capture, KindHandlers(prepare=lambda p: neurons.prepare_capture(services, p)))
    services.jobs.register(JobKind.ablate, KindHandlers(prepare=lambda p: ablation.prepare_ablate(services, p)))
    services.jobs.after_tick.append(studies.ticker(services))
