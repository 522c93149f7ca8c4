"""Running synchronous ORM work from async code."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

from asgiref.sync import sync_to_async
from django.db import close_old_connections


def db_sync_to_async[**P, R](fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """`sync_to_async(fn)` that hands its database connection back as soon as `fn` returns.

    A streaming response can last minutes; without this, the connection opened for the steps before
    the stream would stay checked out of the pool until the response ends, and a few hundred open
    streams would exhaust it. With `CONN_MAX_AGE=0`, closing returns the connection to psycopg's pool.
    """

    @functools.wraps(fn)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    return sync_to_async(run)
