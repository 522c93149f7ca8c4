"""Connection health: the circuit rules (pure table), the breaker over both stores with an injected
clock, and RoutedCall against the fake upstream (a real HTTP server answering 5xx, resets, 4xx)."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass

import pytest

from apps.providers.adapters import (
    ChatRequest,
    ConnectionConfig,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
)
from apps.providers.circuit import (
    Breaker,
    CircuitOpen,
    CircuitState,
    MemoryStore,
    Permit,
    RedisStore,
    admit,
    after_failure,
    after_release,
    after_success,
    counts_as_failure,
    retry_after_header,
)
from apps.providers.routing import RoutedCall
from apps.providers.types import ChatMessage
from tests.fakes.upstream import Reply

pytestmark = pytest.mark.usefixtures("provider_clients")

REDIS_URL = os.environ.get("REDIS_URL", "")
needs_redis = [pytest.mark.redis, pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL")]
T0 = 1_700_000_000.0


class Clock:
    """Wall time the test moves by hand."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# -- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "probe", "expected", "event"),
    [
        pytest.param(CircuitState(), False, CircuitState(1), "", id="first-failure-counts"),
        pytest.param(CircuitState(2), False, CircuitState(3, T0, 0, T0), "opened", id="threshold-opens"),
        pytest.param(CircuitState(3, T0 - 9, 0, T0 - 9), False, CircuitState(4, T0 - 9, 0, T0 - 9), "", id="late-call"),
        pytest.param(
            CircuitState(3, T0 - 40, T0 + 100, T0 - 40), True, CircuitState(4, T0, 0, T0), "reopened", id="probe-fails"
        ),
    ],
)
def test_failure_rule(state, probe, expected, event):
    assert after_failure(state, now=T0, threshold=3, probe=probe) == (expected, event)


@pytest.mark.parametrize(
    ("state", "expected", "event"),
    [
        pytest.param(CircuitState(2, 0, 0, T0 - 99), CircuitState(0, 0, 0, T0 - 99), "", id="resets-failures"),
        pytest.param(CircuitState(4, T0 - 40, T0 + 9, T0 - 40), CircuitState(0, 0, 0, T0), "closed", id="closes"),
    ],
)
def test_success_rule(state, expected, event):
    assert after_success(state, now=T0) == (expected, event)


@pytest.mark.parametrize(
    ("state", "admission", "probe_until"),
    [
        pytest.param(CircuitState(4), "closed", 0, id="closed-admits"),
        pytest.param(CircuitState(5, T0 - 29, 0, T0 - 29), "refused", 0, id="open-refuses"),
        pytest.param(CircuitState(5, T0 - 30, 0, T0 - 30), "probe", T0 + 60, id="cooled-down-probes"),
        pytest.param(CircuitState(5, T0 - 30, T0 + 1, T0 - 30), "refused", T0 + 1, id="one-probe-at-a-time"),
        pytest.param(CircuitState(5, T0 - 99, T0 - 1, T0 - 99), "probe", T0 + 60, id="lost-probe-given-up"),
    ],
)
def test_admission_rule(state, admission, probe_until):
    new, result = admit(state, now=T0, cooldown=30, lease=60)
    assert (result, new.probe_until) == (admission, probe_until)


def test_release_gives_back_only_our_probe():
    state = CircuitState(5, T0 - 40, T0 + 60, T0 - 40)
    assert after_release(state, probe_until=T0 + 60).probe_until == 0
    assert after_release(state, probe_until=T0 + 5).probe_until == T0 + 60  # another call's probe


@pytest.mark.parametrize(
    ("error", "counted"),
    [
        (UpstreamServerError("HTTP 500"), True),
        (UpstreamTimeout("read timeout"), True),
        (UpstreamConnectError("reset"), True),
        (UpstreamBadRequest("context too long"), False),
        (UpstreamAuthError("bad key"), False),
        (UpstreamModelNotFound("no such model"), False),
        (UpstreamRateLimited("slow down"), False),
        (UpstreamProtocolError("garbage"), False),
        (asyncio.CancelledError(), False),
    ],
)
def test_what_counts_as_a_failure(error, counted):
    assert counts_as_failure(error) is counted


def test_retry_after_is_whole_seconds_at_least_one():
    assert [retry_after_header(s) for s in (0, 0.2, 1, 29.1)] == ["1", "1", "1", "30"]


# -- the breaker over both stores -----------------------------------------------------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=needs_redis)])
def store_factory(request):
    if request.param == "memory":
        yield lambda clock: MemoryStore()
        return
    import redis

    created: list[int] = []

    def make(clock):
        created.append(1)
        return RedisStore(REDIS_URL, snapshot_seconds=1.0, clock=clock)

    yield make
    client = redis.Redis.from_url(REDIS_URL)
    for key in client.scan_iter(f"{RedisStore.prefix}*"):
        client.delete(key)


KEY = 900_001


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def breaker(store_factory, clock):
    b = Breaker(store_factory(clock), threshold=3, cooldown=30, clock=clock)
    b.reset(KEY)
    return b


async def test_opens_after_threshold_then_one_probe_closes_it(breaker, clock, caplog):
    caplog.set_level(logging.INFO, logger="apps.providers.circuit")
    for _ in range(2):
        await breaker.failure(await breaker.admit(KEY, name="up"), UpstreamServerError("HTTP 502"))
    assert await breaker.admit(KEY, name="up") is not None  # two failures: still closed
    await breaker.failure(await breaker.admit(KEY, name="up"), UpstreamTimeout("t"))
    assert breaker.states([KEY])[KEY] == CircuitState(3, T0, 0, T0)
    assert await breaker.admit(KEY, name="up") is None
    assert await breaker.retry_after(KEY) == 30

    clock.advance(29.5)
    assert await breaker.admit(KEY, name="up") is None
    clock.advance(0.5)  # the cool-down is over: one probe, the others keep waiting
    probe = await breaker.admit(KEY, name="up", lease=60)
    assert probe is not None and probe.probe
    assert await breaker.admit(KEY, name="up") is None
    await breaker.success(probe)
    assert breaker.states([KEY])[KEY] == CircuitState(0, 0, 0, T0 + 30)
    assert (await breaker.admit(KEY, name="up")).probe is False
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "circuit opened: connection up (#900001) after 3 consecutive failures (last: upstream_timeout); "
        "calls go to the fallbacks for 30 s",
        "circuit closed: connection up (#900001) answered again",
    ]


async def test_a_failed_probe_reopens_for_another_cooldown(breaker, clock):
    for _ in range(3):
        await breaker.failure(await breaker.admit(KEY), UpstreamConnectError("reset"))
    clock.advance(30)
    probe = await breaker.admit(KEY)
    await breaker.failure(probe, UpstreamServerError("HTTP 503"))
    assert breaker.states([KEY])[KEY] == CircuitState(4, T0 + 30, 0, T0 + 30)
    clock.advance(29)
    assert await breaker.admit(KEY) is None
    clock.advance(1)
    assert (await breaker.admit(KEY)).probe


async def test_a_probe_without_verdict_is_given_back(breaker, clock):
    for _ in range(3):
        await breaker.failure(await breaker.admit(KEY), UpstreamServerError("HTTP 500"))
    clock.advance(30)
    probe = await breaker.admit(KEY)
    await breaker.failure(probe, UpstreamBadRequest("the user's prompt is too long"))  # says nothing
    assert breaker.states([KEY])[KEY].failures == 3
    assert (await breaker.admit(KEY)).probe  # the next call probes at once


async def test_a_success_resets_the_consecutive_count(breaker):
    for _ in range(2):
        await breaker.failure(await breaker.admit(KEY), UpstreamServerError("HTTP 500"))
    await breaker.success(await breaker.admit(KEY))
    for _ in range(2):
        await breaker.failure(await breaker.admit(KEY), UpstreamServerError("HTTP 500"))
    assert breaker.states([KEY])[KEY].failures == 2
    assert await breaker.admit(KEY) is not None


async def test_user_caused_errors_never_open_it(breaker):
    for error in [UpstreamBadRequest("too long"), UpstreamAuthError("key"), UpstreamRateLimited("429")] * 3:
        await breaker.failure(await breaker.admit(KEY), error)
    assert breaker.states([KEY])[KEY].failures == 0


async def test_reset_by_an_operator_closes_it(breaker):
    for _ in range(3):
        await breaker.failure(await breaker.admit(KEY), UpstreamServerError("HTTP 500"))
    assert breaker.reset(KEY).opened_at == T0
    assert breaker.states([KEY])[KEY] == CircuitState()
    assert await breaker.admit(KEY) is not None


async def test_threshold_zero_turns_it_off(store_factory, clock):
    off = Breaker(store_factory(clock), threshold=0, cooldown=30, clock=clock)
    for _ in range(10):
        await off.failure(await off.admit(KEY), UpstreamServerError("HTTP 500"))
    assert off.states([KEY])[KEY] == CircuitState()


# -- routing against the fake upstream ---------------------------------------------------------


@dataclass(frozen=True)
class Target:
    model_id: str
    connection_id: int
    connection_name: str
    max_concurrency: int
    config: ConnectionConfig


def targets(base_url: str, *ids: str) -> list[Target]:
    config = ConnectionConfig(kind="openai", base_url=base_url, read_timeout=2, connect_timeout=1)
    return [Target(model_id, 800 + i, f"conn-{model_id}", 0, config) for i, model_id in enumerate(ids)]


def build(target: Target) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", "hi"),), model=target.model_id, max_tokens=8, temperature=0)


async def no_sleep(_seconds: float) -> None:
    return None


def call(base_url, breaker, *ids):
    return RoutedCall(targets=targets(base_url, *ids), build=build, sleep=no_sleep, breaker=breaker)


async def drain(routed: RoutedCall) -> str:
    return "".join([d.content async for d in routed.stream()])


@pytest.fixture
def mem_breaker(clock):
    return Breaker(MemoryStore(), threshold=3, cooldown=30, clock=clock)


def models_asked(fake_upstream) -> list[str]:
    return [r.json["model"] for r in fake_upstream.completion_requests]


async def test_failures_open_the_circuit_and_routing_falls_back(fake_upstream, mem_breaker, clock):
    # given: "a" answers 500, then 502 on the retry, then resets before its first token; "b" is healthy
    fake_upstream.default = Reply(chunks=["ok"])
    fake_upstream.script(Reply(status=500), Reply(status=502))
    assert await drain(call(fake_upstream.base_url, mem_breaker, "a", "b")) == "ok"
    assert mem_breaker.states([800])[800] == CircuitState(2)
    fake_upstream.script(Reply(events=[b": starting\n\n"], reset_after=1))
    assert await drain(call(fake_upstream.base_url, mem_breaker, "a", "b")) == "ok"
    # the third consecutive failure opened it: "a" was not retried, "b" answered at once
    assert models_asked(fake_upstream) == ["a", "a", "b", "a", "b"]
    assert mem_breaker.states([800])[800] == CircuitState(3, T0, 0, T0)
    assert mem_breaker.states([801])[801] == CircuitState()

    # when: it is open, no request reaches "a"
    fake_upstream.requests.clear()
    routed = call(fake_upstream.base_url, mem_breaker, "a", "b")
    assert await drain(routed) == "ok"
    assert models_asked(fake_upstream) == ["b"]
    assert [(a.model_id, a.error_code) for a in routed.attempts] == [("a", "circuit_open")]

    # then: after the cool-down the next call probes "a", and its answer closes the circuit
    clock.advance(30)
    fake_upstream.requests.clear()
    fake_upstream.script(Reply(chunks=["back"]))
    assert await drain(call(fake_upstream.base_url, mem_breaker, "a", "b")) == "back"
    assert models_asked(fake_upstream) == ["a"]
    assert mem_breaker.states([800])[800] == CircuitState(0, 0, 0, T0 + 30)


async def test_complete_skips_an_open_circuit_too(fake_upstream, mem_breaker):
    fake_upstream.default = Reply(status=500)
    with pytest.raises(UpstreamServerError):
        await call(fake_upstream.base_url, mem_breaker, "a").complete()
    with pytest.raises(UpstreamServerError):
        await call(fake_upstream.base_url, mem_breaker, "a").complete()
    assert mem_breaker.states([800])[800].opened_at == T0  # 3 failures (one retried call, one cut short)
    fake_upstream.requests.clear()
    fake_upstream.default = Reply(chunks=["备用"])
    routed = call(fake_upstream.base_url, mem_breaker, "a", "b")
    assert (await routed.complete()).content == "备用"
    assert models_asked(fake_upstream) == ["b"]


async def test_every_circuit_open_is_circuit_open_with_the_wait(fake_upstream, mem_breaker, clock):
    fake_upstream.default = Reply(status=500)
    for _ in range(2):  # a, a, b, b — then a, b: each third failure opens its circuit
        with pytest.raises(UpstreamServerError):
            await drain(call(fake_upstream.base_url, mem_breaker, "a", "b"))
    assert models_asked(fake_upstream) == ["a", "a", "b", "b", "a", "b"]
    clock.advance(5)
    # a call admitted before "b" opened fails late: counted, but no new cool-down
    await mem_breaker.failure(Permit(801, "conn-b"), UpstreamServerError("HTTP 500"))
    clock.advance(5)
    fake_upstream.requests.clear()
    with pytest.raises(CircuitOpen) as raised:
        await drain(call(fake_upstream.base_url, mem_breaker, "a", "b"))
    assert fake_upstream.requests == []
    assert raised.value.client_status == 503
    assert raised.value.retry_after == 20  # a late failure does not start another cool-down


async def test_user_caused_4xx_do_not_count(fake_upstream, mem_breaker):
    fake_upstream.default = Reply.error(400, "prompt is too long: context length exceeded")
    for _ in range(5):
        with pytest.raises(UpstreamBadRequest):
            await drain(call(fake_upstream.base_url, mem_breaker, "a", "b"))
    assert mem_breaker.states([800])[800] == CircuitState()
    assert len(fake_upstream.completion_requests) == 5  # every call still went to "a"


async def test_a_client_going_away_does_not_count(fake_upstream, mem_breaker, clock):
    for _ in range(3):
        await mem_breaker.failure(await mem_breaker.admit(800), UpstreamServerError("HTTP 500"))
    clock.advance(30)
    fake_upstream.script(Reply(hang=True))
    task = asyncio.ensure_future(drain(call(fake_upstream.base_url, mem_breaker, "a")))
    while not fake_upstream.completion_requests:
        await asyncio.sleep(0.01)
    assert mem_breaker.states([800])[800].probe_until > 0  # that call is the probe
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)  # the probe is given back in the background
    state = mem_breaker.states([800])[800]
    assert (state.failures, state.probe_until) == (3, 0)
    assert (await mem_breaker.admit(800)).probe  # the next call probes


# -- shared across processes -------------------------------------------------------------------

_OTHER_PROCESS = textwrap.dedent(
    """
    import asyncio, sys
    from apps.providers.adapters import UpstreamServerError
    from apps.providers.circuit import Breaker, RedisStore

    async def main(url, key, now):
        clock = lambda: now
        breaker = Breaker(RedisStore(url, clock=clock), threshold=2, cooldown=30, clock=clock)
        if sys.argv[4] == "fail":
            for _ in range(2):
                await breaker.failure(await breaker.admit(key, name="shared"), UpstreamServerError("HTTP 500"))
        permit = await breaker.admit(key)
        print("admitted" if permit is not None else "refused")

    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3])))
    """
)


def _other_process(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, REDIS_URL, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    return result.stdout.strip()


@pytest.mark.redis
@pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL")
async def test_state_is_shared_between_processes_through_redis(clock):
    key = 900_002
    here = Breaker(RedisStore(REDIS_URL, clock=clock), threshold=2, cooldown=30, clock=clock)
    here.reset(key)
    # another process sees two failures and opens the circuit; this one is refused without calling
    assert _other_process(str(key), repr(T0), "fail") == "refused"
    assert await here.admit(key) is None
    assert here.states([key])[key] == CircuitState(2, T0, 0, T0)
    # after the cool-down this process takes the probe; the other one must wait for its verdict
    clock.advance(30)
    probe = await here.admit(key)
    assert probe is not None and probe.probe
    assert _other_process(str(key), repr(T0 + 30), "look") == "refused"
    await here.success(probe)
    assert _other_process(str(key), repr(T0 + 30), "look") == "admitted"
    here.reset(key)


async def test_an_unreachable_redis_admits_calls_untracked(caplog):
    down = Breaker(RedisStore("redis://127.0.0.1:1/0"), threshold=1, cooldown=30)
    permit = await down.admit(KEY, name="up")
    assert permit is not None and not permit.probe
    await down.failure(permit, UpstreamServerError("HTTP 500"))  # would open it: not recorded, no error
    await down.success(Permit(KEY, "up", T0))
    assert await down.admit(KEY) is not None
    warnings = [r.getMessage() for r in caplog.records if r.name == "apps.providers.circuit"]
    assert warnings == ["connection health unavailable (ConnectionError): calls are admitted untracked"]
