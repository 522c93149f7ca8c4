"""ASGI entry point.

Requests under `/api/` are served by a handler with a lean, fully async middleware stack (request
context and language); everything else (admin, docs) by Django's usual stack. Django's stock
middleware are synchronous `MiddlewareMixin`s: under ASGI each of their hooks is a thread hop, which
the API — token-authenticated, CSRF-free, session-free — does not need to pay. The generation
endpoints and `/healthz`, async end to end, skip the thread Django starts per request: their paths are
those of the views marked `async_end_to_end` in the URL configuration (`handlers.async_api_paths`).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writing_service.settings")

django_application = get_asgi_application()

from writing_service.security import require_production_secrets  # noqa: E402

require_production_secrets()

from writing_service.sweeper import start_in_process_sweeper  # noqa: E402

start_in_process_sweeper()  # only without a broker (BILLING_SWEEP_IN_PROCESS)

from apps.core.metrics import multiproc_start, pool_sampler_start  # noqa: E402

multiproc_start()  # PROMETHEUS_MULTIPROC_DIR: made, and the files of gone processes dropped
pool_sampler_start()  # the database pool gauges (PostgreSQL with the pool)

from apps.providers.quickstart import quickstart_on_startup  # noqa: E402
from writing_service.handlers import AsyncApiASGIHandler, PathRouter, api_asgi_handler, async_api_paths  # noqa: E402

quickstart_on_startup()
application = PathRouter(
    api=api_asgi_handler(),
    default=django_application,
    async_api=AsyncApiASGIHandler(),
    async_paths=async_api_paths(),
)
