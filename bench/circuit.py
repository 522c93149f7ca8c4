"""What connection health costs a call (apps/providers/circuit.py): the breaker's admit + success per call
while the circuit is closed, in process and over Redis, and what a recorded failure costs.

    .venv/bin/python bench/circuit.py                                   # in-process store only
    REDIS_URL=redis://127.0.0.1:6379/14 .venv/bin/python bench/circuit.py  # and the Redis store

Prints microseconds per call. The Redis store keeps a one-second view of each circuit, so a healthy
connection costs no round trip; "no local view" shows what every call would cost without it.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from apps.providers.adapters import UpstreamServerError
from apps.providers.circuit import Breaker, MemoryStore, RedisStore

KEY = 987_654  # a connection id no real connection has


async def healthy(breaker: Breaker, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        permit = await breaker.admit(KEY, name="bench")
        assert permit is not None
        await breaker.success(permit)
    return (time.perf_counter() - started) / calls * 1e6


async def failing(breaker: Breaker, calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        permit = await breaker.admit(KEY, name="bench")
        assert permit is not None
        await breaker.failure(permit, UpstreamServerError("HTTP 500"))
    return (time.perf_counter() - started) / calls * 1e6


async def main() -> None:
    memory = Breaker(MemoryStore(), threshold=5, cooldown=30)
    print(f"in process, healthy        {await healthy(memory, 50_000):8.2f} µs/call")
    url = os.environ.get("REDIS_URL", "")
    if not url:
        print("(set REDIS_URL for the Redis store)")
        return
    store = RedisStore(url)
    shared = Breaker(store, threshold=10**9, cooldown=30)  # never opens: every failure is recorded
    shared.reset(KEY)
    try:
        print(f"Redis, healthy             {await healthy(shared, 50_000):8.2f} µs/call (one-second local view)")
        store.snapshot_seconds = 0
        print(f"Redis, healthy, no view    {await healthy(shared, 5_000):8.1f} µs/call (one HMGET per call)")
        store.snapshot_seconds = 1
        print(f"Redis, failure recorded    {await failing(shared, 5_000):8.1f} µs/call (one script per call)")
    finally:
        shared.reset(KEY)


if __name__ == "__main__":
    asyncio.run(main())
