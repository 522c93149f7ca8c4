"""Billing under real concurrency (PostgreSQL row locks; skipped on SQLite).

1. 200 concurrent generations against one wallet with limited funds, through the services from 200
   threads (each with its own database connection): successes, settlements that exceed their hold,
   upstream failures (release), client disconnects (settlement racing a release), duplicated
   settlements, crashed processes (holds left behind, swept afterwards) and operator grants/adjustments
   in the middle ⇒ some refused with 402, none overdraws, no double charge, Σ ledger = balance, audit clean.
2. One redemption code redeemed by 20 users at once ⇒ exactly one success.
3. A 60-request burst through the live uvicorn server (stream and JSON, a model whose upstream is down,
   scripted upstream 500s, clients that hang up mid-stream) ⇒ the same guarantees end to end.

Threads borrow connections from the psycopg pool (`DATABASE_POOL_MAX_SIZE`, 16 by default), so that
many transactions contend for the wallet row at any moment; no thread waits for another while it holds
a connection (that would starve the pool).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from decimal import Decimal
from io import StringIO
from typing import Any

import httpx
import orjson
import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.db.models import Count, Sum

from apps.billing import selectors, services
from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Membership, Wallet
from apps.core.errors import ApplicationError
from apps.generation.models import Generation
from tests.fakes.upstream import Reply
from tests.generation.conftest import make_model, token, writing_prompt  # noqa: F401 (fixtures used below)

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _fresh_plan_quotas():
    """Services may cache plan quotas per process; exact numbers here assume none is cached."""
    forget = getattr(selectors, "plans_forget", None)
    if forget is not None:
        forget()
    yield
    if forget is not None:
        forget()


PAID = services.Pricing("m", Decimal(1), Decimal(1), False, 4096)
GENERATIONS = 200
FUNDS = 200_000  # + 2 000 daily free


def run_threads(target: Any, count: int) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)


def closing(fn: Any) -> Any:
    """Each thread has its own connection; give it back at the end of the thread."""

    def run(*args: Any) -> Any:
        try:
            return fn(*args)
        finally:
            connection.close()

    return run


def assert_books_balanced(user: Any) -> dict[str, int]:
    wallet = Wallet.objects.get(pk=user.pk)
    ledger = LedgerEntry.objects.filter(user=user)
    assert wallet.paid_balance >= 0 and wallet.paid_held == 0
    assert not ledger.filter(balance_after__lt=0).exists()
    assert ledger.aggregate(total=Sum("amount"))["total"] == wallet.paid_balance
    # at most one charge entry per generation, and it matches the charge record
    per_generation = ledger.filter(kind="charge").values("generation_id").annotate(n=Count("id"))
    assert all(row["n"] == 1 for row in per_generation)
    paid = Charge.objects.filter(user=user).aggregate(paid=Sum("used_paid"), free=Sum("used_daily_free"))
    assert -(ledger.filter(kind="charge").aggregate(total=Sum("amount"))["total"] or 0) == (paid["paid"] or 0)
    usage = DailyUsage.objects.filter(user=user).aggregate(used=Sum("used"), held=Sum("held"))
    assert usage["held"] in (0, None) and (usage["used"] or 0) == (paid["free"] or 0)
    assert not Hold.objects.filter(status=Hold.Status.ACTIVE).exists()
    out = StringIO()
    call_command("billing_audit", stdout=out)  # raises CommandError on any mismatch
    assert "OK: no mismatches" in out.getvalue()
    return {"balance": wallet.paid_balance, "paid": paid["paid"] or 0, "free": paid["free"] or 0}


# --- 1. services from 200 threads -------------------------------------------------------------


def test_200_concurrent_generations_on_one_wallet(user):
    services.wallet_grant(user=user, amount=FUNDS)
    barrier = threading.Barrier(GENERATIONS + 10, timeout=30)
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def note(outcome: str) -> None:
        with lock:
            outcomes[outcome] += 1

    # A generation's companion (a sweeper racing its settlement, or a duplicated settlement) runs in its
    # own thread, started up front: no thread ever waits for another while holding a pooled connection.
    go = [threading.Event() for _ in range(GENERATIONS)]
    placed = [False] * GENERATIONS

    def spec(i: int) -> tuple[str, int, int]:
        max_tokens = 100 + (i * 37) % 500  # holds of 400 … 2 396 characters
        input_chars = 10_500 if i % 7 == 0 else 800  # every 7th prompt is above the free threshold
        return f"gen_c{i:03d}", max_tokens, input_chars

    @closing
    def companion(i: int) -> None:
        go[i].wait(60)
        if not placed[i]:
            return
        gid, max_tokens, input_chars = spec(i)
        if i % 5 == 1:  # the sweeper (or a second finish) releasing while the disconnect is settled
            services.hold_release(generation_id=gid)
        else:  # a retried finish: the same settlement twice at the same time
            services.charge_settle(
                generation_id=gid, pricing=PAID, input_chars=input_chars, output_chars=max_tokens * 3
            )

    @closing
    def generation(i: int) -> None:
        gid, max_tokens, input_chars = spec(i)
        barrier.wait()
        try:
            with transaction.atomic():
                services.hold_place(
                    user=user, generation_id=gid, pricing=PAID, input_chars=input_chars, max_tokens=max_tokens
                )
        except ApplicationError as exc:
            go[i].set()  # its companion has nothing to do
            assert exc.status_code == 402
            note("refused")
            return
        placed[i] = True
        time.sleep((i % 5) / 1000)
        go[i].set()
        kind = i % 5
        if kind == 0:  # upstream failure: released, never charged
            assert services.hold_release(generation_id=gid)
            note("failed")
        elif kind == 1:  # client disconnect: partial output settled (or released by its racer)
            services.charge_settle(generation_id=gid, pricing=PAID, input_chars=input_chars, output_chars=max_tokens)
            note("disconnected")
        elif kind == 2:  # success, settled twice concurrently (see `companion`)
            services.charge_settle(
                generation_id=gid, pricing=PAID, input_chars=input_chars, output_chars=max_tokens * 3
            )
            note("charged")
        elif kind == 3:  # the process crashed: the hold stays until the sweeper expires it
            note("crashed")
        else:  # success whose output exceeds the per-token bound: capped at the hold
            services.charge_settle(
                generation_id=gid, pricing=PAID, input_chars=input_chars, output_chars=max_tokens * 4 + 500
            )
            note("charged")

    @closing
    def operator(i: int) -> None:
        barrier.wait()
        try:
            if i % 2:
                services.wallet_grant(user=user, amount=1000, note=f"op {i}")
                note("granted")
            else:
                services.wallet_adjust(user=user, amount=-700, note=f"op {i}")
                note("adjusted")
        except ApplicationError:
            note("adjust refused")

    started = time.monotonic()
    threads = [threading.Thread(target=generation, args=(i,)) for i in range(GENERATIONS)]
    threads += [threading.Thread(target=operator, args=(i,)) for i in range(10)]
    threads += [threading.Thread(target=companion, args=(i,)) for i in range(GENERATIONS) if i % 5 in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not any(thread.is_alive() for thread in threads)
    elapsed = time.monotonic() - started

    # the crashed ones are swept once their holds expire
    later = services.timezone.now() + services.timedelta(seconds=services.settings.BILLING_HOLD_TTL_SECONDS + 1)
    swept = services.holds_expire(now=later)
    assert len(swept) == outcomes["crashed"]

    figures = assert_books_balanced(user)
    statuses = Counter(Hold.objects.values_list("status", flat=True))
    assert sum(statuses.values()) == GENERATIONS - outcomes["refused"]
    assert statuses["expired"] == outcomes["crashed"]
    assert Charge.objects.count() == statuses["settled"]
    assert outcomes["refused"] > 0 and outcomes["charged"] > 0 and outcomes["crashed"] > 0
    assert figures["free"] <= 2000
    grants = 1000 * outcomes["granted"]
    adjusts = -700 * outcomes["adjusted"]
    assert figures["balance"] == FUNDS + grants + adjusts - figures["paid"]
    print(
        f"\n[billing concurrency] {GENERATIONS} generations in {elapsed:.2f}s: {dict(outcomes)}; "
        f"holds {dict(statuses)}; charged {figures['paid']} paid + {figures['free']} free; "
        f"balance {FUNDS} + {grants} {adjusts:+d} → {figures['balance']}"
    )


# --- 2. one code, 20 users --------------------------------------------------------------------


def test_concurrent_redemption_of_one_code_has_one_winner(make_user):
    users = [make_user(f"r{i}") for i in range(20)]
    (code,) = services.codes_create(count=1, amount=500, member_days=3)
    barrier = threading.Barrier(len(users), timeout=30)
    results: list[str] = []

    @closing
    def redeem(i: int) -> None:
        barrier.wait()
        try:
            services.code_redeem(user=users[i], code=code.code)
            results.append("ok")
        except ApplicationError as exc:
            results.append(exc.code)

    run_threads(redeem, len(users))
    assert results.count("ok") == 1
    assert Counter(results)["code_used"] == len(users) - 1
    assert LedgerEntry.objects.filter(kind="redeem").count() == 1
    assert Membership.objects.count() == 1
    winner = LedgerEntry.objects.get().user
    assert Wallet.objects.get(pk=winner.pk).paid_balance == 500


# --- 3. end to end through uvicorn ------------------------------------------------------------


BURST = 60
FUNDS_E2E = 18_000


@pytest.fixture(scope="module")
def _own_fake_upstream() -> Any:
    """A fake upstream of this module's own: the live server keeps pooled keep-alive connections to it,
    which must not disturb other modules' connection accounting."""
    from tests.fakes.upstream import FakeUpstream

    server = FakeUpstream().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def fake_upstream(_own_fake_upstream: Any) -> Any:
    _own_fake_upstream.reset()
    try:
        yield _own_fake_upstream
    finally:
        _own_fake_upstream.reset()


def test_burst_through_the_live_server(
    live_server_url,
    token,  # noqa: F811
    user,
    fake_upstream,
    make_model,  # noqa: F811
    writing_prompt,  # noqa: F811
    settings,
):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "user": "0",
            "generation": "0",
        },
    }
    # Connection health is not under test here (tests/generation/test_connection_health_e2e.py): with it on,
    # the down model's circuit would open after 5 failures and turn its later 502s into 503s.
    settings.CIRCUIT_FAILURE_THRESHOLD = 0
    make_model("gpt-4-turbo", max_concurrency=0)
    make_model("broken", max_concurrency=0, base_url="http://127.0.0.1:9", connection_name="down")
    text = "一二三四五六七八九十" * 3
    # slow enough that the first ~20 holds are still in place when the last request arrives
    fake_upstream.default = Reply(chunks=[text] * 10, chunk_delay=0.05, latency=0.2)
    fake_upstream.script(*[Reply.error(500)] * 8)  # the first calls fail (retried once, then 502)
    services.wallet_grant(user=user, amount=FUNDS_E2E)  # + 2 000 free: room for 20 holds of 1 000

    async def one(client: httpx.AsyncClient, i: int) -> str:
        await asyncio.sleep(i * 0.005)  # arrive in order, so every kind of request gets some of the holds
        body = {
            "promptId": writing_prompt.pk,
            "userInput": f"第{i}段",
            "maxTokens": 250,  # hold 1 000
            "modelId": "broken" if i % 4 == 0 else "gpt-4-turbo",
        }
        if i % 4 == 3:
            response = await client.post("/api/v1/generation/writing", json=body)
            return str(response.status_code)
        async with client.stream("POST", "/api/v1/generation/writing/stream", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return str(response.status_code)
            async for line in response.aiter_lines():
                if i % 4 == 1 and line.startswith('data: {"content":"一'):
                    return "hung up"  # leaving the block closes the connection mid-stream
                if '"error"' in line:
                    return "stream error"
            return "200"

    async def burst() -> Counter[str]:
        limits = httpx.Limits(max_connections=BURST + 10)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=live_server_url, headers=headers, timeout=30, limits=limits) as client:
            return Counter(await asyncio.gather(*(one(client, i) for i in range(BURST))))

    started = time.monotonic()
    results = asyncio.run(burst())
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 20
    while Generation.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.05)

    records = Counter(Generation.objects.values_list("status", flat=True))
    assert records["pending"] == 0
    assert sum(results.values()) == BURST
    assert set(results) <= {"200", "402", "502", "hung up", "stream error"}, results
    assert results["402"] > 0 and results["200"] > 0 and results["502"] > 0 and results["hung up"] > 0
    # a refused request leaves no record; every other one is finished and billed at most once
    assert sum(records.values()) == BURST - results["402"]
    figures = assert_books_balanced(user)
    charged = Charge.objects.filter(total_cost__gt=0).count()
    assert not Charge.objects.filter(
        generation_id__in=Generation.objects.filter(status="failed").values("public_id"), total_cost__gt=0
    ).exists()
    print(
        f"\n[billing e2e burst] {BURST} requests in {elapsed:.2f}s: {dict(results)}; records {dict(records)}; "
        f"{charged} charged: {figures['paid']} paid + {figures['free']} free; "
        f"balance {FUNDS_E2E} → {figures['balance']}"
    )


# --- 4. metered generations end to end ---------------------------------------------------------


METERED = 200
FUNDS_METERED = 40_000  # + 2 000 free: less than a third of what 200 replies of 600 characters cost


def test_200_metered_generations_on_one_wallet(
    live_server_url,
    token,  # noqa: F811
    user,
    fake_upstream,
    make_model,  # noqa: F811
    writing_prompt,  # noqa: F811
    settings,
):
    """Streams and JSON answers, half of them through the OpenAI-compatible API, some cut where the balance
    ends (extending their holds while others hold too), upstream failures, a model that is down, clients
    that hang up: no negative balance, one
    charge per generation, every charge exactly the delivered characters, and what each client received
    is exactly what its record was charged for."""
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {
            **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
            "user": "0",
            "generation": "0",
        },
    }
    settings.CIRCUIT_FAILURE_THRESHOLD = 0  # as in the burst above: connection health is not under test here
    make_model("gpt-4-turbo", max_concurrency=0)
    make_model("broken", max_concurrency=0, base_url="http://127.0.0.1:9", connection_name="down")
    # 600 characters, or 1 500 for an upstream that ignores maxTokens (its hold then has to grow)
    short, long = ["天地玄黄宇宙洪荒" * 5] * 15, ["日月盈昃辰宿列张" * 5] * 38
    fake_upstream.default = Reply(chunks=short, chunk_delay=0.02)
    fake_upstream.script(*[Reply.error(500)] * 6, *[Reply(chunks=long, chunk_delay=0.02)] * 30)
    services.wallet_grant(user=user, amount=FUNDS_METERED)

    async def one(client: httpx.AsyncClient, i: int) -> tuple[str, str | None, str]:
        """(outcome, generation id, the text the client received)."""
        await asyncio.sleep(i * 0.01)
        body = {
            "promptId": writing_prompt.pk,
            "userInput": f"第{i}段",
            "maxTokens": 250,  # worst case 1 000 output characters
            "modelId": "broken" if i % 10 == 9 else "gpt-4-turbo",
        }
        if i % 2:  # every other call through the OpenAI-compatible API, same model, same wallet
            return await one_v1(client, i, body)
        if i % 3 == 0:
            response = await client.post("/api/v1/generation/writing", json=body)
            if response.status_code != 200:
                return str(response.status_code), None, ""
            answer = response.json()
            return "200 json", answer["generationId"], answer["content"]
        received: list[str] = []
        async with client.stream("POST", "/api/v1/generation/writing/stream", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return str(response.status_code), None, ""
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = orjson.loads(line[6:])
                if "error" in event:
                    return "stream error", None, ""
                if event.get("generationId"):
                    return "200 stream", event["generationId"], "".join(received)
                received.append(event["content"])
                if i % 3 == 2 and len(received) == 3:
                    return "hung up", None, ""  # leaving the block closes the connection mid-stream
            return "no final event", None, ""

    async def one_v1(client: httpx.AsyncClient, i: int, writing: dict) -> tuple[str, str | None, str]:
        body = {
            "model": writing["modelId"],
            "messages": [{"role": "user", "content": writing["userInput"]}],
            "max_tokens": 250,
            "stream": i % 3 != 0,
            "stream_options": {"include_usage": True},
        }
        if not body["stream"]:
            response = await client.post("/v1/chat/completions", json=body)
            if response.status_code != 200:
                return str(response.status_code), None, ""
            answer = response.json()
            return "200 json", answer["id"], answer["choices"][0]["message"]["content"]
        received: list[str] = []
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                return str(response.status_code), None, ""
            async for line in response.aiter_lines():
                if not line.startswith("data: {"):
                    continue
                event = orjson.loads(line[6:])
                if "error" in event:
                    return "stream error", None, ""
                if not event["choices"]:  # the usage chunk: the end
                    return "200 stream", event["id"], "".join(received)
                received.append(event["choices"][0]["delta"].get("content") or "")
                if i % 3 == 2 and len(received) == 3:
                    return "hung up", None, ""
            return "no final event", None, ""

    async def burst() -> list[tuple[str, str | None, str]]:
        limits = httpx.Limits(max_connections=METERED + 10)
        headers = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=live_server_url, headers=headers, timeout=60, limits=limits) as client:
            return await asyncio.gather(*(one(client, i) for i in range(METERED)))

    started = time.monotonic()
    answers = asyncio.run(burst())
    elapsed = time.monotonic() - started
    deadline = time.monotonic() + 30
    while Generation.objects.filter(status="pending").exists() and time.monotonic() < deadline:
        time.sleep(0.05)

    results = Counter(outcome for outcome, _gid, _text in answers)
    assert set(results) <= {"200 json", "200 stream", "402", "502", "hung up", "stream error"}, results
    assert results["402"] > 0 and results["502"] > 0 and results["hung up"] > 0
    assert results["200 json"] > 0 and results["200 stream"] > 0
    records = {g.public_id: g for g in Generation.objects.all()}
    assert not [g for g in records.values() if g.status == "pending"]
    assert len(records) == METERED - results["402"]
    # what each client received is exactly what was charged
    for outcome, gid, text in answers:
        if gid is not None:
            record = records[gid]
            assert (record.status, record.content, record.output_chars) == ("succeeded", text, len(text)), outcome
    charges = {c.generation_id: c for c in Charge.objects.all()}
    for record in records.values():
        charge = charges.get(record.public_id)
        if record.status == "failed" or record.output_chars == 0:
            assert charge is None or charge.total_cost == 0
            continue
        assert charge is not None, record.public_id
        assert (charge.output_chars, charge.output_cost, charge.total_cost) == (record.output_chars,) * 3
        assert (charge.used_daily_free, charge.used_paid) == (record.used_daily_free, record.used_paid)
    stopped = [r for r in records.values() if r.stopped_by_balance]
    assert stopped and all(r.finish_reason == "length" and r.status == "succeeded" for r in stopped)
    grown = [r for r in records.values() if r.output_chars > 1000 and not r.stopped_by_balance]
    figures = assert_books_balanced(user)
    delivered = sum(r.output_chars for r in records.values() if r.public_id in charges)
    assert figures["paid"] + figures["free"] == delivered
    assert figures["balance"] == FUNDS_METERED - figures["paid"]
    print(
        f"\n[metered burst] {METERED} requests in {elapsed:.2f}s: {dict(results)}; "
        f"{len(stopped)} cut by the balance, {len(grown)} grown past their first hold; "
        f"charged {figures['paid']} paid + {figures['free']} free = {delivered} delivered characters"
    )
