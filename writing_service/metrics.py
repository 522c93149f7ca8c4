"""`GET /metrics`: the Prometheus text exposition of every process of this host (multi-process mode) or of
this one, plus what the database knows at scrape time (holds open).

With `METRICS_TOKEN` set, only `Authorization: Bearer <METRICS_TOKEN>` may read it (compared in constant
time); any other request gets a bare 401 (no credentials) or 403 (wrong ones) that says nothing about
the service. Not under `/api/`, so not in the OpenAPI schema.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from apps.billing.metrics import HoldsCollector
from apps.core import metrics


def _refusal(request: HttpRequest) -> HttpResponse | None:
    expected = settings.METRICS_TOKEN
    if not expected:
        return None
    scheme, _sep, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        response = HttpResponse("Unauthorized\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = "Bearer"
        return response
    if not hmac.compare_digest(given.strip().encode(), expected.encode()):
        return HttpResponse("Forbidden\n", status=403, content_type="text/plain")
    return None


def exposition() -> bytes:
    """The text of a scrape: the processes' metrics, then the database's."""
    if metrics.MULTIPROCESS:
        metrics.multiproc_prune()  # the live gauges of processes that died without saying so
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        processes = generate_latest(registry)
    else:
        metrics.db_pool_sample()  # one process: read its pool now rather than up to 5 s ago
        processes = generate_latest(REGISTRY)
    database = CollectorRegistry()
    database.register(HoldsCollector())
    return processes + generate_latest(database)


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    response = HttpResponse(exposition(), content_type=CONTENT_TYPE_PLAIN_0_0_4)  # every Prometheus reads it
    response["Cache-Control"] = "no-store"
    return response
