"""Issue 20, item 6: a generation has a total deadline below its hold's lifetime; a hold the sweeper
expired under a stalled call is still charged for delivered text; without a broker each process sweeps."""

from __future__ import annotations

import time
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import orjson
import pytest
from django.core.management import call_command
from django.db import transaction
from django.utils import timezone

from apps.billing import services as billing
from apps.billing.models import Charge, Hold, LedgerEntry, Wallet
from apps.generation.models import Generation
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

SLOW = Reply(chunks=["慢"] * 40, chunk_delay=0.1)  # four seconds of text


@pytest.fixture(autouse=True)
def funds(user):
    billing.wallet_grant(user=user, amount=100_000)


def test_a_stream_ends_at_its_deadline_and_pays_for_what_was_delivered(
    http, fake_upstream, make_model, writing_prompt, settings
):
    settings.GENERATION_MAX_SECONDS = 1
    make_model()
    fake_upstream.script(SLOW)
    body = {"promptId": writing_prompt.pk, "userInput": "写", "maxTokens": 100}

    started = time.monotonic()
    response = http.post("/api/v1/generation/writing/stream", json=body)
    elapsed = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert elapsed < 3
    final = orjson.loads(sse_events(response.text)[-2])
    record = Generation.objects.get()
    assert final["finishReason"] == "length" and 0 < len(record.content) < 40
    assert (record.status, record.output_chars) == ("succeeded", len(record.content))
    assert Charge.objects.get().output_chars == len(record.content) and Hold.objects.get().status == "settled"
    deadline = time.monotonic() + 3
    while not fake_upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_upstream.disconnects  # the upstream request was cancelled


def test_a_json_call_without_an_answer_by_its_deadline_is_a_504_and_free(
    http, fake_upstream, make_model, writing_prompt, settings
):
    settings.GENERATION_MAX_SECONDS = 1
    make_model()
    fake_upstream.script(Reply(latency=4))

    started = time.monotonic()
    response = http.post("/api/v1/generation/writing", json={"promptId": writing_prompt.pk, "maxTokens": 100})

    assert response.status_code == 504 and time.monotonic() - started < 3
    assert Generation.objects.get().status == "failed" and not Charge.objects.exists()
    assert Hold.objects.get().status == "released"


def test_a_hold_expired_under_a_stalled_call_is_still_charged(user):
    paid = billing.Pricing("m", Decimal(1), Decimal(1), False, 4096)
    with transaction.atomic():
        billing.hold_place(user=user, generation_id="g1", pricing=paid, input_chars=0, max_tokens=1000)
    later = timezone.now() + timedelta(seconds=3600)
    assert billing.holds_expire(now=later) == ["g1"]

    consumption = billing.charge_settle(generation_id="g1", pricing=paid, input_chars=0, output_chars=2500)

    assert consumption == billing.Consumption(2500, 0, 2500, 2000, 500, False)  # free quota first
    assert Wallet.objects.get(pk=user.pk).paid_balance == 100_000 - 500
    assert LedgerEntry.objects.filter(kind="charge").get().amount == -500
    # settling again changes nothing
    assert billing.charge_settle(generation_id="g1", pricing=paid, input_chars=0, output_chars=2500) == consumption
    assert Charge.objects.count() == 1
    out = StringIO()
    call_command("billing_audit", stdout=out)
    assert "OK: no mismatches" in out.getvalue()


def test_without_a_broker_the_process_sweeps_expired_holds(user, settings):
    from writing_service.sweeper import start_in_process_sweeper

    paid = billing.Pricing("m", Decimal(1), Decimal(1), False, 4096)
    with transaction.atomic():
        billing.hold_place(user=user, generation_id="g2", pricing=paid, input_chars=0, max_tokens=10)
    Hold.objects.filter(generation_id="g2").update(expires_at=timezone.now() - timedelta(seconds=1))
    settings.BILLING_SWEEP_IN_PROCESS = True
    try:
        thread = start_in_process_sweeper(interval=0.05)
        assert thread is not None and thread.daemon
        deadline = time.monotonic() + 5
        while Hold.objects.get(generation_id="g2").status == "active" and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        settings.BILLING_SWEEP_IN_PROCESS = False
    assert Hold.objects.get(generation_id="g2").status == "expired"
    assert Wallet.objects.get(pk=user.pk).paid_held == 0


def test_the_deadline_must_be_below_the_hold_lifetime(settings):
    from django.core.management import call_command as run
    from django.core.management.base import SystemCheckError

    settings.GENERATION_MAX_SECONDS = settings.BILLING_HOLD_TTL_SECONDS
    with pytest.raises(SystemCheckError, match=r"generation\.E001"):
        run("check")
