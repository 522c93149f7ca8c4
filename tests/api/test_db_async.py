"""`apps.core.db_async`: statements on the event loop's own PostgreSQL connections."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from django.db import connection
from django.db.utils import DataError, IntegrityError

from apps.core import db_async

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def run(coro: Any) -> Any:
    try:
        return asyncio.run(coro)
    finally:
        db_async.close_ended()


def test_a_statement_answers_its_first_row_or_none():
    async def go() -> tuple[Any, Any]:
        return await db_async.fetchone(("SELECT %s::int + 1, %s::text", [41, "x"])), await db_async.fetchone(
            ("SELECT 1 WHERE false", [])
        )

    assert run(go()) == ((42, "x"), None)


def test_errors_are_djangos_and_the_connection_stays_usable():
    async def go() -> Any:
        with pytest.raises(DataError):
            await db_async.fetchone(("SELECT 1 / %s::int", [0]))
        await db_async.fetchone(("CREATE TEMP TABLE t (k int PRIMARY KEY)", []))  # on the pool's one connection
        await db_async.fetchone(("INSERT INTO t VALUES (1)", []))
        with pytest.raises(IntegrityError):
            await db_async.fetchone(("INSERT INTO t VALUES (1)", []))
        return await db_async.fetchone(("SELECT count(*) FROM t", []))

    assert run(go()) == (1,)


def test_at_most_the_pool_size_of_connections_per_loop(settings):
    settings.DATABASE_ASYNC_POOL_SIZE = 2

    async def go() -> int:
        rows = await asyncio.gather(
            *(db_async.fetchone(("SELECT pg_backend_pid() FROM pg_sleep(0.05)", [])) for _ in range(8))
        )
        return len({row[0] for row in rows})

    assert run(go()) == 2


def test_connections_of_an_ended_loop_are_closed():
    def session_open(pid: int) -> bool:  # this loop's own session (other tests' servers may have theirs)
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND application_name = %s",
                [pid, db_async.APPLICATION_NAME],
            )
            return cursor.fetchone()[0] == 1

    loop = asyncio.new_event_loop()  # kept: a server's loop outlives its last request
    (pid,) = loop.run_until_complete(db_async.fetchone(("SELECT pg_backend_pid()", [])))
    loop.close()
    assert session_open(pid)
    db_async.close_ended()
    for _ in range(50):  # the server ends the session a moment later
        if not session_open(pid):
            break
        asyncio.run(asyncio.sleep(0.02))
    assert not session_open(pid)


def test_a_caller_cancelled_while_waiting_for_a_connection_takes_nothing_with_it(settings):
    settings.DATABASE_ASYNC_POOL_SIZE = 1

    async def go() -> Any:
        busy = asyncio.ensure_future(db_async.fetchone(("SELECT 1 FROM pg_sleep(0.1)", [])))
        await asyncio.sleep(0.02)
        waiter = asyncio.ensure_future(db_async.fetchone(("SELECT 2", [])))
        await asyncio.sleep(0.01)
        waiter.cancel()
        after = asyncio.ensure_future(db_async.fetchone(("SELECT 3", [])))
        return await busy, await asyncio.wait_for(after, 2), waiter.cancelled()

    assert run(go()) == ((1,), (3,), True)


@pytest.mark.parametrize("server_side", [True, False])
def test_statements_are_prepared_only_where_djangos_are(monkeypatch, server_side):
    """`DATABASE_PREPARED_STATEMENTS=false` (a pooler that cannot keep them): the loop's connections bind
    in the client and prepare nothing, as Django's own connections then."""
    monkeypatch.setitem(connection.settings_dict["OPTIONS"], "server_side_binding", server_side)

    async def go() -> int:
        for _ in range(8):
            await db_async.fetchone(("SELECT %s::int", [1]))
        row = await db_async.fetchone(("SELECT count(*) FROM pg_prepared_statements", []))
        return row[0]

    assert (run(go()) > 0) is server_side
