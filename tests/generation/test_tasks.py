"""The expiry sweep: holds past their expiry are released (billing) and their pending generation
records fail with `hold_expired` (generation), once."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from django.db import transaction

from apps.billing import services as billing
from apps.billing.models import Hold, Wallet
from apps.generation import tasks
from apps.generation.models import Generation

pytestmark = pytest.mark.django_db

PAID = billing.Pricing("m", Decimal(1), Decimal(1), False, 4096)


def place(user, gid, *, max_tokens):
    with transaction.atomic():
        billing.hold_place(user=user, generation_id=gid, pricing=PAID, input_chars=0, max_tokens=max_tokens)


def test_expire_task_fails_pending_generations_once(user):
    record = Generation.objects.create(user=user, model_requested="m")
    done = Generation.objects.create(user=user, model_requested="m", status=Generation.Status.SUCCEEDED)
    billing.wallet_grant(user=user, amount=10_000)
    place(user, record.public_id, max_tokens=1000)
    place(user, done.public_id, max_tokens=10)
    Hold.objects.update(expires_at=datetime(2020, 1, 1, tzinfo=UTC))

    assert tasks.generations_expire.apply().get() == {"released": 2, "generationsFailed": 1}

    record.refresh_from_db()
    assert (record.status, record.error_code) == ("failed", "hold_expired")
    assert Generation.objects.get(pk=done.pk).status == "succeeded"
    assert Wallet.objects.filter(pk=user.pk).values_list("paid_balance", "paid_held").first() == (10_000, 0)
    assert tasks.generations_expire() == {"released": 0, "generationsFailed": 0}


def test_the_beat_schedule_names_the_tasks_and_routes_them_to_their_queues():
    from django.conf import settings

    from writing_service.celery import app

    expire, reap = settings.CELERY_BEAT_SCHEDULE.values()
    assert expire["task"] == tasks.generations_expire.name == "apps.generation.tasks.generations_expire"
    assert reap["task"] == tasks.generation_jobs_reap.name == "apps.generation.tasks.generation_jobs_reap"
    app.loader.import_default_modules()
    assert expire["task"] in app.tasks and reap["task"] in app.tasks
    router = app.amqp.router
    assert router.route({}, tasks.generation_job_run.name)["queue"].name == "generation"
    for task in (expire["task"], reap["task"]):
        assert router.route({}, task)["queue"].name == "housekeeping"
