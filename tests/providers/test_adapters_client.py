"""The per-loop pool of aiohttp sessions."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from contextlib import AsyncExitStack

import pytest

from apps.providers.adapters import ConnectionConfig, transport
from apps.providers.adapters import client as client_mod
from apps.providers.adapters.client import ClientPool, aclose_clients, get_pool
from apps.providers.adapters.errors import UpstreamTimeout

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
        t = c.timeout
        assert (t.connect, t.sock_connect, t.sock_read, t.total) == (3, 3, 7, None)
        # no cap on concurrent connections (aiohttp's default is 100); idle ones kept 30 s
        assert (c.connector.limit, c.connector.limit_per_host) == (0, 0)
        assert c.auto_decompress is True
        assert c.trust_env is False  # proxies come from client_mod.env_proxy, once per session
        other = client_mod.build_session(ConnectionConfig(kind="openai", base_url="https://example.com"))
        try:
            assert other.connector._ssl is c.connector._ssl is client_mod._ssl_context()  # one CA load
        finally:
            await other.close()
    await aclose_clients()


async def test_one_session_per_pool_reused_and_reopened() -> None:
    pool = ClientPool(CFG)
    async with AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(pool.lease()) for _ in range(7)]
        assert pool.in_flight == 7
        assert len(set(map(id, sessions))) == 1
    assert pool.in_flight == 0
    first = sessions[0]
    await pool.aclose()
    assert first.closed
    async with pool.lease() as again:
        assert again is not first and not again.closed
    await pool.aclose()


def test_sessions_of_closed_loops_are_dropped_quietly(caplog: pytest.LogCaptureFixture) -> None:
    sessions = []

    async def grab() -> None:
        async with get_pool(CFG).lease() as c:
            sessions.append(c)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(grab())  # no aclose_clients(): the loop closes with the session open
        asyncio.run(grab())  # the next loop forgets it
        assert sessions[0].closed
        del sessions[0]
        gc.collect()
    assert "Unclosed" not in caplog.text
    asyncio.run(aclose_clients())


@pytest.mark.parametrize(
    ("env", "origin", "expected"),
    [
        ({}, "https://api.example.com", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.example.com", "http://proxy:3128"),
        ({"HTTPS_PROXY": "proxy:3128"}, "https://api.example.com", "http://proxy:3128"),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://api.example.com", None),
        ({"ALL_PROXY": "http://proxy:3128"}, "http://api.example.com", "http://proxy:3128"),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "example.com"}, "http://api.example.com", None),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "*"}, "http://api.example.com", None),
        ({"HTTP_PROXY": "http://proxy:3128", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:9", None),
    ],
)
def test_proxy_from_environment(monkeypatch: pytest.MonkeyPatch, env, origin, expected) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    options = client_mod.env_proxy(origin)
    assert (str(options["proxy"]) if options else None) == expected


def test_proxy_credentials_go_in_a_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw@proxy:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    options = client_mod.env_proxy("https://api.example.com")
    assert str(options["proxy"]) == "http://proxy:3128"
    assert options["proxy_headers"] == {"proxy-authorization": "Basic dXNlcjpwdw=="}


async def test_large_body_the_upstream_does_not_read_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    async def never_read_the_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(10)

    server = await asyncio.start_server(never_read_the_body, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    monkeypatch.setattr(transport, "WRITE_TIMEOUT", 0.3)
    config = ConnectionConfig(kind="openai", base_url=f"http://127.0.0.1:{port}/v1", connect_timeout=0.1)
    started = time.monotonic()
    try:
        with pytest.raises(UpstreamTimeout, match="WriteTimeout"):
            await transport.request_json(
                config,
                "POST",
                f"{config.base_url}/chat/completions",
                headers=transport.json_headers(config, {}),
                body={"prompt": "x" * 50_000_000},  # more than the socket buffers hold
                provider="P",
            )
        assert time.monotonic() - started < 5
    finally:
        server.close()
        await aclose_clients()


@pytest.mark.parametrize("n", [0, 1])
async def test_aclose_clients_is_safe(n: int) -> None:
    for _ in range(n):
        get_pool(CFG)
    await aclose_clients()
    await aclose_clients()


async def test_a_keep_alive_connection_the_server_closed_is_replaced_at_once(fake_upstream, provider_clients) -> None:
    """llama.cpp closes the connection after a streamed reply without saying so; the next request, on that
    pooled connection, must not fail (nor wait for the routing's retry and backoff)."""
    from apps.providers.adapters import ChatRequest, get_adapter
    from apps.providers.types import ChatMessage
    from tests.fakes.upstream import Reply

    adapter = get_adapter(ConnectionConfig(kind="openai", base_url=fake_upstream.base_url, api_key="k"))
    request = ChatRequest(messages=(ChatMessage("user", "hi"),), model="m", max_tokens=5, temperature=0.5)
    fake_upstream.script(*[Reply(chunks=[str(i)], close_after=True) for i in range(4)])

    texts = []
    for _ in range(2):
        texts.append("".join([d.content async for d in adapter.stream(request)]))
        texts.append((await adapter.complete(request)).content)

    assert texts == ["0", "1", "2", "3"]
    assert len({r.connection for r in fake_upstream.completion_requests}) == 4
