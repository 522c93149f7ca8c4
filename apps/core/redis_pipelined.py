"""One pipelined Redis connection per event loop, for the hot path's short commands (the concurrency
slots: a script call takes a lease, a `ZREM` gives it back).

redis-py's asyncio client checks a connection out of a pool for every command — a condition variable,
observability hooks, a timeout scope around each read — which costs ~150 µs of CPU per command here,
more under concurrency (`bench/profile.py`: the slot's two commands were 0.5–1 ms of a generation
call's CPU). RESP answers in order on one connection, so the commands of any number of coroutines can
share it: each writes its command and gets a future; the answers, parsed by hiredis, resolve the
futures first in, first out. A command that waits longer than `timeout` fails the connection (every
command waiting on it gets `redis.TimeoutError`), a closed connection fails its waiting commands with
`redis.ConnectionError`; the next command connects again.

Not for blocking commands (`XREAD BLOCK`, `BLPOP`: every command behind them would wait), pub/sub or
`MULTI`: those stay on redis-py. Failures are redis-py's exceptions, so callers handle both alike.
No Django.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import ssl
import weakref
from collections import deque
from typing import Any

import hiredis
import redis
from redis.connection import SSLConnection, UnixDomainSocketConnection, parse_url
from redis.exceptions import NoScriptError

logger = logging.getLogger("apps.core.redis_pipelined")


class Script:
    """A Lua script run by its SHA1 (`EVALSHA`); its text is sent only when Redis does not know it."""

    __slots__ = ("sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def pack(args: tuple[Any, ...]) -> bytes:
    """One command as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int | float) and not isinstance(arg, bool):
            data = repr(arg).encode()
        else:
            raise TypeError(f"cannot send a {type(arg).__name__} to Redis")
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reply_error(reply: hiredis.ReplyError) -> redis.ResponseError:
    message = str(reply)
    return NoScriptError(message) if message.startswith("NOSCRIPT") else redis.ResponseError(message)


class _Connection(asyncio.Protocol):
    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self.timeout = timeout
        self.reader = hiredis.Reader()
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()
        self.transport: asyncio.Transport | None = None
        self.open = False
        self._watch: asyncio.TimerHandle | None = None
        self._unsent: list[bytes] | None = None  # commands of this turn of the loop, written at its end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.open = True

    def data_received(self, data: bytes) -> None:
        self.reader.feed(data)
        try:
            while (reply := self.reader.gets()) is not False:
                future, _sent = self.waiting.popleft()
                if future.done():  # its caller was cancelled; the answer is still consumed in order
                    continue
                if isinstance(reply, hiredis.ReplyError):
                    future.set_exception(_reply_error(reply))
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or an answer nobody asked for
            self.fail(redis.ConnectionError(f"Redis protocol error: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(redis.ConnectionError(f"Redis closed the connection{f': {exc}' if exc else ''}"))

    def send(self, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        if not self.open or self.transport is None:
            raise redis.ConnectionError("Redis connection is closed")
        future = self.loop.create_future()
        self.waiting.append((future, self.loop.time()))
        if self._unsent is None:
            self._unsent = [pack(args)]
            self.loop.call_soon(self._flush)
        else:
            self._unsent.append(pack(args))
        if self._watch is None:
            self._watch = self.loop.call_later(self.timeout, self._check)
        return future

    def _flush(self) -> None:
        """The commands sent since the last flush in one write: under load, several requests' commands
        share one system call (each is a round trip through the kernel that wakes Redis)."""
        unsent, self._unsent = self._unsent, None
        if unsent and self.transport is not None:
            self.transport.write(unsent[0] if len(unsent) == 1 else b"".join(unsent))

    def _check(self) -> None:
        """The oldest waiting command's age: past `timeout`, the connection is given up."""
        self._watch = None
        if not self.waiting:
            return
        age = self.loop.time() - self.waiting[0][1]
        if age >= self.timeout:
            self.fail(redis.TimeoutError(f"no answer from Redis within {self.timeout} s"))
            return
        self._watch = self.loop.call_later(self.timeout - age, self._check)

    def fail(self, exc: Exception) -> None:
        self.open = False
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        while self.waiting:
            future, _sent = self.waiting.popleft()
            if not future.done():
                future.set_exception(exc)
        if self.transport is not None:
            transport, self.transport = self.transport, None
            transport.abort()


def _tls_context(options: dict[str, Any]) -> ssl.SSLContext:
    """The TLS settings of a `rediss://` URL, as redis-py reads them (`ssl_ca_certs`, `ssl_certfile`,
    `ssl_keyfile`, `ssl_cert_reqs`, `ssl_check_hostname`)."""
    context = ssl.create_default_context(cafile=options.get("ssl_ca_certs"))
    if options.get("ssl_certfile"):
        context.load_cert_chain(options["ssl_certfile"], options.get("ssl_keyfile"))
    if options.get("ssl_check_hostname") is False:
        context.check_hostname = False
    if options.get("ssl_cert_reqs") in {"none", ssl.CERT_NONE}:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _consume(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and (exc := future.exception()) is not None:
        logger.debug("Redis command sent without waiting failed: %s", exc)


class PipelinedRedis:
    """Commands of any number of coroutines on one connection (see the module's docstring). One per
    event loop: the connection belongs to the loop that opened it."""

    def __init__(self, url: str, *, connect_timeout: float = 1.0, timeout: float = 2.0) -> None:
        options = parse_url(url)
        self.url = url
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self._host = options.get("host", "localhost")
        self._port = int(options.get("port", 6379))
        self._path = options.get("path") if options.get("connection_class") is UnixDomainSocketConnection else None
        self._db = int(options.get("db", 0))
        self._username = options.get("username")
        self._password = options.get("password")
        self._ssl = _tls_context(options) if options.get("connection_class") is SSLConnection else None
        self._connection: _Connection | None = None
        self._connecting: asyncio.Task[_Connection] | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    async def execute(self, *args: Any) -> Any:
        connection = self._connection
        if connection is None or not connection.open:
            connection = await self._ready()
        return await connection.send(args)

    def execute_nowait(self, *args: Any) -> None:
        """Send a command whose answer nobody waits for (a failure is logged at DEBUG)."""
        connection = self._connection
        if connection is not None and connection.open:
            connection.send(args).add_done_callback(_consume)
            return
        task = asyncio.get_running_loop().create_task(self.execute(*args))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        task.add_done_callback(_consume)

    async def run_script(self, script: Script, keys: list[Any], args: list[Any]) -> Any:
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:  # Redis restarted or flushed its scripts: EVAL also caches it again
            return await self.execute("EVAL", script.text, len(keys), *keys, *args)

    def close(self) -> None:
        if self._connection is not None:
            self._connection.fail(redis.ConnectionError("closed"))
            self._connection = None

    async def _ready(self) -> _Connection:
        task = self._connecting
        if task is None or task.done():
            task = self._connecting = asyncio.get_running_loop().create_task(self._connect())
        return await asyncio.shield(task)

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()

        def protocol() -> _Connection:
            return _Connection(loop, self.timeout)

        try:
            async with asyncio.timeout(self.connect_timeout):
                if self._path:
                    _transport, connection = await loop.create_unix_connection(protocol, self._path)
                else:
                    _transport, connection = await loop.create_connection(
                        protocol, self._host, self._port, ssl=self._ssl
                    )
                try:
                    if self._password:
                        auth = ("AUTH", self._username, self._password) if self._username else ("AUTH", self._password)
                        await connection.send(auth)
                    if self._db:
                        await connection.send(("SELECT", self._db))
                except BaseException:
                    connection.fail(redis.ConnectionError("Redis connection set-up failed"))
                    raise
        except TimeoutError:
            raise redis.TimeoutError(f"Timeout connecting to Redis at {self._where()}") from None
        except OSError as exc:
            raise redis.ConnectionError(f"Error connecting to Redis at {self._where()}: {exc}") from None
        self._connection = connection
        return connection

    def _where(self) -> str:
        return self._path or f"{self._host}:{self._port}"


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, PipelinedRedis]] = weakref.WeakKeyDictionary()


def for_loop(url: str) -> PipelinedRedis:
    """The running loop's pipelined connection to `url` (one per loop and URL)."""
    clients = _per_loop.setdefault(asyncio.get_running_loop(), {})
    client = clients.get(url)
    if client is None:
        client = clients[url] = PipelinedRedis(url, connect_timeout=1, timeout=2)
    return client
