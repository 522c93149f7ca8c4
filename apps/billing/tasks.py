"""Periodic billing tasks (scheduled by `CELERY_BEAT_SCHEDULE`). Thin wrappers over services; safe to
run twice or concurrently (every release re-checks the hold's status under its row lock)."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from celery import shared_task
from django.utils import timezone

from apps.billing import services
from apps.billing.models import Hold

SWEEP_BATCH = 500
SWEEP_SECONDS = 40.0  # stay well inside the 60 s schedule
CATCH_UP_WINDOW = timedelta(days=1)
HOLD_EXPIRED = "hold_expired"


def generations_mark_expired(*, since: datetime | None = None) -> int:
    """Pending generation records whose hold expired (within `CATCH_UP_WINDOW`, so a sweep that crashed
    between releasing and marking is caught up by the next one) become `failed` / `hold_expired`."""
    from apps.generation.models import Generation

    since = since or timezone.now() - CATCH_UP_WINDOW
    expired = Hold.objects.filter(status=Hold.Status.EXPIRED, closed_at__gte=since).values("generation_id")
    return Generation.objects.filter(public_id__in=expired, status=Generation.Status.PENDING).update(
        status=Generation.Status.FAILED,
        error_code=HOLD_EXPIRED,
        error_message="The generation did not finish before its hold expired; nothing was charged.",
        finished_at=timezone.now(),
    )


@shared_task(name="apps.billing.tasks.expire_holds", soft_time_limit=50, time_limit=58, ignore_result=True)
def expire_holds() -> dict[str, int]:
    """Release holds past their expiry (a crashed process left them) and fail their generations."""
    started = time.monotonic()
    released: list[str] = []
    while time.monotonic() - started < SWEEP_SECONDS:
        batch = services.holds_expire(limit=SWEEP_BATCH)
        released += batch
        if len(batch) < SWEEP_BATCH:
            break
    failed = generations_mark_expired()
    return {"released": len(released), "generationsFailed": failed}
