"""`apps.core.cache.prefetched`: the cache entries a generation call reads before its upstream call (its
token's, its permissions', its prompt's) come from one `MGET`, and a prefetched value never hides a
write made after it was read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis
from django.conf import settings
from django.core.cache import cache

from apps.billing.services import wallet_grant
from apps.core.cache import prefetched
from apps.core.redis_pipelined import PipelinedRedis
from tests.fakes.upstream import Reply


@pytest.fixture(autouse=True)
def _needs_redis() -> None:
    if not settings.REDIS_URL:
        pytest.skip("needs REDIS_URL: without Redis there are no round trips to save (per-process cache)")


@pytest.fixture
def redis_commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, ...]]]:
    """The commands the shared cache sends to Redis (name and keys), in order — from the threads, and on
    the event loop's pipelined connection."""
    sent: list[tuple[str, ...]] = []
    original = redis.Redis.execute_command

    def spy(self: Any, *args: Any, **options: Any) -> Any:
        sent.append(tuple(a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in args))
        return original(self, *args, **options)

    async def loop_spy(self: Any, *args: Any) -> Any:  # the event loop's pipelined connection
        sent.append(tuple(a.decode(errors="replace") if isinstance(a, bytes) else str(a) for a in args))
        return await loop_original(self, *args)

    loop_original = PipelinedRedis.execute
    monkeypatch.setattr(redis.Redis, "execute_command", spy)
    monkeypatch.setattr(PipelinedRedis, "execute", loop_spy)
    yield sent


def test_prefetched_keys_answer_their_first_read_from_one_round_trip(redis_commands):
    cache.set("a", 1)
    cache.set("b", [2])
    redis_commands.clear()
    with prefetched(["a", "b", "c"]):
        assert cache.get("a") == 1
        assert cache.get_many(["b", "c"]) == {"b": [2]}  # a miss stays a miss
        assert cache.get("a") == 1  # a second read goes to Redis
    assert [c[0] for c in redis_commands] == ["MGET", "GET"]
    assert cache.get("a") == 1  # outside the block: as before


def test_a_write_in_the_block_is_never_hidden_by_the_prefetched_value(redis_commands):
    cache.set("a", 1)
    cache.set("b", 1)
    with prefetched(["a", "b", "c"]):
        cache.set("a", 2)
        cache.delete("b")
        cache.add("c", 3)
        assert cache.get("a") == 2
        assert cache.get("b") is None
        assert cache.get("c") == 3


def test_a_miss_answers_the_default():
    with prefetched(["nothing"]):
        assert cache.get("nothing", "default") == "default"


@pytest.mark.django_db(transaction=True)
def test_a_writing_call_reads_token_permissions_and_prompt_in_one_mget(
    http, fake_upstream, make_model, writing_prompt, user, redis_commands
):
    wallet_grant(user=user, amount=100_000)
    make_model()
    body = {"promptId": writing_prompt.pk, "modelId": "gpt-4-turbo", "maxTokens": 64}
    for _ in range(2):  # the first call fills the cache entries
        fake_upstream.script(Reply(chunks=["ok"]))
        redis_commands.clear()
        response = http.post("/api/v1/generation/writing", json=body)
        assert response.status_code == 200, response.text

    watched = ("apitoken:", "apitoken-revoked:", "genperms:", "prompt:")
    reads = [c for c in redis_commands if c[0] in {"GET", "MGET"} and any(w in k for k in c[1:] for w in watched)]
    assert len(reads) == 1 and reads[0][0] == "MGET", redis_commands
    assert all(any(w in k for k in reads[0][1:]) for w in watched)


@pytest.mark.django_db(transaction=True)
def test_a_malformed_body_with_a_bad_token_is_still_refused_401(live_server_url):
    import httpx

    response = httpx.post(
        f"{live_server_url}/api/v1/generation/writing",
        content=b'{"promptId": 1,',
        headers={"Authorization": "Bearer wst_" + "x" * 40, "Content-Type": "application/json"},
    )
    assert response.status_code == 401
