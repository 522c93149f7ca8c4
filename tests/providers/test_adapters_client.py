"""The per-loop, sharded httpx client pool."""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from apps.providers.adapters import ConnectionConfig
from apps.providers.adapters import client as client_mod
from apps.providers.adapters.client import ClientPool, aclose_clients, get_pool

CFG = ConnectionConfig(kind="openai", base_url="http://127.0.0.1:9/v1", connect_timeout=3, read_timeout=7)


async def test_one_pool_per_loop_and_settings() -> None:
    pool = get_pool(CFG)
    assert get_pool(CFG) is pool
    # same host and timeouts, different key/headers/path: shared
    assert (
        get_pool(
            ConnectionConfig(
                kind="openai", base_url="http://127.0.0.1:9/other", api_key="k", connect_timeout=3, read_timeout=7
            )
        )
        is pool
    )
    assert (
        get_pool(
            ConnectionConfig(
                kind="anthropic", base_url="http://127.0.0.1:9", connect_timeout=3, read_timeout=7, api_key="k2"
            )
        )
        is pool
    )
    assert get_pool(ConnectionConfig(kind="openai", base_url="http://127.0.0.1:9/v1", read_timeout=8)) is not pool
    await aclose_clients()


def test_new_loop_new_clients_and_closed_loops_forgotten() -> None:
    pools = []
    loop_ids = []

    async def grab() -> None:
        loop_ids.append(id(asyncio.get_running_loop()))
        pool = get_pool(CFG)
        async with pool.lease() as c:
            pools.append((pool, c))

    asyncio.run(grab())
    asyncio.run(grab())
    assert pools[0][0] is not pools[1][0]
    assert pools[0][1] is not pools[1][1]
    asyncio.run(grab())  # creating a pool on a new loop prunes the entries of closed loops
    for loop_id in loop_ids[:2]:
        entry = client_mod._registry.get(loop_id)
        # gone, or (id reused by the third loop) belonging to a live loop with its own pools
        assert entry is None or entry[1][client_mod.pool_key(CFG)] is pools[2][0]


async def test_timeouts_and_limits_are_explicit() -> None:
    async with get_pool(CFG).lease() as c:
        assert (c.timeout.connect, c.timeout.read, c.timeout.pool) == (3, 7, 3)
        assert c.timeout.write == 30
    await aclose_clients()


async def test_shards_open_under_load_and_are_reused() -> None:
    pool = ClientPool(CFG, shard_capacity=2, max_shards=3)
    async with AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(pool.lease()) for _ in range(7)]
        assert len(pool.shards) == 3
        assert [s.in_flight for s in pool.shards] == [3, 2, 2]
        assert len(set(map(id, clients))) == 3
    assert pool.in_flight == 0
    async with pool.lease() as c:
        assert c is pool.shards[0].client
    await pool.aclose()


@pytest.mark.parametrize("n", [0, 1])
async def test_aclose_clients_is_safe(n: int) -> None:
    for _ in range(n):
        get_pool(CFG)
    await aclose_clients()
    await aclose_clients()
