"""The plumbing under the generation hot path: raw statements built from models, the database thread
pool, class-level serializer fields, the async handler's routing and URL cache, durable vs
asynchronous hold commits."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from decimal import Decimal

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.db import connection, transaction
from django.test import override_settings
from django.utils import timezone, translation

from apps.billing import services as billing
from apps.core.db import db_sync_to_async, insert_statement, update_statement
from apps.generation.api import WritingInputSerializer
from apps.generation.models import Generation
from writing_service.handlers import PathRouter, async_api_paths

pytestmark = pytest.mark.django_db


# --- insert_statement / update_statement -----------------------------------------------------------


def test_insert_statement_fills_the_model_defaults_and_round_trips(user):
    sql, params = insert_statement(
        Generation, {"public_id": "gen_raw1", "user_id": user.pk, "model_requested": "m", "attempts": [{"a": 1}]}
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    record = Generation.objects.get(public_id="gen_raw1")
    assert record.user_id == user.pk and record.model_requested == "m"
    assert record.status == Generation.Status.PENDING and record.mode == Generation.Mode.WRITING
    assert record.attempts == [{"a": 1}] and record.temperature == 0.7 and record.content == ""
    assert record.created_at is not None and record.finished_at is None


def test_update_statement_sets_only_the_named_columns(user):
    record = Generation.objects.create(public_id="gen_raw2", user=user, model_requested="m", content="keep")
    finished = timezone.now()
    sql, params = update_statement(
        Generation,
        {"status": "succeeded", "attempts": [], "finished_at": finished, "total_cost": 7},
        where="public_id",
        equals="gen_raw2",
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        assert cursor.rowcount == 1
    record.refresh_from_db()
    assert (record.status, record.total_cost, record.content) == ("succeeded", 7, "keep")
    assert record.finished_at == finished


_SAMPLES = (None, 0, 7, -3, 2**40, True, False, "", "7", "text", 1.5, Decimal("2.50"), [1], {"a": 1})


def _prepared(prepare, value):
    """(outcome, type, value): psycopg's wrappers (Jsonb, Binary) compared by what they wrap."""
    try:
        prepared = prepare(value)
    except Exception as exc:  # compared by type with Django's own
        return ("raised", type(exc), None)
    return ("ok", type(prepared), getattr(prepared, "obj", prepared))


@pytest.mark.parametrize("model", sorted(django_apps.get_models(), key=lambda m: m._meta.label), ids=str)
def test_field_preparers_give_what_django_gives(model):
    # every concrete field of every model, values of many types: the short cuts answer as Django's chain
    from apps.core.db import _preparer, prep_connection

    db = prep_connection()
    for field in model._meta.concrete_fields:
        for value in _SAMPLES:
            ours = _prepared(_preparer(field, db), value)
            django = _prepared(lambda v, f=field: f.get_db_prep_save(v, db), value)
            assert ours == django, (field, value)


def test_insert_statement_shapes_give_the_same_statement_each_time(user):
    # the same names with other values, an Expr, and a callable default: each statement as built afresh
    from apps.core.db import _CALL, Expr, _insert_plan, prep_connection

    first = insert_statement(Generation, {"public_id": "g1", "user_id": user.pk, "max_tokens": 5})
    again = insert_statement(Generation, {"public_id": "g2", "user_id": user.pk, "max_tokens": 9})
    assert first[0] == again[0] and len(first[1]) == len(again[1])
    assert "g2" in again[1] and "g1" not in again[1]
    with_expr = insert_statement(Generation, {"public_id": "g3", "user_id": Expr("s.user_id")}, source="s")
    assert "s.user_id" in with_expr[0] and with_expr[0].endswith("FROM s") and user.pk not in with_expr[1]
    plan = _insert_plan(Generation, prep_connection().vendor)
    assert len(plan.shapes) >= 2  # one per shape, reused
    # the callable defaults (attempts=list, created_at=now) called for each row, never shared
    names = {"public_id", "user_id", "max_tokens"}
    shape = next(shape for key, shape in plan.shapes.items() if dict(key).keys() == names)
    called = {field.attname: i for i, field, _p in shape.called}
    assert set(called) == {"attempts", "created_at"}
    assert all(shape.template[i] is _CALL and first[1][i] is not _CALL for i in called.values())


# --- the database thread pool ----------------------------------------------------------------------

marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")


@pytest.mark.django_db(transaction=True)
async def test_db_steps_run_off_the_loop_with_the_callers_context_and_close_their_connection():
    def step(value: int) -> tuple[str, str, str, int]:
        from django.db import connection as conn

        with conn.cursor() as cursor:
            cursor.execute("SELECT %s", [value])
            row = cursor.fetchone()
        return marker.get(), translation.get_language(), threading.current_thread().name, row[0]

    marker.set("from-the-request")
    with translation.override("en"):
        seen, language, thread, value = await db_sync_to_async(step)(41)
    assert (seen, language, value) == ("from-the-request", "en", 41)
    assert thread.startswith("db") and thread != threading.current_thread().name

    def connection_after() -> object:
        from django.db import connection as conn

        return conn.connection

    # the previous step handed its connection back: a later step on a pool thread starts without one
    # (SQLite's in-memory test database is never closed, by design)
    results = await asyncio.gather(*(db_sync_to_async(connection_after)() for _ in range(4)))
    if settings.IS_POSTGRES:
        assert results == [None] * 4


async def test_db_step_errors_reach_the_caller():
    def boom() -> None:
        raise LookupError("nope")

    with pytest.raises(LookupError, match="nope"):
        await db_sync_to_async(boom)()


# --- class-level serializer fields -----------------------------------------------------------------


def test_static_serializer_instances_share_fields_but_not_data_or_errors():
    bad = WritingInputSerializer(data={"promptId": 0, "temperature": 3})
    good = WritingInputSerializer(data={"promptId": 5, "history": [{"role": "user", "content": "hi"}]})
    assert bad.fields is good.fields
    with translation.override("en"):
        assert not bad.is_valid()
        assert good.is_valid(), good.errors
    assert set(bad.errors) == {"promptId", "temperature"}
    assert good.validated_data["promptId"] == 5 and good.validated_data["history"][0]["content"] == "hi"
    again = WritingInputSerializer(data={"promptId": 6})
    assert again.is_valid() and again.validated_data["history"] == [] and not again.errors


# --- routing ---------------------------------------------------------------------------------------


async def test_path_router_sends_exact_async_paths_to_the_async_handler():
    calls: list[str] = []

    def app(name: str):
        async def handler(scope, receive, send):
            calls.append(name)

        return handler

    router = PathRouter(
        api=app("api"), default=app("default"), async_api=app("async"), async_paths=("/api/v1/generation/writing",)
    )
    for path in ("/api/v1/generation/writing", "/api/v1/generation/writing/", "/api/v1/auth/me", "/admin/"):
        await router({"type": "http", "path": path}, None, None)
    await router({"type": "lifespan"}, None, None)
    assert calls == ["async", "api", "api", "default", "default"]


# The paths served by the async handler, as settings.ASYNC_API_PATHS listed them before they were read
# from the URL configuration (the views marked async_end_to_end): a path added or lost shows here.
ASYNC_PATHS = {
    "/api/v1/generation/writing",
    "/api/v1/generation/writing/stream",
    "/api/v1/generation/roleplay",
    "/api/v1/generation/roleplay/stream",
    "/api/v1/generation/jobs",
    "/v1/chat/completions",
    "/v1/completions",
    "/healthz",
}


def test_the_async_paths_are_read_from_the_url_configuration():
    assert async_api_paths() == ASYNC_PATHS


def test_the_asgi_application_routes_the_async_paths():
    from writing_service.asgi import application

    assert application.async_paths == ASYNC_PATHS


def test_generation_and_health_urls_resolve_through_the_async_handler(anon):
    for _ in range(2):  # the second time from the handler's resolver cache
        response = anon.get("/healthz")
        assert response.status_code == 200 and response.json() == {"status": "ok"}
    response = anon.post("/api/v1/generation/writing", {}, format="json")
    assert response.status_code == 401 and response.json()["statusCode"] == 401


# --- durable and asynchronous hold commits ---------------------------------------------------------

PAID = billing.Pricing("m", Decimal(1), Decimal(1), False, 4096)


def _commit_mode_during_hold(user, gid: str) -> str:
    billing.wallet_grant(user=user, amount=1_000_000)
    with transaction.atomic():
        billing.hold_place(user=user, generation_id=gid, pricing=PAID, input_chars=10, max_tokens=10)
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_hold_commits_without_waiting_for_the_wal_flush_unless_configured(user):
    assert _commit_mode_during_hold(user, "gen_async") == "off"  # first use of the day: rows created
    assert _commit_mode_during_hold(user, "gen_async_2") == "off"  # the one-statement path
    with override_settings(BILLING_DURABLE_HOLDS=True):
        assert _commit_mode_during_hold(user, "gen_durable") == "on"
    # the setting is local to the hold's transaction: everything after it commits durably
    with connection.cursor() as cursor:
        cursor.execute("SHOW synchronous_commit")
        assert cursor.fetchone()[0] == "on"
    # inside a caller's larger transaction the hold keeps that transaction durable
    with transaction.atomic():
        assert _commit_mode_during_hold(user, "gen_nested") == "on"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_settlement_always_commits_durably(user):
    billing.wallet_grant(user=user, amount=1_000_000)
    with transaction.atomic():
        billing.hold_place(user=user, generation_id="gen_s", pricing=PAID, input_chars=10, max_tokens=10)
    with transaction.atomic():
        billing.charge_settle(generation_id="gen_s", pricing=PAID, input_chars=10, output_chars=5)
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            assert cursor.fetchone()[0] == "on"
