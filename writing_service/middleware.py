"""Request context: a request id (echoed as `X-Request-ID`), one access-log line, the request metrics
(`http_requests_total`, `http_request_duration_seconds`), JSON errors for `/api/`.

Works in both sync and async mode so that async streaming views never pay for a thread hop here.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.utils.cache import patch_vary_headers
from django.utils.translation import gettext as _

from apps.core.api.exceptions import json_error
from apps.core.metrics import http_observe
from writing_service.logging import request_id_var

logger = logging.getLogger("writing_service.request")
VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _request_id(request: HttpRequest) -> str:
    incoming = request.headers.get("X-Request-ID", "")
    return incoming if VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex


class RequestContextMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        rid, token, started = self._begin(request)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        return self._finish(request, response, rid, started)

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        rid, token, started = self._begin(request)
        try:
            response = await self.get_response(request)
        finally:
            request_id_var.reset(token)
        return self._finish(request, response, rid, started)

    @staticmethod
    def _begin(request: HttpRequest) -> tuple[str, Any, float]:
        rid = _request_id(request)
        request.request_id = rid  # type: ignore[attr-defined]
        return rid, request_id_var.set(rid), time.perf_counter()

    @staticmethod
    def _finish(request: HttpRequest, response: HttpResponse, rid: str, started: float) -> HttpResponse:
        elapsed = time.perf_counter() - started
        http_observe(request, response.status_code, elapsed)
        response["X-Request-ID"] = rid
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        user = getattr(request, "user", None)
        token = request_id_var.set(rid)
        try:
            logger.info(
                "%s %s %s",
                request.method,
                request.path,
                response.status_code,
                extra={
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                    "user_id": user.pk if user is not None and user.is_authenticated else None,
                    "streaming": response.streaming,
                },
            )
        finally:
            request_id_var.reset(token)
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        """Unhandled errors in non-DRF API views become the JSON envelope, never an HTML page."""
        if not request.path.startswith("/api/"):
            return None
        logger.exception("unhandled error", exc_info=exception)
        return json_error(500, _("Internal server error."))


class ApiLocaleMiddleware:
    """LocaleMiddleware for the API: the language from Accept-Language (default LANGUAGE_CODE),
    without URL prefixes or sessions, and without a thread hop under ASGI."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponse | Awaitable[HttpResponse]:
        if self.is_async:
            return self._acall(request)
        self._activate(request)
        return self._finish(self.get_response(request))

    async def _acall(self, request: HttpRequest) -> HttpResponse:
        self._activate(request)
        return self._finish(await self.get_response(request))

    @staticmethod
    def _activate(request: HttpRequest) -> None:
        language = translation.get_language_from_request(request, check_path=False)
        translation.activate(language)
        request.LANGUAGE_CODE = translation.get_language()  # type: ignore[attr-defined]

    @staticmethod
    def _finish(response: HttpResponse) -> HttpResponse:
        patch_vary_headers(response, ("Accept-Language",))
        response.headers.setdefault("Content-Language", translation.get_language())
        return response
