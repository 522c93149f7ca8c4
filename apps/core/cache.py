"""A Redis cache backend whose client (and so its connection pool) is shared by every thread, and
which keeps the service up when Redis is down.

Django keeps one cache object per thread, and its Redis backend builds a new client — a new
connection pool, a new TCP connection — per object. Under ASGI each request's synchronous code runs
in a thread of its own, so every request would connect to Redis again. redis-py's pool is
thread-safe: one per process (and per configuration) is enough, and so is one `redis.Redis` per pool.

Redis unreachable: the cache fails open — reads miss, writes are dropped, `add` succeeds — so
authentication, permissions and generation go on (each falls back to the database or to per-process
state) and the rate limits are not enforced until Redis is back. A warning is logged once a minute.

`prefetched(keys)`: a request that knows the keys it will read (its token's entry, its permissions,
its prompt) reads them in one round trip (`MGET`) instead of one each; inside the block each
prefetched key answers its first read from that round trip (a miss stays a miss), and a write to a
key drops it, so the callers' code is unchanged and never sees a value older than the block.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import redis
from django.conf import settings
from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

from apps.core import redis_pipelined
from apps.core.db import NeedsThread

_lock = threading.Lock()
logger = logging.getLogger("apps.core.cache")
_down_logged = 0.0


def _down(exc: Exception) -> None:
    global _down_logged
    if time.monotonic() - _down_logged > 60:
        _down_logged = time.monotonic()
        logger.warning("Redis cache unreachable (%s): reads miss and rate limits are off", exc)


def _fail_open[**P, R](when_down: Callable[..., Any]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Run the cache operation; when Redis cannot be reached, answer `when_down(*args, **kwargs)`."""

    def wrap(operation: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(operation)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return operation(*args, **kwargs)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                _down(exc)
                return when_down(*args, **kwargs)  # type: ignore[no-any-return]

        return run

    return wrap


def _default(self: Any, key: Any, default: Any = None) -> Any:
    return default


class _ReusingClient(RedisCacheClient):
    """Django builds a new `redis.Redis` per cache operation; constructing one copies its ~150 response
    callbacks (≈ 0.3 ms of CPU). The client objects are thread-safe wrappers around the pool: keep one
    per pool."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._redis_clients: dict[int, Any] = {}

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        if _on_loop.get():  # a round trip now would block the event loop: the caller redoes its step in a thread
            raise NeedsThread("a cache round trip on the event loop")
        # Django's private helpers (untyped in django-stubs): the pool index and the client class.
        base: Any = self
        index = base._get_connection_pool_index(write)
        client = self._redis_clients.get(index)
        if client is None:
            with _lock:
                client = self._redis_clients.get(index)
                if client is None:
                    client = self._redis_clients[index] = base._client(connection_pool=base._get_connection_pool(write))
        return client

    # the operations Django's RedisCache calls, each failing open (see the module's docstring)
    add = _fail_open(lambda *a, **k: True)(RedisCacheClient.add)
    get = _fail_open(_default)(RedisCacheClient.get)
    set = _fail_open(lambda *a, **k: None)(RedisCacheClient.set)
    touch = _fail_open(lambda *a, **k: False)(RedisCacheClient.touch)
    delete = _fail_open(lambda *a, **k: False)(RedisCacheClient.delete)
    get_many = _fail_open(lambda *a, **k: {})(RedisCacheClient.get_many)
    has_key = _fail_open(lambda *a, **k: False)(RedisCacheClient.has_key)
    set_many = _fail_open(lambda *a, **k: [])(RedisCacheClient.set_many)
    delete_many = _fail_open(lambda *a, **k: None)(RedisCacheClient.delete_many)
    clear = _fail_open(lambda *a, **k: False)(RedisCacheClient.clear)


_clients: dict[tuple[Any, ...], RedisCacheClient] = {}


class SharedRedisCache(RedisCache):
    def __init__(self, server: str, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = _ReusingClient

    @cached_property
    def _cache(self) -> RedisCacheClient:
        base: Any = self  # `_servers` and `_options` are RedisCache's private, untyped attributes
        servers, options = base._servers, base._options
        key = (tuple(servers), self._class, tuple(sorted((k, repr(v)) for k, v in options.items())))
        client = _clients.get(key)
        if client is None:
            with _lock:
                client = _clients.get(key)
                if client is None:
                    client = _clients[key] = self._class(servers, **options)
        return client

    # -- prefetched reads (see the module's docstring) ------------------------------------------------

    def get(self, key: Any, default: Any = None, version: int | None = None) -> Any:
        seen = _prefetched.get()
        if seen is not None and version is None:
            value = seen.pop(key, _NOT_PREFETCHED)
            if value is not _NOT_PREFETCHED:
                return default if value is _MISSING else value
        return super().get(key, default, version)

    def get_many(self, keys: Iterable[Any], version: int | None = None) -> dict[Any, Any]:
        seen = _prefetched.get()
        keys = list(keys)
        if seen is not None and version is None and keys and all(k in seen for k in keys):
            values = [seen.pop(k) for k in keys]
            return {k: v for k, v in zip(keys, values, strict=True) if v is not _MISSING}
        _forget(keys)
        return super().get_many(keys, version)

    def set(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> None:
        _forget((key,))
        super().set(key, value, timeout, version)

    def add(self, key: Any, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        _forget((key,))
        return super().add(key, value, timeout, version)

    def touch(self, key: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        _forget((key,))
        return super().touch(key, timeout, version)

    def delete(self, key: Any, version: int | None = None) -> bool:
        _forget((key,))
        return super().delete(key, version)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        _forget((key,))
        return super().incr(key, delta, version)

    def set_many(self, data: dict[Any, Any], timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> list[Any]:
        _forget(data)
        return super().set_many(data, timeout, version)

    def delete_many(self, keys: Iterable[Any], version: int | None = None) -> None:
        keys = list(keys)
        _forget(keys)
        super().delete_many(keys, version)

    def clear(self) -> None:
        seen = _prefetched.get()
        if seen is not None:
            seen.clear()
        super().clear()


_prefetched: ContextVar[dict[str, Any] | None] = ContextVar("cache_prefetched", default=None)
_on_loop: ContextVar[bool] = ContextVar("cache_on_loop", default=False)
_MISSING = object()  # prefetched, not in the cache
_NOT_PREFETCHED = object()


def _forget(keys: Iterable[Any]) -> None:
    seen = _prefetched.get()
    if seen:
        for key in keys:
            seen.pop(key, None)


@contextmanager
def prefetched(keys: Iterable[str]) -> Iterator[None]:
    """Read `keys` from the shared cache in one round trip; inside the block, the first read of each
    answers from it (see the module's docstring). Nothing to do without Redis (the per-process cache
    has no round trips to save) or without keys."""
    wanted = list(dict.fromkeys(keys))
    backend = caches["default"]
    if not wanted or not isinstance(backend, SharedRedisCache):
        yield
        return
    found = backend.get_many(wanted)
    token = _prefetched.set({k: found.get(k, _MISSING) for k in wanted})
    try:
        yield
    finally:
        _prefetched.reset(token)


_loop_backend: tuple[Any, Any] | None = None


def loop_backend() -> Any:
    """The default cache's backend object for code on the event loop: one per process. `caches[...]`
    answers one per task there, built again for every request."""
    global _loop_backend
    config = settings.CACHES
    if _loop_backend is None or _loop_backend[0] is not config:
        _loop_backend = (config, caches.create_connection("default"))
    return _loop_backend[1]


async def fetched_on_loop(keys: Iterable[str]) -> dict[str, Any] | None:
    """`keys` read on the event loop (one `MGET` on the loop's pipelined connection), for
    `prefetched_values`: a missing key maps to a miss. None when there is nothing to fetch: no keys, or a
    cache other than one shared Redis server (the per-process cache is read in place). Redis unreachable:
    every key a miss, as the synchronous reads fail open."""
    wanted = list(dict.fromkeys(keys))
    backend = loop_backend()
    if not wanted or not isinstance(backend, SharedRedisCache):
        return None
    base: Any = backend  # RedisCache's private, untyped attributes
    if len(base._servers) != 1:
        return None
    client: Any = base._cache
    try:
        raw = await redis_pipelined.for_loop(base._servers[0]).execute(
            "MGET",
            *(backend.make_key(k) for k in wanted),  # our own keys: no per-character check
        )
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        _down(exc)
        raw = [None] * len(wanted)
    return {k: _MISSING if r is None else client._serializer.loads(r) for k, r in zip(wanted, raw, strict=True)}


@contextmanager
def prefetched_values(values: dict[str, Any] | None, *, on_loop: bool = False) -> Iterator[None]:
    """Inside the block the first read of each key of `values` (from `fetched_on_loop`) answers from it,
    as in `prefetched`; `values` is consumed as it is read (several blocks may share it). With
    `on_loop`, any other round trip to the shared cache raises `NeedsThread` instead of blocking the
    event loop."""
    token = _prefetched.set(values)
    loop_token = _on_loop.set(on_loop)
    try:
        yield
    finally:
        _on_loop.reset(loop_token)
        _prefetched.reset(token)
