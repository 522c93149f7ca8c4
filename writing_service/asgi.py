"""ASGI entry point.

Requests under `/api/` are served by a handler with a lean, fully async middleware stack (request
context and language); everything else (admin, docs) by Django's usual stack. Django's stock
middleware are synchronous `MiddlewareMixin`s: under ASGI each of their hooks is a thread hop, which
the API — token-authenticated, CSRF-free, session-free — does not need to pay. The generation
endpoints (`settings.ASYNC_API_PATHS`), async end to end, skip the thread Django starts per request.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writing_service.settings")

django_application = get_asgi_application()

from django.conf import settings  # noqa: E402

from apps.providers.quickstart import quickstart_on_startup  # noqa: E402
from writing_service.handlers import AsyncApiASGIHandler, PathRouter, api_asgi_handler  # noqa: E402

quickstart_on_startup()
application = PathRouter(
    api=api_asgi_handler(),
    default=django_application,
    async_api=AsyncApiASGIHandler(),
    async_paths=settings.ASYNC_API_PATHS,
)
