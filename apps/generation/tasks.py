"""Periodic generation tasks (scheduled by `CELERY_BEAT_SCHEDULE`). Thin wrappers over services; safe to
run twice or concurrently (every release re-checks the hold's status under its row lock)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from celery import shared_task
from django.utils import timezone

from apps.billing import selectors as billing_selectors
from apps.billing import services as billing
from apps.generation.models import Generation

SWEEP_BATCH = 500
SWEEP_SECONDS = 40.0  # stay well inside the 60 s schedule
CATCH_UP_WINDOW = timedelta(days=1)
HOLD_EXPIRED = "hold_expired"


def _generations_fail_expired(*, since: datetime | None = None) -> int:
    """Pending generation records whose hold expired (within `CATCH_UP_WINDOW`, so a sweep that crashed
    between releasing and marking is caught up by the next one) become `failed` / `hold_expired`."""
    since = since or timezone.now() - CATCH_UP_WINDOW
    expired = billing_selectors.holds_expired_since(since=since)
    return Generation.objects.filter(public_id__in=expired, status=Generation.Status.PENDING).update(
        status=Generation.Status.FAILED,
        error_code=HOLD_EXPIRED,
        error_message="The generation did not finish before its hold expired; nothing was charged.",
        finished_at=timezone.now(),
    )


@shared_task(name="apps.generation.tasks.generations_expire", soft_time_limit=50, time_limit=58, ignore_result=True)
def generations_expire() -> dict[str, int]:
    """Release holds past their expiry (a crashed process left them) and fail their generations."""
    started = time.monotonic()
    released: list[str] = []
    while time.monotonic() - started < SWEEP_SECONDS:
        batch = billing.holds_expire(limit=SWEEP_BATCH)
        released += batch
        if len(batch) < SWEEP_BATCH:
            break
    failed = _generations_fail_expired()
    return {"released": len(released), "generationsFailed": failed}


@shared_task(
    name="apps.generation.tasks.generation_job_run",
    acks_late=True,  # a worker killed mid-job leaves the message unacknowledged (docs/jobs.md)
    ignore_result=True,
    time_limit=None,
    soft_time_limit=None,  # a generation ends by its own deadline (GENERATION_MAX_SECONDS)
)
def generation_job_run(job_id: str) -> str | None:
    """Run a resumable generation on this worker's job loop and wait for its end (the thread pool's
    thread waits; the generation itself is a coroutine among the others on the loop)."""
    from apps.generation.jobs.runner import runner

    return runner().submit(job_id).result()


@shared_task(name="apps.generation.tasks.generation_jobs_reap", soft_time_limit=50, time_limit=58, ignore_result=True)
def generation_jobs_reap() -> dict[str, int]:
    """Recover the jobs whose worker stopped beating: charge what they delivered, or queue them again."""
    from apps.generation.jobs.services import jobs_reap

    return jobs_reap()
