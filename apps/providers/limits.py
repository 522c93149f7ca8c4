"""Per-connection concurrency limits: a Redis-backed semaphore when Redis is configured (shared by
every app process), an in-process asyncio semaphore otherwise. A caller waits briefly for a slot,
then gets `ConcurrencyLimited` (answered 503 with `Retry-After`).

Redis slots are leases in a sorted set scored by their expiry, so a crashed process's slots free
themselves after `LEASE_SECONDS`. A lease is taken by one script call (`EVALSHA`: the script's text is
sent only when Redis does not know it yet) and given back without making the caller wait for Redis's
answer; both go over one pipelined connection per event loop (`apps.core.redis_pipelined`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from apps.core.redis_pipelined import PipelinedRedis, Script, for_loop

logger = logging.getLogger("apps.providers.limits")

LEASE_SECONDS = 600
POLL_SECONDS = 0.05

_ACQUIRE = Script("""
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[4])
  redis.call('EXPIRE', KEYS[1], ARGV[5])
  return 1
end
return 0
""")


class ConcurrencyLimited(Exception):
    def __init__(self, key: str, retry_after: float = 1.0) -> None:
        super().__init__(f"no free slot for {key}")
        self.key = key
        self.retry_after = retry_after


_local: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, int], asyncio.Semaphore]] = (
    weakref.WeakKeyDictionary()
)


def _local_semaphore(key: str, limit: int) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    per_loop = _local.setdefault(loop, {})
    sem = per_loop.get((key, limit))
    if sem is None:
        sem = per_loop[(key, limit)] = asyncio.Semaphore(limit)
    return sem


def _redis(url: str) -> PipelinedRedis:
    """This loop's connection to `url` (all its slots' commands pipelined on it)."""
    return for_loop(url)


@asynccontextmanager
async def concurrency_slot(key: str, limit: int, *, redis_url: str = "", wait: float = 2.0) -> AsyncIterator[None]:
    """Hold one of `limit` slots for `key` while the block runs; `limit` 0 means unlimited.

    When Redis cannot be reached the limit is kept per process (the in-process semaphore) rather than
    failing the call: generation must not depend on Redis being up."""
    if limit <= 0:
        yield
        return
    member = await _redis_acquire(key, limit, redis_url, wait) if redis_url else None
    if member is None:
        async with _local_slot(key, limit, wait):
            yield
        return
    try:
        yield
    finally:
        _release(redis_url, key, member)


def _release(redis_url: str, key: str, member: str) -> None:
    """Give a lease back without waiting for Redis's answer: the caller goes on at once. If Redis cannot
    be reached the lease frees itself after `LEASE_SECONDS`."""
    with suppress(Exception):
        _redis(redis_url).execute_nowait("ZREM", f"ws:slots:{key}", member)


@asynccontextmanager
async def _local_slot(key: str, limit: int, wait: float) -> AsyncIterator[None]:
    sem = _local_semaphore(key, limit)
    try:
        await asyncio.wait_for(sem.acquire(), timeout=wait)
    except TimeoutError:
        raise ConcurrencyLimited(key) from None
    try:
        yield
    finally:
        sem.release()


_redis_down_logged = 0.0


async def _redis_acquire(key: str, limit: int, redis_url: str, wait: float) -> str | None:
    """A lease in Redis (its member), None when Redis cannot be reached (then the local semaphore)."""
    import redis

    global _redis_down_logged
    client = _redis(redis_url)
    redis_key = f"ws:slots:{key}"
    member = uuid.uuid4().hex
    deadline = time.monotonic() + wait
    while True:
        now = time.time()
        try:
            acquired = await client.run_script(
                _ACQUIRE, [redis_key], [now, limit, now + LEASE_SECONDS, member, LEASE_SECONDS * 2]
            )
        except (redis.ConnectionError, redis.TimeoutError):
            if time.monotonic() - _redis_down_logged > 60:
                _redis_down_logged = time.monotonic()
                logger.warning("Redis unreachable: concurrency limits are kept per process until it is back")
            return None
        if acquired:
            return member
        if time.monotonic() >= deadline:
            raise ConcurrencyLimited(key)
        await asyncio.sleep(POLL_SECONDS)
