"""Liveness (`/healthz`) and readiness (`/readyz`: database and, when configured, Redis)."""

from __future__ import annotations

import time
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections
from django.http import HttpRequest, JsonResponse

from apps.core.api.views import async_end_to_end


@async_end_to_end
async def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: answered on the event loop (served by the async handler, being `async_end_to_end`),
    so a probe every second costs no thread."""
    return JsonResponse({"status": "ok"})


def check_database(alias: str = "default", handler: Any = None) -> str | None:
    """None when the database answers `SELECT 1`, else a short reason."""
    conn = (handler or connections)[alias]
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'unreachable'}"
    return None


def check_redis(url: str) -> str | None:
    import redis

    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
        finally:
            client.close()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def readyz(request: HttpRequest) -> JsonResponse:
    started = time.perf_counter()
    checks: dict[str, str] = {}
    failures: dict[str, str] = {}
    db_error = check_database()
    checks["database"] = "ok" if db_error is None else "error"
    if db_error:
        failures["database"] = db_error
    if settings.REDIS_URL:
        redis_error = check_redis(settings.REDIS_URL)
        checks["redis"] = "ok" if redis_error is None else "error"
        if redis_error:
            failures["redis"] = redis_error
    body: dict[str, Any] = {
        "status": "ok" if not failures else "unavailable",
        "checks": checks,
        "durationMs": round((time.perf_counter() - started) * 1000, 1),
    }
    if failures:
        body["errors"] = failures
    return JsonResponse(body, status=200 if not failures else 503)
