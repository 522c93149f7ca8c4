"""Concurrency slots (in-process and Redis leases) and the retry/fallback rules of RoutedCall."""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

import pytest

from apps.providers.adapters import ChatRequest, ConnectionConfig, UpstreamBadRequest, UpstreamLoading
from apps.providers.limits import ConcurrencyLimited, concurrency_slot
from apps.providers.routing import RoutedCall
from apps.providers.types import ChatMessage
from tests.fakes.upstream import Reply

pytestmark = pytest.mark.usefixtures("provider_clients")

REDIS_URL = os.environ.get("REDIS_URL", "")


@pytest.mark.parametrize(
    "redis_url", ["", pytest.param(REDIS_URL, marks=pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL"))]
)
async def test_slots_cap_concurrency_then_refuse(redis_url):
    key = f"test-slots-{os.getpid()}-{bool(redis_url)}"
    held = asyncio.Event()
    release = asyncio.Event()

    async def holder():
        async with concurrency_slot(key, 2, redis_url=redis_url, wait=1):
            held.set()
            await release.wait()

    tasks = [asyncio.create_task(holder()) for _ in range(2)]
    await held.wait()
    await asyncio.sleep(0.05)
    with pytest.raises(ConcurrencyLimited):
        async with concurrency_slot(key, 2, redis_url=redis_url, wait=0.2):
            pass
    release.set()
    await asyncio.gather(*tasks)
    async with concurrency_slot(key, 2, redis_url=redis_url, wait=0.5):  # freed again
        pass


async def test_zero_means_unlimited():
    async with concurrency_slot("unlimited", 0), concurrency_slot("unlimited", 0):
        pass


@dataclass(frozen=True)
class Target:
    model_id: str
    connection_id: int
    max_concurrency: int
    config: ConnectionConfig


def targets(base_url: str, *ids: str) -> list[Target]:
    return [
        Target(model_id, i, 0, ConnectionConfig(kind="openai", base_url=base_url, read_timeout=2, connect_timeout=1))
        for i, model_id in enumerate(ids)
    ]


def build(target: Target) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", "hi"),), model=target.model_id, max_tokens=8, temperature=0)


async def no_sleep(_seconds: float) -> None:
    return None


async def drain(call: RoutedCall) -> str:
    return "".join([d.content async for d in call.stream()])


@pytest.mark.parametrize(
    ("replies", "models_tried", "answered_by"),
    [
        # a retryable failure is retried once on the same model, then the next model answers
        ([Reply(status=500), Reply(status=529), Reply(chunks=["ok"])], ["a", "a", "b"], "b"),
        # one retry suffices
        ([Reply(status=503), Reply(chunks=["ok"])], ["a", "a"], "a"),
        # an authentication failure is not retried: straight to the next model
        ([Reply.error(401, "bad key"), Reply(chunks=["ok"])], ["a", "b"], "b"),
        # a long Retry-After is not waited for: next model
        ([Reply.error(429, "slow down", retry_after=60), Reply(chunks=["ok"])], ["a", "b"], "b"),
        # a model still loading (llama.cpp's 503) is not retried (it will not be ready in a backoff): next model
        (
            [
                Reply(
                    status=503,
                    json_body={"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}},
                ),
                Reply(chunks=["ok"]),
            ],
            ["a", "b"],
            "b",
        ),
        # a model that does not exist at the upstream: retried, then the fallback
        (
            [Reply.error(404, "no such model"), Reply.error(404, "no such model"), Reply(chunks=["ok"])],
            ["a", "a", "b"],
            "b",
        ),
    ],
)
async def test_retry_and_fallback_rules(fake_upstream, replies, models_tried, answered_by):
    fake_upstream.script(*replies)
    call = RoutedCall(targets=targets(fake_upstream.base_url, "a", "b"), build=build, sleep=no_sleep)
    assert await drain(call) == "ok"
    assert [r.json["model"] for r in fake_upstream.completion_requests] == models_tried
    assert call.target.model_id == answered_by
    assert len(call.attempts) == len(models_tried) - 1


async def test_bad_request_ends_the_call_without_fallback(fake_upstream):
    fake_upstream.script(Reply.error(400, "prompt is too long: context length exceeded"), Reply(chunks=["ok"]))
    call = RoutedCall(targets=targets(fake_upstream.base_url, "a", "b"), build=build, sleep=no_sleep)
    with pytest.raises(UpstreamBadRequest):
        await drain(call)
    assert [r.json["model"] for r in fake_upstream.completion_requests] == ["a"]


async def test_a_model_loading_without_fallback_fails_at_once(fake_upstream):
    loading = {"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}
    fake_upstream.script(Reply(status=503, json_body=loading, headers={"Retry-After": "3"}), Reply(chunks=["ok"]))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    call = RoutedCall(targets=targets(fake_upstream.base_url, "a"), build=build, sleep=sleep)
    with pytest.raises(UpstreamLoading) as info:
        await drain(call)
    assert info.value.retry_after == 3.0
    assert (len(fake_upstream.completion_requests), slept) == (1, [])


async def test_no_switch_after_the_first_token(fake_upstream):
    fake_upstream.script(Reply(chunks=["一", "二", "三"], reset_after=1), Reply(chunks=["never"]))
    call = RoutedCall(targets=targets(fake_upstream.base_url, "a", "b"), build=build, sleep=no_sleep)
    received = []
    with pytest.raises(Exception):  # noqa: B017 - the connection error of the broken stream, whatever its class
        async for delta in call.stream():
            received.append(delta.content)
    assert received == ["一"]
    assert [r.json["model"] for r in fake_upstream.completion_requests] == ["a"]


async def test_fallbacks_the_hold_does_not_cover_are_skipped(fake_upstream):
    fake_upstream.script(Reply(status=500), Reply(status=500), Reply(chunks=["ok"]))
    call = RoutedCall(
        targets=targets(fake_upstream.base_url, "a", "expensive", "c"),
        build=build,
        sleep=no_sleep,
        can_use=lambda t: t.model_id != "expensive",
    )
    assert await drain(call) == "ok"
    assert [r.json["model"] for r in fake_upstream.completion_requests] == ["a", "a", "c"]


async def test_complete_uses_the_same_rules(fake_upstream):
    fake_upstream.script(Reply(status=500), Reply(status=500), Reply(chunks=["备用"]))
    call = RoutedCall(targets=targets(fake_upstream.base_url, "a", "b"), build=build, sleep=no_sleep)
    completion = await call.complete()
    assert completion.content == "备用" and call.target.model_id == "b"
