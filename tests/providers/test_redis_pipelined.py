"""`apps.core.redis_pipelined`: many coroutines' commands on one connection, answered in order; Redis's
errors, a restart (scripts gone), a killed connection, an unreachable server and one that never answers
all end in redis-py's exceptions — and the next command works again."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl

import pytest
import redis

from apps.core.redis_pipelined import PipelinedRedis, Script, pack

REDIS_URL = os.environ.get("REDIS_URL", "")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="needs a real Redis (REDIS_URL)")


def test_pack_writes_resp_bulk_strings():
    assert (
        pack(("SET", "k", 1, 2.5, b"\x00")) == b"*5\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n$3\r\n2.5\r\n$1\r\n\x00\r\n"
    )
    with pytest.raises(TypeError):
        pack(("SET", None))


@pytest.fixture
def sync_redis():
    client = redis.Redis.from_url(REDIS_URL)
    yield client
    client.close()


@needs_redis
async def test_concurrent_commands_get_their_own_answers(sync_redis):
    client = PipelinedRedis(REDIS_URL)
    await asyncio.gather(*(client.execute("SET", f"pipelined:{i}", i) for i in range(200)))
    answers = await asyncio.gather(*(client.execute("GET", f"pipelined:{i}") for i in range(200)))
    assert answers == [str(i).encode() for i in range(200)]
    # the database of the URL: what it wrote, redis-py reads there
    assert sync_redis.get("pipelined:7") == b"7"
    sync_redis.delete(*(f"pipelined:{i}" for i in range(200)))
    client.close()


@needs_redis
async def test_an_error_reply_raises_and_the_connection_goes_on():
    client = PipelinedRedis(REDIS_URL)
    await client.execute("SET", "pipelined:str", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await client.execute("LPUSH", "pipelined:str", "y")
    assert await client.execute("GET", "pipelined:str") == b"x"
    await client.execute("DEL", "pipelined:str")
    client.close()


@needs_redis
async def test_a_script_is_loaded_again_after_redis_forgot_it(sync_redis):
    client = PipelinedRedis(REDIS_URL)
    script = Script("return tonumber(ARGV[1]) + 1")
    assert await client.run_script(script, [], [41]) == 42
    sync_redis.script_flush()
    assert await client.run_script(script, [], [1]) == 2
    assert sync_redis.script_exists(script.sha) == [True]
    client.close()


@needs_redis
async def test_a_killed_connection_fails_its_commands_and_the_next_one_reconnects(sync_redis):
    client = PipelinedRedis(REDIS_URL)
    await client.execute("CLIENT", "SETNAME", "pipelined-test")
    waiting = asyncio.ensure_future(client.execute("BLPOP", "pipelined:never", 5))  # blocks the connection
    await asyncio.sleep(0.1)
    for entry in sync_redis.client_list():
        if entry.get("name") == "pipelined-test":
            sync_redis.client_kill_filter(_id=entry["id"])
    with pytest.raises(redis.ConnectionError):
        await asyncio.wait_for(waiting, 3)
    assert await client.execute("PING") in {b"PONG", "PONG"}
    client.close()


@needs_redis
async def test_a_command_sent_without_waiting_is_carried_out():
    client = PipelinedRedis(REDIS_URL)
    client.execute_nowait("SET", "pipelined:nowait", "done")  # connects first
    for _ in range(100):
        if await client.execute("GET", "pipelined:nowait") == b"done":
            break
        await asyncio.sleep(0.01)
    assert await client.execute("GET", "pipelined:nowait") == b"done"
    client.execute_nowait("DEL", "pipelined:nowait")
    assert await client.execute("EXISTS", "pipelined:nowait") == 0  # in order: the DEL came first
    client.close()


async def test_an_unreachable_server_is_a_connection_error():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", connect_timeout=0.5)
    with pytest.raises(redis.ConnectionError):
        await client.execute("PING")
    client.execute_nowait("PING")  # logged, never raised
    await asyncio.sleep(0.05)


async def test_a_server_that_never_answers_times_out_every_waiting_command():
    accepted: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        with contextlib.suppress(Exception):
            await reader.read(-1)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PipelinedRedis(f"redis://127.0.0.1:{port}/0", timeout=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    results = await asyncio.gather(client.execute("PING"), client.execute("PING"), return_exceptions=True)
    assert all(isinstance(r, redis.TimeoutError) for r in results), results
    assert loop.time() - started < 2
    server.close()
    for writer in accepted:
        writer.close()


async def test_the_commands_of_one_turn_of_the_loop_go_out_in_one_write():
    # given a server that answers every PING, and a connection whose writes are counted
    ping = pack(("PING",))

    async def pong(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffered = b""
        while data := await reader.read(65536):
            buffered += data
            answered = buffered.count(ping)
            buffered = buffered[answered * len(ping) :]
            writer.write(b"+PONG\r\n" * answered)

    server = await asyncio.start_server(pong, "127.0.0.1", 0)
    client = PipelinedRedis(f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0")
    assert await client.execute("PING") == b"PONG"  # connected
    connection = client._connection
    assert connection is not None and connection.transport is not None
    writes: list[bytes] = []
    write = connection.transport.write
    connection.transport.write = lambda data: (writes.append(bytes(data)), write(data))[1]  # type: ignore[method-assign]
    # when ten coroutines send a command in the same turn, and one more comes a turn later
    first = asyncio.gather(*(client.execute("PING") for _ in range(10)))
    client.execute_nowait("PING")
    await asyncio.sleep(0)
    later = client.execute("PING")
    # then each gets its answer, the eleven of the first turn written at once, the later one by itself
    assert await first == [b"PONG"] * 10 and await later == b"PONG"
    assert writes == [ping * 11, ping]
    client.close()
    server.close()


def test_a_tls_url_carries_its_settings():
    client = PipelinedRedis("rediss://user:pw@redis.example:6380/3?ssl_cert_reqs=none")
    assert client._ssl is not None and client._ssl.verify_mode == ssl.CERT_NONE and not client._ssl.check_hostname
    assert (client._host, client._port, client._db, client._username) == ("redis.example", 6380, 3, "user")
    strict = PipelinedRedis("rediss://redis.example:6380/0")
    assert strict._ssl is not None and strict._ssl.verify_mode == ssl.CERT_REQUIRED and strict._ssl.check_hostname
    assert PipelinedRedis("redis://127.0.0.1:6379/0")._ssl is None
