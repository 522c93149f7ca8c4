"""Pooled ``httpx.AsyncClient``s: one pool per (event loop, connection settings), sharded.

* Created lazily on first use inside a running loop — never at import.
* Keyed by ``id(loop)``, with a weak reference to the loop to detect id reuse; entries of a loop that
  closed or was garbage-collected are dropped. :func:`aclose_clients` closes the current loop's
  clients (call it at shutdown, e.g. from the ASGI lifespan, and in tests).
* Sharded: httpcore's connection pool does O(requests × connections) bookkeeping on every request
  event (and polls every idle connection), so one client shared by hundreds of concurrent streams
  spends most of its CPU there (encode/httpx#3215, see reference/peer-bench.md). A
  :class:`ClientPool` therefore holds several clients and leases the least busy one; a new shard is
  opened when every shard already carries ``SHARD_CAPACITY`` requests (up to ``MAX_SHARDS``), and
  each shard keeps few idle connections. Measured by ``bench/adapters.py``: 500 concurrent streams
  cost ~2 s of client CPU sharded vs ~15 s with one client (second round, warm connections).
* Two more per-request costs removed (see below): a failed ``import sniffio`` inside httpcore on
  every request, and a CA bundle load (~50 ms) per client — all shards share one SSL context.
"""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import ssl
import sys
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx

from apps.providers.adapters.base import ConnectionConfig, normalize_base_url

# httpcore calls ``current_async_library()`` several times per request, and each call runs
# ``import sniffio``; when sniffio is not installed that failed import walks sys.path every time
# (~0.7 ms of CPU per call here). A ``None`` entry in sys.modules makes the import fail at once, which
# is exactly what it would do anyway (httpcore then assumes asyncio, the only loop we run on).
if "sniffio" not in sys.modules and importlib.util.find_spec("sniffio") is None:
    sys.modules["sniffio"] = None  # type: ignore[assignment]

SHARD_CAPACITY = 8
MAX_SHARDS = 128
WRITE_TIMEOUT = 30.0
MAX_CONNECTIONS_PER_SHARD = 256
KEEPALIVE_PER_SHARD = 16

PoolKey = tuple[str, float, float]


def pool_key(config: ConnectionConfig) -> PoolKey:
    """Clients are shared by connections with the same origin and timeouts (auth and extra headers
    are sent per request, so they don't need their own client)."""
    return _pool_key(config.base_url, config.kind, float(config.connect_timeout), float(config.read_timeout))


@functools.lru_cache(maxsize=1024)
def _pool_key(base_url: str, kind: str, connect: float, read: float) -> PoolKey:
    try:
        url = httpx.URL(normalize_base_url(base_url, kind) or "http://invalid")
        origin = f"{url.scheme}://{url.netloc.decode('ascii')}"
    except (httpx.InvalidURL, ValueError):
        origin = base_url
    return (origin, connect, read)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying SSL context per process: loading the CA bundle costs ~50 ms of CPU, which
    httpx would otherwise pay for every client (every shard)."""
    return httpx.create_ssl_context()


def build_client(
    config: ConnectionConfig, *, max_connections: int = 256, max_keepalive: int | None = None
) -> httpx.AsyncClient:
    connect = float(config.connect_timeout)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=connect,
            read=float(config.read_timeout),
            write=max(connect, WRITE_TIMEOUT),
            pool=connect,
        ),
        limits=httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=min(max_connections, max_keepalive or KEEPALIVE_PER_SHARD),
            keepalive_expiry=30.0,
        ),
        verify=_ssl_context(),
        follow_redirects=False,
        trust_env=True,
    )


@dataclass(slots=True)
class _Shard:
    client: httpx.AsyncClient
    in_flight: int = 0


class ClientPool:
    """Shards of ``httpx.AsyncClient`` for one connection setting on one loop."""

    def __init__(
        self, config: ConnectionConfig, *, shard_capacity: int | None = None, max_shards: int | None = None
    ) -> None:
        self._config = config
        self._capacity = max(1, shard_capacity if shard_capacity is not None else SHARD_CAPACITY)
        self._max_shards = max(1, max_shards if max_shards is not None else MAX_SHARDS)
        self.shards: list[_Shard] = []

    def _pick(self) -> _Shard:
        shards = self.shards
        best = None
        for shard in shards:
            if best is None or shard.in_flight < best.in_flight:
                best = shard
                if shard.in_flight == 0:
                    break
        if best is None or (best.in_flight >= self._capacity and len(shards) < self._max_shards):
            # a lone client must hold every connection itself
            if self._max_shards > 1:
                client = build_client(self._config, max_keepalive=max(KEEPALIVE_PER_SHARD, self._capacity))
            else:
                client = build_client(self._config, max_connections=1024, max_keepalive=1024)
            best = _Shard(client)
            shards.append(best)
        return best

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[httpx.AsyncClient]:
        shard = self._pick()
        shard.in_flight += 1
        try:
            yield shard.client
        finally:
            shard.in_flight -= 1

    @property
    def in_flight(self) -> int:
        return sum(s.in_flight for s in self.shards)

    async def aclose(self) -> None:
        shards, self.shards = self.shards, []
        for shard in shards:
            await shard.client.aclose()


# id(loop) -> (weakref to the loop, pools of that loop)
_registry: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], dict[PoolKey, ClientPool]]] = {}


def _forget(loop_id: int, ref: weakref.ref[asyncio.AbstractEventLoop]) -> None:
    entry = _registry.get(loop_id)
    if entry is not None and entry[0] is ref:
        del _registry[loop_id]


def _loop_pools() -> dict[PoolKey, ClientPool]:
    loop = asyncio.get_running_loop()
    entry = _registry.get(id(loop))
    if entry is not None and entry[0]() is loop:
        return entry[1]
    # New loop (or an id reused after the old loop died): drop closed loops' entries.
    for loop_id, (ref, _pools) in list(_registry.items()):
        old = ref()
        if old is None or old.is_closed():
            _registry.pop(loop_id, None)
    ref = weakref.ref(loop)
    pools: dict[PoolKey, ClientPool] = {}
    _registry[id(loop)] = (ref, pools)
    weakref.finalize(loop, _forget, id(loop), ref)
    return pools


def get_pool(config: ConnectionConfig) -> ClientPool:
    """The pool for ``config`` on the running loop (created on first use)."""
    pools = _loop_pools()
    key = pool_key(config)
    pool = pools.get(key)
    if pool is None:
        pool = pools[key] = ClientPool(config)
    return pool


async def aclose_clients() -> None:
    """Close every client of the running loop (shutdown / test teardown)."""
    loop = asyncio.get_running_loop()
    entry = _registry.pop(id(loop), None)
    if entry is None or entry[0]() is not loop:
        return
    for pool in list(entry[1].values()):
        await pool.aclose()
