"""Statements run on the event loop: a few PostgreSQL connections per loop, in autocommit, for the hot
path's one-statement writes (a generation's hold and its settlement).

The rest of the code reaches the database through Django's ORM on the database threads
(`apps.core.db.db_sync_to_async`). For a step that is one statement, the thread costs more than the
statement: the hop there and back, a connection checked out of the pool, and under concurrency the
threads and the event loop handing the GIL to each other (`bench/profile.py --perf`: a fifth of the
service's CPU at 16 clients went to futex calls). Here the statement goes out on an asynchronous
psycopg connection owned by the running loop instead — built from Django's settings for the default
database (host, credentials, options, type adapters; server-side binding and statements prepared
after `prepare_threshold` runs, or neither when `DATABASE_PREPARED_STATEMENTS` is off, as Django's own
connections) — and the caller awaits its first row.

`enabled()` says whether this path is on: PostgreSQL with `DATABASE_ASYNC_STATEMENTS` (default on).
Errors are Django's database exceptions (`django.db.utils`), as on the threads. A connection that
failed is dropped; the next statement opens another. At most `DATABASE_ASYNC_POOL_SIZE` connections per
loop; a statement waits for a free one beyond that.
"""

from __future__ import annotations

import asyncio
import weakref
from collections import deque
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections

from apps.core.db import Statement, prep_connection

try:
    import psycopg
except ImportError:  # pragma: no cover - a SQLite-only install
    psycopg = None  # type: ignore[assignment]


APPLICATION_NAME = "writing-service hot path"  # how these connections show in pg_stat_activity


def enabled() -> bool:
    """Whether the hot path's one-statement steps run on the event loop (PostgreSQL only)."""
    return psycopg is not None and settings.IS_POSTGRES and settings.DATABASE_ASYNC_STATEMENTS


class _Conn:
    """A connection and a cursor per statement text, each given the same text object every time: psycopg
    keeps a cursor's parameter dumpers only while it runs the very same query object again (a hold's 57
    parameters then need no lookup after its first call)."""

    __slots__ = ("conn", "cursors")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.cursors: dict[str, tuple[str, Any]] = {}

    def cursor_for(self, sql: str) -> tuple[str, Any]:
        found = self.cursors.get(sql)
        if found is None:
            if len(self.cursors) >= 64:  # a few texts run here; bounded all the same
                self.cursors.clear()
            found = self.cursors[sql] = (sql, self.conn.cursor())
        return found

    @property
    def usable(self) -> bool:
        return not self.conn.closed and self.conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


class _Pool:
    """The connections of one event loop: idle ones in a deque, at most `size` open, callers waiting
    for one served first come, first served."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.idle: deque[_Conn] = deque()
        self.open = 0
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def take(self) -> _Conn:
        while True:
            while self.idle:
                conn = self.idle.pop()
                if not conn.conn.closed:
                    return conn
                self.open -= 1
            if self.open < self.size:
                self.open += 1
                try:
                    return _Conn(await _connect())
                except BaseException:
                    self.open -= 1
                    self._wake()
                    raise
            freed = asyncio.get_running_loop().create_future()
            self.waiting.append(freed)
            try:
                await freed
            except asyncio.CancelledError:
                if freed.done() and not freed.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                raise

    def give_back(self, conn: _Conn) -> None:
        if conn.usable:
            self.idle.append(conn)
        else:
            self.open -= 1
            conn.conn.pgconn.finish()  # closed, or left inside a transaction: never reused
        self._wake()

    def _wake(self) -> None:
        while self.waiting:
            freed = self.waiting.popleft()
            if not freed.done():
                freed.set_result(None)
                return

    def close_idle(self) -> None:
        while self.idle:
            self.open -= 1
            self.idle.pop().conn.pgconn.finish()  # what `AsyncConnection.close()` does, without the loop


_pools: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Pool] = weakref.WeakKeyDictionary()


async def _connect() -> Any:
    """A connection as Django would open it for the default database, asynchronous and in autocommit."""
    db = connections[DEFAULT_DB_ALIAS]
    params = db.get_connection_params()
    params.pop("cursor_factory", None)  # Django's synchronous cursor classes
    if db.settings_dict["OPTIONS"].get("server_side_binding") is not True:  # DATABASE_PREPARED_STATEMENTS off
        params["cursor_factory"] = psycopg.AsyncClientCursor  # as Django then: values bound in the client,
        params["prepare_threshold"] = None  # and nothing prepared (a pooler in transaction mode)
    params.setdefault("application_name", APPLICATION_NAME)
    conn = await psycopg.AsyncConnection.connect(**params, autocommit=True)
    if db.timezone_name:
        await conn.execute("SELECT set_config('TimeZone', %s, false)", [db.timezone_name])
    return conn


def _pool() -> _Pool:
    loop = asyncio.get_running_loop()
    pool = _pools.get(loop)
    if pool is None:
        pool = _pools[loop] = _Pool(settings.DATABASE_ASYNC_POOL_SIZE)
    return pool


async def fetchone(statement: Statement) -> tuple[Any, ...] | None:
    """Run one statement in autocommit on this loop's connections; its first row (None: no row, or a
    statement that answers none).

    A connection found broken (the server restarted, or closed it while it was idle) is dropped with
    the idle ones, and the statement sent once more on a new connection. That is safe for the
    statements run here even when the first try did commit: each writes rows keyed by a generation id —
    a hold, a charge — that the database keeps unique, so a repeat either fails on the key or finds the
    hold no longer active."""
    sql, params = statement
    pool = _pool()
    with prep_connection().wrap_database_errors:  # psycopg's errors as Django's, as on the threads
        for retry in (False, True):
            conn = await pool.take()
            try:
                text, cursor = conn.cursor_for(sql)
                await cursor.execute(text, params)
                return None if cursor.description is None else await cursor.fetchone()
            except psycopg.OperationalError:
                if retry or not conn.conn.broken:
                    raise
                pool.close_idle()  # the server went away for one: likely for all, so the retry connects anew
            finally:
                pool.give_back(conn)
    raise AssertionError("unreachable")  # pragma: no cover


def close_ended() -> None:
    """Close the connections of event loops that have ended (a test server's; a loop that runs until
    the process exits needs nothing: the server sees its connections close then)."""
    for loop, pool in list(_pools.items()):
        if loop.is_closed():
            pool.close_idle()
            _pools.pop(loop, None)
