"""A Redis cache backend whose client (and so its connection pool) is shared by every thread.

Django keeps one cache object per thread, and its Redis backend builds a new client — a new
connection pool, a new TCP connection — per object. Under ASGI each request's synchronous code runs
in a thread of its own, so every request would connect to Redis again. redis-py's pool is
thread-safe: one per process (and per configuration) is enough.
"""

from __future__ import annotations

import threading
from typing import Any

from django.core.cache.backends.redis import RedisCache, RedisCacheClient
from django.utils.functional import cached_property

_clients: dict[tuple[Any, ...], RedisCacheClient] = {}
_lock = threading.Lock()


class SharedRedisCache(RedisCache):
    @cached_property
    def _cache(self) -> RedisCacheClient:
        key = (tuple(self._servers), self._class, tuple(sorted((k, repr(v)) for k, v in self._options.items())))
        client = _clients.get(key)
        if client is None:
            with _lock:
                client = _clients.get(key)
                if client is None:
                    client = _clients[key] = self._class(self._servers, **self._options)
        return client
