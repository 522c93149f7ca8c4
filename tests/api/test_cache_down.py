"""The shared Redis cache fails open when Redis is down: reads miss, writes are dropped, `add` succeeds
(so rate limits let requests through) — nothing raises into a view."""

from __future__ import annotations

import socket

from apps.core.cache import SharedRedisCache


def dead_redis_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"redis://127.0.0.1:{port}/0"  # nothing listens there any more


def test_every_operation_answers_when_redis_is_unreachable(caplog, monkeypatch):
    monkeypatch.setattr("apps.core.cache._down_logged", 0.0)  # logged once a minute: maybe by a test before
    cache = SharedRedisCache(dead_redis_url(), {"OPTIONS": {"socket_connect_timeout": 0.5}})

    assert cache.get("k") is None and cache.get("k", "fallback") == "fallback"
    assert cache.add("k", 1, 10) is True
    cache.set("k", 1, 10)
    assert cache.get_many(["a", "b"]) == {} and cache.has_key("k") is False
    assert cache.delete("k") is False and cache.touch("k") is False
    cache.set_many({"a": 1})
    cache.delete_many(["a"])
    assert "Redis cache unreachable" in caplog.text


def test_a_prefetch_with_redis_down_reads_as_misses(settings):
    """`prefetched` against an unreachable Redis: its MGET fails open, so every key reads as a miss and
    the callers fall back to the database, as they do without the prefetch."""
    from django.core.cache import cache, caches

    from apps.core.cache import prefetched

    settings.CACHES = {
        "default": {
            "BACKEND": "apps.core.cache.SharedRedisCache",
            "LOCATION": dead_redis_url(),
            "OPTIONS": {"socket_connect_timeout": 0.5},
        }
    }
    assert isinstance(caches["default"], SharedRedisCache)  # the prefetch has round trips to save
    with prefetched(["apitoken:x", "prompt:v2:1"]):
        assert cache.get("apitoken:x") is None
        assert cache.get_many(["prompt:v2:1"]) == {}


def test_a_read_on_the_loop_with_redis_down_reads_as_misses(settings):
    """`fetched_on_loop` against an unreachable Redis: every key a miss (the callers then read the
    database, on a thread), never an error."""
    import asyncio

    from django.core.cache import caches

    from apps.core.cache import _MISSING, fetched_on_loop

    settings.CACHES = {"default": {"BACKEND": "apps.core.cache.SharedRedisCache", "LOCATION": dead_redis_url()}}
    assert isinstance(caches["default"], SharedRedisCache)
    assert asyncio.run(fetched_on_loop(["apitoken:x", "prompt:v2:1"])) == {
        "apitoken:x": _MISSING,
        "prompt:v2:1": _MISSING,
    }
