"""ASGI entry point.

Requests under `/api/` are served by a handler with a lean, fully async middleware stack (request
context and language); everything else (admin, docs) by Django's usual stack. Django's stock
middleware are synchronous `MiddlewareMixin`s: under ASGI each of their hooks is a thread hop, which
the API — token-authenticated, CSRF-free, session-free — does not need to pay.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writing_service.settings")

django_application = get_asgi_application()

from writing_service.handlers import PathRouter, api_asgi_handler, quickstart_on_startup  # noqa: E402

quickstart_on_startup()
application = PathRouter(api=api_asgi_handler(), default=django_application)
