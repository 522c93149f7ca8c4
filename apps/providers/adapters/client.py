"""Pooled ``aiohttp.ClientSession``s: one session per (event loop, connection settings).

* Created lazily on first use inside a running loop — never at import.
* Keyed by ``id(loop)``, with a weak reference to the loop to detect id reuse; entries of a loop that
  closed or was garbage-collected are dropped. :func:`aclose_clients` closes the current loop's
  sessions (call it at shutdown, e.g. from the ASGI lifespan, and in tests).
* One session (one ``TCPConnector``) per setting, no sharding: the httpx transport needed shards
  because httpcore's pool does O(requests × connections) work per request event (encode/httpx#3215);
  aiohttp's connector does not (``bench/adapters.py``: 500 concurrent streams cost the same CPU on
  one session as spread over 64). No connection limit (aiohttp's default of 100 would silently queue
  the 101st concurrent stream); idle keep-alive connections close after 30 s.
* One verifying SSL context per process (loading the CA bundle costs ~50 ms of CPU), built like
  httpx built it (``SSL_CERT_FILE`` / ``SSL_CERT_DIR``, else certifi; ALPN ``http/1.1``).
* Proxies from the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY``, ``NO_PROXY``), as
  httpx's ``trust_env`` did, resolved once per session — aiohttp's own ``trust_env`` would do it (and
  read ``~/.netrc``) in a worker thread on every request. No cookie jar: upstream cookies are neither
  stored nor sent (connections with different keys share a session).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import ssl
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any
from urllib.request import getproxies, proxy_bypass_environment  # type: ignore[attr-defined]  # missing from typeshed

import aiohttp
from yarl import URL

from apps.providers.adapters.base import ConnectionConfig, normalize_base_url

KEEPALIVE_EXPIRY = 30.0
MAX_CONNECTIONS = 0  # 0 = unlimited (aiohttp's default is 100)

PoolKey = tuple[str, float, float]


def pool_key(config: ConnectionConfig) -> PoolKey:
    """Sessions are shared by connections with the same origin and timeouts (auth and extra headers
    are sent per request, so they don't need their own session)."""
    return _pool_key(config.base_url, config.kind, float(config.connect_timeout), float(config.read_timeout))


@functools.lru_cache(maxsize=1024)
def _pool_key(base_url: str, kind: str, connect: float, read: float) -> PoolKey:
    try:
        url = URL(normalize_base_url(base_url, kind) or "http://invalid")
        origin = str(url.origin()) if url.absolute and url.host else base_url
    except (TypeError, ValueError):
        origin = base_url
    return (origin, connect, read)


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One verifying SSL context per process (what ``httpx.create_ssl_context()`` built)."""
    import certifi

    if os.environ.get("SSL_CERT_FILE"):
        ctx = ssl.create_default_context(cafile=os.environ["SSL_CERT_FILE"])
    elif os.environ.get("SSL_CERT_DIR"):
        ctx = ssl.create_default_context(capath=os.environ["SSL_CERT_DIR"])
    else:
        ctx = ssl.create_default_context(cafile=certifi.where())
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def timeout_for(config: ConnectionConfig) -> aiohttp.ClientTimeout:
    """``connect``: DNS + TCP + TLS (and, were there a limit, waiting for a free connection);
    ``sock_read``: the longest silence allowed between two reads, from the end of the request to
    the end of the response; no total. aiohttp has no write timeout: ``transport.open_response``
    bounds the write of large bodies itself."""
    connect = float(config.connect_timeout)
    return aiohttp.ClientTimeout(
        total=None, connect=connect, sock_connect=connect, sock_read=float(config.read_timeout)
    )


def env_proxy(origin: str) -> dict[str, Any]:
    """Request options for the environment's proxy of ``origin`` (httpx ``trust_env`` rules)."""
    try:
        url = URL(origin)
    except (TypeError, ValueError):
        return {}
    proxies = getproxies()
    host = url.host or ""
    if not host or proxies.get("no", "").strip() == "*" or proxy_bypass_environment(host, proxies):
        return {}
    proxy = proxies.get(url.scheme) or proxies.get("all")
    if not proxy:
        return {}
    purl = URL(proxy if "://" in proxy else f"http://{proxy}")
    options: dict[str, Any] = {"proxy": purl.with_user(None)}
    if purl.user is not None:
        options["proxy_headers"] = {"proxy-authorization": aiohttp.encode_basic_auth(purl.user, purl.password or "")}
    return options


def build_session(config: ConnectionConfig) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        ssl=_ssl_context(),
        limit=MAX_CONNECTIONS,
        limit_per_host=0,
        keepalive_timeout=KEEPALIVE_EXPIRY,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout_for(config),
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=True,  # gzip/deflate, as httpx
        trust_env=False,  # see env_proxy
    )


class ClientPool:
    """The ``aiohttp.ClientSession`` of one connection setting on one loop (opened on first lease)."""

    __slots__ = ("_config", "in_flight", "request_options", "session")

    def __init__(self, config: ConnectionConfig) -> None:
        self._config = config
        self.session: aiohttp.ClientSession | None = None
        self.in_flight = 0
        # proxy options for every request of this origin
        self.request_options: dict[str, Any] = env_proxy(pool_key(config)[0])

    def get(self) -> aiohttp.ClientSession:
        session = self.session
        if session is None or session.closed:
            session = self.session = build_session(self._config)
        return session

    @asynccontextmanager
    async def lease(self) -> AsyncIterator[aiohttp.ClientSession]:
        session = self.get()
        self.in_flight += 1
        try:
            yield session
        finally:
            self.in_flight -= 1

    async def aclose(self) -> None:
        session, self.session = self.session, None
        if session is not None:
            await session.close()

    def abandon(self) -> None:
        """Forget the session of a loop that closed without :func:`aclose_clients` (nothing can be
        awaited there any more): mark it closed so that aiohttp does not log "Unclosed client
        session" / "Unclosed connector" when it is collected. Its sockets are closed when their
        transports are collected, as they were with httpx."""
        session, self.session = self.session, None
        if session is None:
            return
        connector = session.connector
        session.detach()
        if connector is not None:
            with suppress(Exception):
                connector._close()  # on a closed loop: only marks the connector closed


# id(loop) -> (weakref to the loop, pools of that loop)
_registry: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], dict[PoolKey, ClientPool]]] = {}


def _forget(loop_id: int, ref: weakref.ref[asyncio.AbstractEventLoop]) -> None:
    entry = _registry.get(loop_id)
    if entry is not None and entry[0] is ref:
        del _registry[loop_id]
        _abandon(entry[1])


def _abandon(pools: dict[PoolKey, ClientPool]) -> None:
    for pool in pools.values():
        pool.abandon()


@atexit.register
def _abandon_closed_loops() -> None:
    """At exit, quietly forget the sessions of loops that are no longer running."""
    for loop_id, (ref, pools) in list(_registry.items()):
        loop = ref()
        if loop is None or loop.is_closed() or not loop.is_running():
            _registry.pop(loop_id, None)
            _abandon(pools)


def _loop_pools() -> dict[PoolKey, ClientPool]:
    loop = asyncio.get_running_loop()
    entry = _registry.get(id(loop))
    if entry is not None and entry[0]() is loop:
        return entry[1]
    # New loop (or an id reused after the old loop died): drop closed loops' entries.
    for loop_id, (ref, old_pools) in list(_registry.items()):
        old = ref()
        if old is None or old.is_closed():
            _registry.pop(loop_id, None)
            _abandon(old_pools)
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
    """Close every session of the running loop (shutdown / test teardown)."""
    loop = asyncio.get_running_loop()
    entry = _registry.pop(id(loop), None)
    if entry is None or entry[0]() is not loop:
        return
    for pool in list(entry[1].values()):
        await pool.aclose()
