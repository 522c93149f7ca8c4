"""The event log of a job: every SSE payload its worker produced, in order, with ids readers resume from.

Two implementations of one interface:

* `RedisEventLog` — a Redis stream per job (`XADD`; ids are the stream's, `<ms>-<seq>`), shared by
  the workers that write and the web processes that read; it expires `GENERATION_JOB_TTL_SECONDS`
  after the job's end.
* `MemoryEventLog` — the embedded default without `REDIS_URL`: jobs run in the server process and
  their events stay in its memory (same ids, same expiry). Thread-safe: the runner's loop writes, the
  server's loop reads.

An entry holds the event's `data` text (a JSON object, or `[DONE]` last) and, on the first text of
a job, the model that wrote it (`model`, used by recovery after a worker died: it settles exactly
what was delivered, priced on that model). No Django imports: the settings are passed in.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

DONE = "[DONE]"
EVENT_ID = re.compile(r"\A\d{1,20}-\d{1,20}\Z")
START = "0-0"


class EventLogUnavailable(Exception):
    """The event log cannot be reached (Redis down): no job can be started or followed."""


@dataclass(frozen=True, slots=True)
class Entry:
    id: str
    data: str
    model: str = ""

    @property
    def done(self) -> bool:
        return self.data == DONE


def valid_event_id(value: str) -> bool:
    return bool(EVENT_ID.match(value))


def _key(job_id: str) -> str:
    return f"ws:job:{job_id}"


def _order(event_id: str) -> tuple[int, int]:
    ms, _, seq = event_id.partition("-")
    return int(ms), int(seq or 0)


class EventLog(Protocol):
    def ping(self) -> None: ...
    def open(self, job_id: str, *, ttl: int) -> None: ...
    def append(self, job_id: str, data: str, *, model: str = "", ttl: int) -> str: ...
    def entries(self, job_id: str, after: str = START) -> list[Entry]: ...
    def last(self, job_id: str) -> Entry | None: ...
    def exists(self, job_id: str) -> bool: ...
    def expire(self, job_id: str, ttl: int) -> None: ...
    async def aappend(self, job_id: str, data: str, *, model: str = "", ttl: int | None) -> str: ...
    async def aread(self, job_id: str, after: str, *, block: float) -> list[Entry]: ...
    async def aexists(self, job_id: str) -> bool: ...


# --------------------------------------------------------------------------------------- Redis


def _entries(raw: Any) -> list[Entry]:
    out = []
    for event_id, fields in raw or ():
        values = {_text(k): _text(v) for k, v in fields.items()}
        out.append(Entry(_text(event_id), values.get("data", ""), values.get("model", "")))
    return out


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisEventLog:
    """A Redis stream per job. Synchronous calls (services, recovery) use one client per process;
    asynchronous ones (the runner, readers) one client per event loop."""

    BATCH = 500

    def __init__(self, url: str, *, max_connections: int = 1000) -> None:
        import redis

        self.url = url
        self.max_connections = max_connections
        self._sync = redis.Redis(
            connection_pool=redis.BlockingConnectionPool.from_url(
                url, max_connections=100, timeout=5, socket_connect_timeout=1, socket_timeout=5
            )
        )
        self._async: dict[asyncio.AbstractEventLoop, Any] = {}
        self._lock = threading.Lock()

    def _aclient(self) -> Any:
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._async.get(loop)
        if client is None:
            with self._lock:
                for stale in [other for other in self._async if other.is_closed()]:
                    del self._async[stale]
                # Each waiting reader holds a connection (XREAD BLOCK, up to the ping interval: the socket
                # waits a little longer); past `max_connections` callers wait for one instead of failing.
                pool = aioredis.BlockingConnectionPool.from_url(
                    self.url,
                    max_connections=self.max_connections,
                    timeout=10,
                    socket_connect_timeout=1,
                    socket_timeout=60,
                    health_check_interval=30,
                )
                client = self._async[loop] = aioredis.Redis(connection_pool=pool)
        return client

    def _guard(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return call(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise EventLogUnavailable(str(exc)) from exc

    async def _aguard(self, call: Any, *args: Any, **kwargs: Any) -> Any:
        import redis

        try:
            return await call(*args, **kwargs)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise EventLogUnavailable(str(exc)) from exc

    @staticmethod
    def _fields(data: str, model: str) -> dict[Any, Any]:
        return {"data": data, "model": model} if model else {"data": data}

    def ping(self) -> None:
        self._guard(self._sync.ping)

    def open(self, job_id: str, *, ttl: int) -> None:
        """Nothing to do: a stream exists from its first entry, and readers may wait on it before."""

    def append(self, job_id: str, data: str, *, model: str = "", ttl: int) -> str:
        pipe = self._sync.pipeline(transaction=False)
        pipe.xadd(_key(job_id), self._fields(data, model))
        pipe.expire(_key(job_id), ttl)
        event_id, _ = self._guard(pipe.execute)
        return _text(event_id)

    def entries(self, job_id: str, after: str = START) -> list[Entry]:
        out: list[Entry] = []
        while True:
            batch = _entries(self._guard(self._sync.xrange, _key(job_id), f"({after}", "+", count=self.BATCH))
            out += batch
            if len(batch) < self.BATCH:
                return out
            after = batch[-1].id

    def last(self, job_id: str) -> Entry | None:
        found = _entries(self._guard(self._sync.xrevrange, _key(job_id), "+", "-", count=1))
        return found[0] if found else None

    def exists(self, job_id: str) -> bool:
        return bool(self._guard(self._sync.exists, _key(job_id)))

    def expire(self, job_id: str, ttl: int) -> None:
        self._guard(self._sync.expire, _key(job_id), ttl)

    async def aappend(self, job_id: str, data: str, *, model: str = "", ttl: int | None) -> str:
        """Append one event; `ttl` (re)sets the stream's expiry — the writer gives it with its first and
        last events only, so that each delta in between is a single `XADD`."""
        if ttl is None:
            return _text(await self._aguard(self._aclient().xadd, _key(job_id), self._fields(data, model)))
        pipe = self._aclient().pipeline(transaction=False)
        pipe.xadd(_key(job_id), self._fields(data, model))
        pipe.expire(_key(job_id), ttl)
        event_id, _ = await self._aguard(pipe.execute)
        return _text(event_id)

    async def aread(self, job_id: str, after: str, *, block: float) -> list[Entry]:
        """The entries after `after`, waiting up to `block` seconds for the first one."""
        found = await self._aguard(
            self._aclient().xread, {_key(job_id): after}, count=self.BATCH, block=max(1, int(block * 1000))
        )
        return _entries(found[0][1]) if found else []

    async def aexists(self, job_id: str) -> bool:
        return bool(await self._aguard(self._aclient().exists, _key(job_id)))


# --------------------------------------------------------------------------------------- memory


@dataclass
class _Stream:
    entries: list[Entry] = field(default_factory=list)
    expires_at: float = 0.0
    waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = field(default_factory=list)


class MemoryEventLog:
    """The same log in this process's memory (no Redis): for the embedded default, where jobs run in
    the server process. Ids count up per job (`1-0`, `2-0`, …)."""

    def __init__(self, clock: Any = time.monotonic) -> None:
        self._streams: dict[str, _Stream] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def _live(self, job_id: str) -> _Stream | None:
        now = self._clock()
        for stale in [k for k, s in self._streams.items() if s.expires_at <= now]:
            del self._streams[stale]
        return self._streams.get(job_id)

    def ping(self) -> None:
        return None

    def open(self, job_id: str, *, ttl: int) -> None:
        """Create the job's (empty) stream, so that readers can wait on it before its first event."""
        with self._lock:
            if self._live(job_id) is None:
                self._streams[job_id] = _Stream(expires_at=self._clock() + ttl)

    def append(self, job_id: str, data: str, *, model: str = "", ttl: int) -> str:
        with self._lock:
            stream = self._live(job_id)
            if stream is None:
                stream = self._streams[job_id] = _Stream()
            event_id = f"{len(stream.entries) + 1}-0"
            stream.entries.append(Entry(event_id, data, model))
            stream.expires_at = self._clock() + ttl
            waiters, stream.waiters = stream.waiters, []
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)
        return event_id

    def entries(self, job_id: str, after: str = START) -> list[Entry]:
        with self._lock:
            stream = self._live(job_id)
            if stream is None:
                return []
            return self._after(stream, after)

    def last(self, job_id: str) -> Entry | None:
        with self._lock:
            stream = self._live(job_id)
            return stream.entries[-1] if stream is not None and stream.entries else None

    @staticmethod
    def _after(stream: _Stream, after: str) -> list[Entry]:
        mark = _order(after)
        return [e for e in stream.entries if _order(e.id) > mark]

    def exists(self, job_id: str) -> bool:
        with self._lock:
            return self._live(job_id) is not None

    def expire(self, job_id: str, ttl: int) -> None:
        with self._lock:
            stream = self._live(job_id)
            if stream is not None:
                stream.expires_at = self._clock() + ttl

    async def aappend(self, job_id: str, data: str, *, model: str = "", ttl: int | None) -> str:
        with self._lock:
            stream = self._live(job_id)
            keep = ttl if ttl is not None else (max(0.0, stream.expires_at - self._clock()) if stream else 3600)
        return self.append(job_id, data, model=model, ttl=int(keep) + 1 if ttl is None else ttl)

    async def aread(self, job_id: str, after: str, *, block: float) -> list[Entry]:
        loop, event = asyncio.get_running_loop(), asyncio.Event()
        with self._lock:
            stream = self._live(job_id)
            found = self._after(stream, after) if stream is not None else []
            if stream is not None and not found:
                stream.waiters.append((loop, event))
        if stream is None:  # gone (expired) or never opened: nothing will come
            await asyncio.sleep(min(block, 1.0))
            return []
        if found:
            return found
        try:
            await asyncio.wait_for(event.wait(), block)
        except TimeoutError:
            with self._lock:
                if (loop, event) in stream.waiters:
                    stream.waiters.remove((loop, event))
            return []
        return self.entries(job_id, after)

    async def aexists(self, job_id: str) -> bool:
        return self.exists(job_id)
