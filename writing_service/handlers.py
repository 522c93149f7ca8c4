from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.handlers.asgi import ASGIHandler
from django.test.utils import override_settings

API_PREFIX = "/api/"


class ApiASGIHandler(ASGIHandler):
    """Django's ASGI handler with `settings.API_MIDDLEWARE` instead of `settings.MIDDLEWARE`."""

    def load_middleware(self, is_async: bool = False) -> None:
        with override_settings(MIDDLEWARE=settings.API_MIDDLEWARE):
            super().load_middleware(is_async=is_async)


def api_asgi_handler() -> ApiASGIHandler:
    return ApiASGIHandler()


class PathRouter:
    """Send `/api/` HTTP requests to the API handler, everything else to the default application."""

    def __init__(self, *, api: Callable[..., Awaitable[None]], default: Callable[..., Awaitable[None]]) -> None:
        self.api = api
        self.default = default

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope.get("path", "").startswith(API_PREFIX):
            await self.api(scope, receive, send)
        else:
            await self.default(scope, receive, send)


def quickstart_on_startup() -> None:
    """SPEC §2: with `LLM_BASE_URL` set and no connection configured, create one at start-up."""
    if not settings.LLM_BASE_URL:
        return
    import logging

    from django.db import DatabaseError

    from apps.providers.quickstart import quickstart_ensure

    try:
        for line in quickstart_ensure():
            logging.getLogger("writing_service.startup").info("providers quick start: %s", line)
    except DatabaseError:  # not migrated yet: `migrate` first, the next start will do it
        logging.getLogger("writing_service.startup").warning("providers quick start skipped: database not ready")
