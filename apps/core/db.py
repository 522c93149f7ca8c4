"""Running synchronous ORM work from async code, and raw statements for the hot paths."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connection, connections, models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Field, Model
from django.db.models.fields import AutoFieldMixin

try:  # asgiref ≥ 3.9 tags a `Local`'s data with its thread (Django's active language, time zone…)
    from asgiref.local import _rehome, _Storage
except ImportError:  # pragma: no cover - older asgiref: the context variables alone carry that data
    _Storage = None  # type: ignore[misc,assignment]  # the optional-import fallback

try:  # PostgreSQL's driver; absent on a SQLite-only install
    from psycopg import _queries as _psycopg_queries
except ImportError:  # pragma: no cover
    _psycopg_queries = None  # type: ignore[assignment]  # the optional-import fallback

# psycopg converts a statement's `%s` placeholders once per statement text (an LRU cache of 128), but
# skips that cache for statements over 4 KiB or 50 parameters, as ORM-built bulk inserts are, whose text
# varies. The hot path's one-statement hold carries the generation record (2.5 KiB, 57 parameters): a
# handful of fixed texts, yet re-parsed on every call (0.1–0.5 ms of CPU). Raising the bounds keeps such
# statements cached; the cache stays bounded (LRU of 128).
if _psycopg_queries is not None:
    _psycopg_queries.MAX_CACHED_STATEMENT_LENGTH = max(_psycopg_queries.MAX_CACHED_STATEMENT_LENGTH, 16 * 1024)
    _psycopg_queries.MAX_CACHED_STATEMENT_PARAMS = max(_psycopg_queries.MAX_CACHED_STATEMENT_PARAMS, 200)


class NeedsThread(SynchronousOnlyOperation):
    """Synchronous code run on the event loop reached a round trip it cannot make there (a cache read that
    was not fetched ahead): its caller redoes the step on the database threads. A database query on the
    loop raises Django's own `SynchronousOnlyOperation`, of which this is a kind."""


_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _threads() -> ThreadPoolExecutor:
    global _executor
    if _executor is None:
        with _executor_lock:
            if _executor is None:
                _executor = ThreadPoolExecutor(max_workers=settings.DB_THREADS, thread_name_prefix="db")
    return _executor


def _adopt_locals() -> None:
    """Make the copied context's asgiref `Local` data (the request's language, time zone) visible in
    this thread, as asgiref's own `sync_to_async` does: newer asgiref hides `Local` data owned by
    another thread."""
    if _Storage is None:
        return
    for var, value in contextvars.copy_context().items():
        if isinstance(value, _Storage):
            var.set(_rehome(value))


def db_sync_to_async[**P, R](fn: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run `fn` — a self-contained step of ORM work — on the database threads, and hand its database
    connection back as soon as it returns.

    A streaming response can last minutes; without the hand-back, the connection opened for the
    steps before the stream would stay checked out of the pool until the response ends, and a few
    hundred open streams would exhaust it. With `CONN_MAX_AGE=0`, closing returns the connection to
    psycopg's pool.

    Not asgiref's `sync_to_async`: each step has its own connection, transaction and cleanup, so it
    needs neither a thread per request (thread-sensitive mode) nor asgiref's bookkeeping — a plain
    pool of `settings.DB_THREADS` threads (the size of the connection pool) with the caller's context
    variables (language, request id) copied in. If the caller is cancelled, the step still runs to
    its end in its thread, as with asgiref.
    """

    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        _adopt_locals()
        try:
            return fn(*args, **kwargs)
        finally:
            close_old_connections()

    @functools.wraps(fn)
    async def step(*args: P.args, **kwargs: P.kwargs) -> R:
        context = contextvars.copy_context()
        call = functools.partial(context.run, run, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(_threads(), call)

    return step


Statement = tuple[str, list[Any]]

_prep: tuple[Any, BaseDatabaseWrapper] | None = None


def prep_connection() -> BaseDatabaseWrapper:
    """A wrapper of the default database for preparing values (`Field.get_db_prep_save`), never
    connected: one per process. `connections[...]` answers one per thread — and on the event loop one
    per task, so each request would build a wrapper (and leave its reference cycles to the collector)
    only to adapt the values of its statements, which depends on the database's vendor alone."""
    global _prep
    config = connections.settings[DEFAULT_DB_ALIAS]
    if _prep is None or _prep[0] is not config:
        _prep = (config, connections.create_connection(DEFAULT_DB_ALIAS))
    return _prep[1]


@functools.cache
def _insert_fields(model: type[Model]) -> tuple[Field, ...]:
    return tuple(f for f in model._meta.concrete_fields if not (f.primary_key and isinstance(f, AutoFieldMixin)))


class Expr(str):
    """SQL written into a statement as it is, not as a parameter: a column of the statement's own rows
    (`Expr("s.amount")` in a one-statement write whose data-modifying CTEs read a CTE `s`). Only ever
    built from constants in the code, never from input."""

    __slots__ = ()


_SAME_WHEN = {models.CharField: str, models.TextField: str, models.BooleanField: bool}
"""Fields (exact classes) whose `get_db_prep_save` gives a value of this exact type back unchanged."""
_INTEGERS = frozenset(
    {
        models.IntegerField,
        models.BigIntegerField,
        models.SmallIntegerField,
        models.PositiveIntegerField,
        models.PositiveBigIntegerField,
        models.PositiveSmallIntegerField,
    }
)
_AUTOS = frozenset({models.AutoField, models.BigAutoField, models.SmallAutoField})


@functools.lru_cache(maxsize=1024)
def _preparer(field: Field, db: BaseDatabaseWrapper) -> Callable[[Any], Any]:
    """`field.get_db_prep_save(value, db)`, the common cases without Django's chain of calls (five per
    value; a generation's two statements prepare some 50): `None`, a `str` for a text field, a `bool`
    for a boolean one are themselves; an `int` for an integer field (or a key to one) is what the backend
    makes of it, as Django's chain ends (`adapt_integerfield_value`: psycopg's sized integer types;
    `validate_autopk_value` for an automatic key). Anything else goes through Django."""
    slow = functools.partial(field.get_db_prep_save, connection=db)
    target = field.target_field if isinstance(field, models.ForeignKey) else field
    kind = type(target)
    if kind in _INTEGERS or kind in _AUTOS:
        if kind in _AUTOS:
            adapt: Callable[[int], Any] = db.ops.validate_autopk_value
        else:
            adapt = functools.partial(db.ops.adapt_integerfield_value, internal_type=target.get_internal_type())

        def integer(value: Any) -> Any:
            if value is None:
                return None
            return adapt(value) if type(value) is int else slow(value)

        return integer
    same = _SAME_WHEN.get(kind) if target is field else None
    if same is None:
        return slow

    def plain(value: Any) -> Any:
        return value if value is None or type(value) is same else slow(value)

    return plain


def _value_sql(field: Field, value: Any, params: list[Any], db: BaseDatabaseWrapper) -> str:
    if isinstance(value, Expr):
        return str(value)
    params.append(_preparer(field, db)(value))
    return "%s"


class _InsertPlan(NamedTuple):
    head: str  # INSERT INTO table (columns)
    fields: tuple[Field, ...]
    defaults: tuple[Any, ...]  # per field: its prepared constant default, or _CALL (called per row)
    shapes: dict[tuple[Any, ...], _InsertShape]  # per shape of the values given (see `_insert_shape`)


class _InsertShape(NamedTuple):
    """An insert of one set of given names (and `Expr` texts): its placeholders written once, its
    parameters a copy of `template` with the given values and the callable defaults filled in."""

    placeholders: str
    template: list[Any]
    given: tuple[tuple[int, str, Callable[[Any], Any]], ...]  # parameter index, attname, preparer
    called: tuple[tuple[int, Field, Callable[[Any], Any]], ...]  # parameter index, field, preparer


_CALL = object()


@functools.cache
def _insert_plan(model: type[Model], vendor: str) -> _InsertPlan:
    """What every insert of `model` shares: the column list, and the defaults that are constants already
    prepared for the database (a generation record has 36 columns; most calls give a third of them)."""
    fields = _insert_fields(model)
    qn = connection.ops.quote_name
    columns = ", ".join(qn(f.column) for f in fields)  # type: ignore[arg-type]  # concrete fields have a column
    defaults = tuple(
        _CALL if f.has_default() and callable(f.default) else f.get_db_prep_save(f.get_default(), connection)
        for f in fields
    )
    return _InsertPlan(f"INSERT INTO {qn(model._meta.db_table)} ({columns})", fields, defaults, {})


def _insert_shape(plan: _InsertPlan, key: tuple[Any, ...], db: BaseDatabaseWrapper) -> _InsertShape:
    exprs = dict(key)  # attname -> its Expr, or None: a parameter
    sql: list[str] = []
    template: list[Any] = []
    given: list[tuple[int, str, Callable[[Any], Any]]] = []
    called: list[tuple[int, Field, Callable[[Any], Any]]] = []
    for field, default in zip(plan.fields, plan.defaults, strict=True):
        name = field.attname
        if exprs.get(name) is not None:
            sql.append(str(exprs[name]))
            continue
        sql.append("%s")
        if name in exprs:
            given.append((len(template), name, _preparer(field, db)))
        elif default is _CALL:
            called.append((len(template), field, _preparer(field, db)))
        template.append(default)
    if len(plan.shapes) >= 64:  # a few shapes per model in practice; bounded all the same
        plan.shapes.clear()
    shape = plan.shapes[key] = _InsertShape(", ".join(sql), template, tuple(given), tuple(called))
    return shape


def insert_statement(model: type[Model], values: Mapping[str, Any], *, source: str | None = None) -> Statement:
    """A raw `INSERT` of one row of `model`: every column, the model's defaults for those not in `values`
    (keyed by attname, e.g. `user_id`), values prepared by the fields as the ORM would. For hot paths
    that fold the insert into another statement (see `apps.billing.services`).

    With `source` (a CTE of the enclosing statement), `INSERT … SELECT … FROM source`: one row per row of
    `source` (none when it is empty), `Expr` values reading its columns."""
    db = prep_connection()
    plan = _insert_plan(model, db.vendor)
    key = tuple((name, value if isinstance(value, Expr) else None) for name, value in values.items())
    shape = plan.shapes.get(key)
    if shape is None:
        shape = _insert_shape(plan, key, db)
    params = shape.template.copy()
    for index, name, prepare in shape.given:
        params[index] = prepare(values[name])
    for index, field, prepare in shape.called:
        params[index] = prepare(field.get_default())
    if source is None:
        return f"{plan.head} VALUES ({shape.placeholders})", params
    return f"{plan.head} SELECT {shape.placeholders} FROM {source}", params  # noqa: S608 (names from the model, values as parameters)


class _UpdatePlan(NamedTuple):
    head: str  # UPDATE table SET
    fields: tuple[Any, ...]
    columns: tuple[str, ...]  # quoted, in the order of `fields`
    key: Any  # the field of the WHERE
    where: str  # WHERE table.key = %s


@functools.cache
def _update_plan(model: type[Model], names: tuple[str, ...], where: str, vendor: str) -> _UpdatePlan:
    """What every update of `names` keyed by `where` shares (per model and shape of the update)."""
    meta = model._meta
    qn = connection.ops.quote_name
    fields = tuple(meta.get_field(name) for name in names)
    key = meta.get_field(where)
    table = qn(meta.db_table)
    return _UpdatePlan(
        head=f"UPDATE {table} SET ",  # noqa: S608 (names from the model)
        fields=fields,
        columns=tuple(qn(f.column) for f in fields),  # type: ignore[union-attr,arg-type]
        key=key,
        where=f"WHERE {table}.{qn(key.column)} = %s",  # type: ignore[union-attr,arg-type]
    )


def update_statement(
    model: type[Model], values: Mapping[str, Any], *, where: str, equals: Any, source: str | None = None
) -> Statement:
    """A raw `UPDATE` of the rows of `model` whose field `where` equals `equals` (values by attname).
    With `source` (a CTE of the enclosing statement), `UPDATE … FROM source`: nothing when it is empty,
    `Expr` values reading its columns."""
    db = prep_connection()
    plan = _update_plan(model, tuple(values), where, db.vendor)
    params: list[Any] = []
    assignments = ", ".join(
        f"{column} = {_value_sql(field, value, params, db)}"
        for column, field, value in zip(plan.columns, plan.fields, values.values(), strict=True)
    )
    params.append(plan.key.get_db_prep_value(equals, db))
    source_sql = f" FROM {source} " if source else " "
    return f"{plan.head}{assignments}{source_sql}{plan.where}", params
