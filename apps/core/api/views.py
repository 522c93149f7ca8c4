"""Shared view pieces.

`AsyncAPIView`: DRF's authentication, permissions, throttling, content negotiation, exception
handling and OpenAPI schema, with `async def` handlers that can await upstream calls without holding
a thread. The synchronous DRF checks run in one `sync_to_async` hop; the response is rendered here so
Django does not need another hop to render it.

`async_end_to_end`: the mark (set on every `AsyncAPIView`) of the views served by the lean async
handler; their paths are read from the URL configuration (`writing_service.handlers.async_api_paths`).

`OwnFormatParamMixin` and `filename_stem`: for download endpoints (card and lorebook export).

`request_user`: the signed-in user of a view that requires authentication, typed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, cast

import orjson
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.http.request import RawPostDataException
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api.renderers import JSONRenderer
from apps.core.db import db_sync_to_async

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def request_user(request: Request | HttpRequest) -> User:
    """``request.user`` in a view that requires authentication: typed as the user model (never anonymous there)."""
    return cast("User", request.user)


PEEK_MAX_BYTES = 64 * 1024


def peek_json(request: Request) -> dict[str, Any] | None:
    """The request's JSON object body read ahead of DRF's parsing (which still validates it), for a view
    that wants a field before authentication (e.g. to prefetch a cache entry); None when the body is
    not a small JSON object. Never raises: a malformed body is for the parser to refuse, after
    authentication, as before."""
    meta = request.META
    if not str(meta.get("CONTENT_TYPE", "")).startswith("application/json"):
        return None
    try:
        if not 0 < int(meta.get("CONTENT_LENGTH") or 0) <= PEEK_MAX_BYTES:
            return None
        body = orjson.loads(request.body)
    except (ValueError, RawPostDataException):
        return None
    return body if isinstance(body, dict) else None


def async_end_to_end[V: Callable[..., Any]](view: V) -> V:
    """Mark an ``async def`` function view as async end to end (no synchronous step outside
    `db_sync_to_async`), like every `AsyncAPIView`: its path is served without Django's thread per
    request (`writing_service.handlers.AsyncApiASGIHandler`)."""
    view.async_end_to_end = True  # type: ignore[attr-defined]
    return view


class AsyncAPIView(APIView):
    #: Served by the lean async handler (see `async_end_to_end`); a fixed path is enough to be routed there.
    async_end_to_end: ClassVar[bool] = True

    #: Methods whose handler runs `self.initial(request)` (authentication, permissions, rate limits)
    #: itself, at the start of its own synchronous step: one thread hop per request instead of two.
    initial_in_handler: frozenset[str] = frozenset()

    @classmethod
    def as_view(cls, **initkwargs: Any) -> Any:
        view = super().as_view(**initkwargs)
        view.csrf_exempt = True
        return view

    async def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:  # type: ignore[override]
        self.args = args
        self.kwargs = kwargs
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request = drf_request
        self.headers = self.default_response_headers
        try:
            method = (drf_request.method or "").lower()
            handler = getattr(self, method, None) if method in self.http_method_names else None
            if handler is None or method not in self.initial_in_handler:
                await db_sync_to_async(self.initial)(drf_request, *args, **kwargs)
            if handler is None:
                response = self.http_method_not_allowed(drf_request, *args, **kwargs)
            else:
                response = await handler(drf_request, *args, **kwargs)
        except Exception as exc:  # DRF's exception handler decides
            drf_request.accepted_renderer = JSONRenderer()  # errors are JSON even for SSE endpoints
            drf_request.accepted_media_type = JSONRenderer.media_type
            response = self.handle_exception(exc)
        response = self.finalize_response(drf_request, response, *args, **kwargs)
        return _rendered(response)

    async def options(self, request: Any, *args: Any, **kwargs: Any) -> Response:  # type: ignore[override]
        return super().options(request, *args, **kwargs)


def _rendered(response: HttpResponseBase) -> HttpResponseBase:
    if not isinstance(response, Response):
        return response
    response.render()
    plain = HttpResponse(response.rendered_content, status=response.status_code)
    for name, value in response.items():
        plain[name] = value
    return plain


class OwnFormatParamMixin:
    """`?format=` is this endpoint's own parameter, not DRF's renderer override (which would 404 on
    `format=png`): content negotiation ignores it."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        return super().perform_content_negotiation(request, force=True)  # type: ignore[misc]


def filename_stem(name: str) -> str:
    """A download's name (a card's, a lorebook's) as a safe file name: no path separators or control
    characters, at most 100 characters, ``character`` when nothing is left."""
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in '/\\:*?"<>|').strip(" .")
    return cleaned[:100] or "character"
