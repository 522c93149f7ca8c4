"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`, with the status the rest of
the API would answer (401 invalid key, 402 `insufficient_quota`, 404 `model_not_found`, 429 with
`Retry-After`, 400 `invalid_request_error` naming the parameter, 502/504 from the upstream). Messages
are translated like the rest (`Accept-Language`). The SDKs map the status to their exception classes
(`openai.AuthenticationError`, `NotFoundError`, `RateLimitError`, …)."""

from __future__ import annotations

import re
from typing import Any

from django.http import HttpRequest, JsonResponse
from django.utils.translation import gettext as _
from rest_framework import exceptions
from rest_framework.response import Response

from apps.core.api.exceptions import exception_handler as envelope_exception_handler
from apps.core.errors import ApplicationError

_TYPES: dict[int, tuple[str, str]] = {  # status → (type, code) when nothing more specific is known
    400: ("invalid_request_error", "invalid_value"),
    401: ("invalid_request_error", "invalid_api_key"),
    402: ("insufficient_quota", "insufficient_quota"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    406: ("invalid_request_error", "not_acceptable"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("api_error", "upstream_error"),
    503: ("server_error", "overloaded"),
    504: ("api_error", "upstream_timeout"),
}
_CAMEL = re.compile(r"(?<!^)(?=[A-Z])")


def openai_error(status: int, message: str, *, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    """The body of an error (and of a stream's final `error` event)."""
    error_type, default_code = _TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", ""))
    return {"error": {"message": message, "type": error_type, "param": param, "code": code or default_code or None}}


def _param(envelope: dict[str, Any]) -> str | None:
    """The parameter a 400 is about: the envelope's `param`, else its first `details` field, in the
    request's own (snake_case) names."""
    if envelope.get("param"):
        return str(envelope["param"])
    details = envelope.get("details") or {}
    for name in details:
        if name != "nonFieldErrors":
            return _CAMEL.sub("_", str(name)).lower()
    return None


def _code(exc: Exception, status: int) -> str | None:
    if status == 402:
        return "insufficient_quota"  # what OpenAI clients look for
    if isinstance(exc, ApplicationError) and exc.code not in ("error", "invalid"):
        return exc.code
    if isinstance(exc, exceptions.NotAuthenticated | exceptions.AuthenticationFailed):
        return "invalid_api_key"
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """The API's envelope handler (statuses, headers such as `Retry-After`, translations), rewritten to
    OpenAI's error body."""
    response = envelope_exception_handler(exc, context)
    envelope = response.data if isinstance(response.data, dict) else {}
    status = response.status_code
    message = str(envelope.get("message", ""))
    response.data = openai_error(status, message, code=_code(exc, status), param=_param(envelope))
    return response


def not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Unknown `/v1/…` URLs."""
    return JsonResponse(openai_error(404, _("Unknown API route: %(path)s") % {"path": request.path}), status=404)
