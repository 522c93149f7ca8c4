"""The error envelope: every API error is `{"statusCode", "message", "error"}` (+ `details` for validation).

`message` is translated (Accept-Language, default zh-hans); `error` is the HTTP reason phrase, as the
seed's examples show (`"error": "Bad Request"`).
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DatabaseError
from django.http import Http404, HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.response import Response

from apps.core.errors import ApplicationError, InvalidInput

logger = logging.getLogger("apps.core.api")


def reason_phrase(status_code: int) -> str:
    try:
        return HTTPStatus(status_code).phrase
    except ValueError:
        return "Error"


def envelope(status_code: int, message: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"statusCode": status_code, "message": str(message), "error": reason_phrase(status_code)}
    body.update(extra)
    return body


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Turn DRF's nested error detail into `{"contents.0.order": ["…"]}`."""
    out: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for key, value in detail.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            out.update(_flatten(value, name))
    elif isinstance(detail, list):
        if all(not isinstance(item, dict | list) for item in detail):
            out[prefix or "nonFieldErrors"] = [str(item) for item in detail]
        else:
            for index, item in enumerate(detail):
                if item in ({}, []):
                    continue
                out.update(_flatten(item, f"{prefix}.{index}" if prefix else str(index)))
    else:
        out[prefix or "nonFieldErrors"] = [str(detail)]
    return out


def validation_envelope(detail: Any) -> dict[str, Any]:
    details = _flatten(detail)
    if details:
        field, messages = next(iter(details.items()))
        message = messages[0] if field == "nonFieldErrors" else f"{field}: {messages[0]}"
    else:
        message = _("Invalid request.")
    return envelope(400, message, details=details)


def size_text(size: int) -> str:
    """A byte count for people: `8 MB`, `512 KB`, `100 bytes` (binary units, as the limits are set)."""
    if size >= 1024 * 1024:
        return f"{round(size / (1024 * 1024), 1):g} MB"
    if size >= 1024:
        return f"{round(size / 1024, 1):g} KB"
    return f"{size} bytes"


def body_too_large_message(limit: int) -> str:
    return _("The request body is larger than %(size)s.") % {"size": size_text(limit)}


def body_too_large(limit: int) -> ApplicationError:
    """413 for a request body over its limit (`API_BODY_MAX_BYTES`, or the upload limit)."""
    return ApplicationError(
        body_too_large_message(limit), status_code=413, code="request_too_large", extra={"limitBytes": limit}
    )


def _is_pool_exhausted(exc: BaseException) -> bool:
    """Django wraps psycopg_pool's PoolTimeout in an OperationalError."""
    if not isinstance(exc, DatabaseError):
        return False
    cause = exc.__cause__
    return cause is not None and type(cause).__name__ == "PoolTimeout"


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """DRF exception handler producing the envelope for every error, including unexpected ones."""
    if _is_pool_exhausted(exc):  # back-pressure, not a bug: every pooled connection is busy
        response = Response(envelope(503, _("The service is busy; please retry shortly.")), status=503)
        response["Retry-After"] = "1"
        return response
    if isinstance(exc, RequestDataTooBig):
        return Response(envelope(413, _("The request body is too large.")), status=413)
    if isinstance(exc, SuspiciousOperation):  # too many fields or files, malformed multipart…
        return Response(envelope(400, _("Bad request.")), status=400)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    if isinstance(exc, InvalidInput):
        return Response(validation_envelope(exc.errors), status=400)

    if isinstance(exc, ApplicationError):
        response = Response(envelope(exc.status_code, exc.message, **exc.extra), status=exc.status_code)
        for name, value in exc.headers.items():
            response[name] = value
        return response

    if isinstance(exc, exceptions.ValidationError):
        return Response(validation_envelope(exc.detail), status=400)

    if isinstance(exc, exceptions.APIException):
        detail = exc.detail
        if isinstance(detail, dict | list):
            message = next(iter(_flatten(detail).values()), [str(exc.default_detail)])[0]
        else:
            message = str(detail)
        response = Response(envelope(exc.status_code, message), status=exc.status_code)
        if isinstance(exc, exceptions.Throttled) and exc.wait is not None:  # type: ignore[attr-defined]  # stubs lack `wait`
            response["Retry-After"] = str(max(1, int(exc.wait + 0.999)))  # type: ignore[attr-defined]
        auth_header = getattr(exc, "auth_header", None)
        if auth_header:
            response["WWW-Authenticate"] = auth_header
        return response

    view = context.get("view")
    logger.exception("unhandled error in %s", type(view).__name__ if view else "view")
    return Response(envelope(500, _("Internal server error.")), status=500)


def json_error(status_code: int, message: str, **extra: Any) -> JsonResponse:
    """An envelope as a plain Django response (for non-DRF views, middleware and handlers)."""
    return JsonResponse(
        envelope(status_code, message, **extra), status=status_code, json_dumps_params={"ensure_ascii": False}
    )


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(404, _("Not found."))


def handler500(request: HttpRequest) -> JsonResponse:
    return json_error(500, _("Internal server error."))


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(403, _("You do not have permission to perform this action."))


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return json_error(400, _("Bad request."))
