"""A writing call on PostgreSQL without leaving the event loop (`GenerationView._open`, `Relay._finish`,
`apps.core.db_async`): the cache entries read on the loop's Redis connection, the rate limits counted by
one script call there, the hold and the settlement as one statement each on the loop's database
connection — and, wherever a round trip would be needed that the loop cannot make (an entry not
cached yet, a first use of the wallet), the whole step redone on a database thread with nothing done
twice."""

from __future__ import annotations

import time
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from apps.billing.models import Charge, Hold, Wallet
from apps.billing.selectors import billing_day
from apps.billing.services import wallet_grant
from apps.billing.statements import rows_create
from apps.core import db_async
from apps.generation.models import Generation
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture
def thread_steps(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the database-thread steps the generation endpoints ran, in order."""
    import apps.generation.api as api
    import apps.generation.relay as relay

    steps: list[str] = []

    def counting(original: Any) -> Any:
        def wrap(fn: Any) -> Any:
            steps.append(getattr(fn, "__name__", repr(fn)))
            return original(fn)

        return wrap

    monkeypatch.setattr(api, "db_sync_to_async", counting(api.db_sync_to_async))
    monkeypatch.setattr(relay, "db_sync_to_async", counting(relay.db_sync_to_async))
    return steps


def write(http: Any, writing_prompt: Any, **extra: Any) -> Any:
    body = {"promptId": writing_prompt.pk, "modelId": "gpt-4-turbo", "maxTokens": 64, **extra}
    return http.post("/api/v1/generation/writing", json=body)


def test_a_warm_call_holds_and_settles_on_the_loop(http, fake_upstream, make_model, writing_prompt, user, thread_steps):
    assert db_async.enabled()
    wallet_grant(user=user, amount=100_000)
    make_model()
    fake_upstream.script(Reply(chunks=["first"]))
    assert write(http, writing_prompt).status_code == 200  # fills the token's, permissions' and prompt's entries
    thread_steps.clear()

    fake_upstream.script(Reply(chunks=["一二三四五"]))
    response = write(http, writing_prompt)
    assert response.status_code == 200, response.text
    assert thread_steps == []  # nothing ran on a database thread

    body = response.json()
    record = Generation.objects.get(public_id=body["generationId"])
    charge = Charge.objects.get(generation_id=record.public_id)
    assert record.status == Generation.Status.SUCCEEDED and record.content == "一二三四五"
    assert record.total_cost == charge.total_cost == body["consumption"]["totalCost"] > 0
    assert Hold.objects.get(generation_id=record.public_id).status == Hold.Status.SETTLED
    # what the two calls cost came from the free quota, then the balance: nothing is held any more
    wallet = Wallet.objects.get(user=user)
    assert wallet.paid_held == 0


def test_a_warm_call_builds_no_cache_backend_or_database_wrapper(
    http, fake_upstream, make_model, writing_prompt, user, monkeypatch
):
    # Django's `caches` and `connections` keep one object per asyncio task: a warm call on the loop must
    # neither build a cache backend per request nor a database wrapper (the loop path needs neither)
    from django.core.cache import caches
    from django.db import connections

    wallet_grant(user=user, amount=100_000)
    make_model()
    fake_upstream.script(Reply(chunks=["first"]))
    assert write(http, writing_prompt).status_code == 200  # warm: cache entries, loop backend, plans
    built: list[str] = []

    def counting(handler: Any, what: str) -> None:
        original = handler.create_connection

        def create_connection(alias: str) -> Any:
            built.append(f"{what}:{alias}")
            return original(alias)

        monkeypatch.setattr(handler, "create_connection", create_connection)

    counting(caches, "cache")
    counting(connections, "database")
    fake_upstream.script(Reply(chunks=["second"]))
    assert write(http, writing_prompt).status_code == 200
    assert built == []


def test_a_stream_settles_on_the_loop(http, fake_upstream, make_model, writing_prompt, user, thread_steps):
    wallet_grant(user=user, amount=100_000)
    make_model()
    fake_upstream.script(Reply(chunks=["warm"]))
    write(http, writing_prompt)
    thread_steps.clear()

    fake_upstream.script(Reply(chunks=["a", "b", "c"]))
    response = http.post(
        "/api/v1/generation/writing/stream",
        json={"promptId": writing_prompt.pk, "modelId": "gpt-4-turbo", "maxTokens": 64},
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1] == "[DONE]" and '"consumption"' in events[-2]
    assert thread_steps == []
    record = Generation.objects.get(public_id=response.headers["X-Generation-ID"])
    assert record.status == Generation.Status.SUCCEEDED and record.content == "abc"
    assert Charge.objects.filter(generation_id=record.public_id).exists()


def test_a_cold_call_is_redone_on_a_thread_and_a_first_use_creates_the_rows(
    http, fake_upstream, make_model, writing_prompt, user, thread_steps
):
    """Nothing cached yet (the token's entry is read from the database) and no wallet row: the open step
    runs on a thread, exactly once; the call is still charged once."""
    make_model()
    assert not Wallet.objects.filter(user=user).exists()
    fake_upstream.script(Reply(chunks=["hello"]))
    response = write(http, writing_prompt)
    assert response.status_code == 200, response.text
    assert thread_steps.count("_checked_open") == 1
    assert Charge.objects.filter(user=user).count() == 1
    assert Hold.objects.filter(user=user).count() == 1
    assert Generation.objects.filter(user=user).count() == 1


def test_a_first_use_of_the_wallet_on_a_warm_cache_places_its_hold_on_a_thread(
    http, fake_upstream, make_model, writing_prompt, user, thread_steps
):
    """The hold statement finds no wallet or day row (nothing written): the plan's `run` creates them."""
    make_model()
    fake_upstream.script(Reply(chunks=["warm"]))
    write(http, writing_prompt)
    Charge.objects.all().delete()
    Hold.objects.all().delete()
    Wallet.objects.all().delete()
    from apps.billing.models import DailyUsage

    DailyUsage.objects.all().delete()
    thread_steps.clear()

    fake_upstream.script(Reply(chunks=["again"]))
    response = write(http, writing_prompt)
    assert response.status_code == 200, response.text
    assert thread_steps == ["run"]
    assert Hold.objects.get(user=user).status == Hold.Status.SETTLED


def test_a_402_from_the_loop_writes_nothing(
    http, fake_upstream, make_model, writing_prompt, user, settings, thread_steps
):
    settings.BILLING_DAILY_FREE_QUOTA = 0  # and no balance: not even one output character is paid for
    make_model()
    rows_create(user.pk, billing_day(timezone.now()))
    assert write(http, writing_prompt).status_code == 402  # cold: on a thread
    thread_steps.clear()
    response = write(http, writing_prompt)  # warm: on the loop
    assert response.status_code == 402 and response.json()["required"] == 1
    assert thread_steps == []
    assert not Hold.objects.exists() and not Generation.objects.exists()


def test_rate_limits_are_counted_once_per_call_on_the_loop_and_after_a_redo(
    http, fake_upstream, make_model, writing_prompt, user, settings, thread_steps
):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "generation": "3/min"},
    }
    wallet_grant(user=user, amount=100_000)
    make_model()
    codes = []
    for _ in range(4):
        fake_upstream.script(Reply(chunks=["x"]))
        codes.append(write(http, writing_prompt).status_code)
    assert codes == [200, 200, 200, 429]  # the first call (cold, redone on a thread) counted once
    assert thread_steps.count("_checked_open") == 1


def test_a_broken_hot_path_connection_is_replaced(http, fake_upstream, make_model, writing_prompt, user):
    wallet_grant(user=user, amount=100_000)
    make_model()
    fake_upstream.script(Reply(chunks=["warm"]))
    assert write(http, writing_prompt).status_code == 200
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:  # calls at once: the loop opens several connections
        for _ in range(8):
            fake_upstream.script(Reply(chunks=["x"], latency=0.05))
        assert {r.status_code for r in pool.map(lambda _: write(http, writing_prompt), range(8))} == {200}
    with connection.cursor() as cursor:  # the server closes the loop's idle connections (a restart, a failover)
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE application_name = %s AND datname = current_database()",
            [db_async.APPLICATION_NAME],
        )
        assert len(cursor.fetchall()) >= 2, "the hot path's connections show under their application name"
    fake_upstream.script(Reply(chunks=["after"]))
    response = write(http, writing_prompt)
    assert response.status_code == 200, response.text
    assert Charge.objects.filter(user=user).count() == 10


def test_a_hold_expired_under_a_running_call_is_settled_on_a_thread(
    http, fake_upstream, make_model, writing_prompt, user, thread_steps
):
    """The settlement statement finds the hold no longer active (the sweeper expired it while the
    upstream was slow): nothing is written on the loop, `finish` on a thread charges the delivered text."""
    from concurrent.futures import ThreadPoolExecutor
    from datetime import timedelta

    from apps.billing.services import holds_expire

    wallet_grant(user=user, amount=100_000)
    make_model()
    fake_upstream.script(Reply(chunks=["warm"]))
    write(http, writing_prompt)
    thread_steps.clear()

    fake_upstream.script(Reply(chunks=["late text"], latency=0.6))
    with ThreadPoolExecutor(1) as pool:
        call = pool.submit(write, http, writing_prompt)
        for _ in range(100):  # until the call's hold is placed
            if Hold.objects.filter(status=Hold.Status.ACTIVE).exists():
                break
            time.sleep(0.01)
        assert holds_expire(now=timezone.now() + timedelta(days=1))
        response = call.result(10)
    assert response.status_code == 200, response.text
    assert thread_steps == ["finish"]
    record = Generation.objects.get(public_id=response.json()["generationId"])
    charge = Charge.objects.get(generation_id=record.public_id)
    assert record.total_cost == charge.total_cost > 0
    assert Hold.objects.get(generation_id=record.public_id).status == Hold.Status.EXPIRED
