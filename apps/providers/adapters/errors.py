"""Typed upstream error taxonomy shared by every adapter (no Django imports).

Each error carries:

* ``retryable`` — may the generation layer retry / fall back to another model *before the first
  token* (timeouts, connect errors, 429, 404 model, 5xx/overloaded)?
* ``client_status`` — the status the generation layer answers with (504 for timeouts, 429 for rate
  limiting and 503 for a model still loading, both with ``Retry-After``, 502 otherwise).
* ``message`` — a safe human-readable message. Messages built by :func:`error_from_response` are
  redacted (the connection's API key never appears) and truncated.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar

import orjson

MAX_MESSAGE_CHARS = 500
_REDACTED = "***"
# Things that look like credentials, even when they are not exactly our configured key.
_KEYLIKE = re.compile(r"\b(sk-(?:ant-)?[A-Za-z0-9_\-]{8,}|AIza[0-9A-Za-z_\-]{20,})")


class UpstreamError(Exception):
    """Base class: the upstream call failed. ``str(err)`` is the safe message."""

    code: ClassVar[str] = "upstream_error"
    retryable: ClassVar[bool] = False
    client_status: ClassVar[int] = 502

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        upstream_code: str | None = None,
        provider: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code
        self.provider = provider

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, upstream_status={self.upstream_status!r})"


class UpstreamTimeout(UpstreamError):
    """Connect, read (idle between chunks), write or pool timeout."""

    code = "upstream_timeout"
    retryable = True
    client_status = 504


class UpstreamConnectError(UpstreamError):
    """Could not connect, or the connection broke (reset, closed mid-response)."""

    code = "upstream_connect_error"
    retryable = True


class UpstreamRateLimited(UpstreamError):
    """HTTP 429 (or a rate-limit error event). ``retry_after`` in seconds when the upstream said."""

    code = "upstream_rate_limited"
    retryable = True
    client_status = 429

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class UpstreamModelNotFound(UpstreamError):
    """HTTP 404: the upstream does not know the model (another model may work)."""

    code = "upstream_model_not_found"
    retryable = True


class UpstreamServerError(UpstreamError):
    """HTTP 5xx, 529 overloaded, or an upstream ``api_error``/``overloaded_error`` event."""

    code = "upstream_server_error"
    retryable = True


class UpstreamLoading(UpstreamError):
    """The model is not loaded yet (the app's local model starting, or a llama.cpp server answering 503
    "Loading model"): answered 503 with ``Retry-After``. Not retried on the same target (it will not be
    ready within a backoff), but a fallback model may serve the call."""

    code = "upstream_loading"
    retryable = True
    client_status = 503

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class UpstreamBadRequest(UpstreamError):
    """A 4xx that retrying won't fix (context too long, invalid parameter, …)."""

    code = "upstream_bad_request"


class UpstreamAuthError(UpstreamError):
    """HTTP 401/403: the connection's key is wrong, expired or lacks permission."""

    code = "upstream_auth_error"


class UpstreamProtocolError(UpstreamError):
    """The upstream answered something we cannot understand (garbage SSE/JSON, truncated stream)."""

    code = "upstream_protocol_error"


# ---------------------------------------------------------------------------------------------
# Helpers


def redact(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Remove the given secrets and anything credential-shaped from ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, _REDACTED)
    return _KEYLIKE.sub(_REDACTED, text)


def safe_message(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    text = redact(" ".join(text.split()), secrets)
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 1] + "…"
    return text


def parse_retry_after(
    headers: Mapping[str, str] | None, *, now: datetime | None = None, body: Any = None
) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After`` (seconds or HTTP date), or a
    Google ``RetryInfo.retryDelay`` (``"37s"``) in the error body. ``None`` when absent/invalid."""
    if headers is not None:
        ms = headers.get("retry-after-ms")
        if ms:
            try:
                value = float(ms) / 1000.0
                if value >= 0:
                    return value
            except ValueError:
                pass
        raw = headers.get("retry-after")
        if raw:
            raw = raw.strip()
            try:
                value = float(raw)
                return value if value >= 0 else None
            except ValueError:
                pass
            try:
                when = parsedate_to_datetime(raw)
            except (TypeError, ValueError, IndexError):
                when = None
            if when is not None:
                if when.tzinfo is None:
                    when = when.replace(tzinfo=UTC)
                delta = (when - (now or datetime.now(UTC))).total_seconds()
                return max(0.0, delta)
    if isinstance(body, Mapping):
        err = body.get("error")
        details = err.get("details") if isinstance(err, Mapping) else None
        if isinstance(details, list):
            for item in details:
                delay = item.get("retryDelay") if isinstance(item, Mapping) else None
                if isinstance(delay, str) and delay.endswith("s"):
                    try:
                        return max(0.0, float(delay[:-1]))
                    except ValueError:
                        continue
    return None


def retry_delay(
    attempt: int,
    *,
    retry_after: float | None = None,
    base: float = 0.5,
    cap: float = 8.0,
    max_retry_after: float = 30.0,
) -> float:
    """Seconds to sleep before retry number ``attempt`` (0 = first retry).

    Honours an upstream ``Retry-After`` (capped at ``max_retry_after``; a small jitter is added so
    that many waiting requests don't hit the upstream in the same millisecond); otherwise
    exponential backoff with "equal jitter": ``d/2 + U(0, d/2)`` where ``d = min(cap, base·2^attempt)``.
    """
    if retry_after is not None:
        return min(max(0.0, retry_after), max_retry_after) + random.uniform(0, 0.1)
    d = min(cap, base * (2 ** max(0, attempt)))
    return d / 2 + random.uniform(0, d / 2)


def error_retry_delay(error: BaseException, attempt: int, **kwargs: Any) -> float:
    """:func:`retry_delay` for an error (uses ``retry_after`` of :class:`UpstreamRateLimited`)."""
    return retry_delay(attempt, retry_after=getattr(error, "retry_after", None), **kwargs)


_CONTEXT_HINTS = ("context", "too long", "maximum context", "prompt is too long", "exceed")
# Anthropic error types (event stream and JSON bodies).
_ANTHROPIC_TYPES: dict[str, type[UpstreamError]] = {
    "overloaded_error": UpstreamServerError,
    "api_error": UpstreamServerError,
    "rate_limit_error": UpstreamRateLimited,
    "authentication_error": UpstreamAuthError,
    "permission_error": UpstreamAuthError,
    "not_found_error": UpstreamModelNotFound,
    "invalid_request_error": UpstreamBadRequest,
    "request_too_large": UpstreamBadRequest,
    "timeout_error": UpstreamTimeout,
}
_GOOGLE_STATUSES: dict[str, type[UpstreamError]] = {
    "RESOURCE_EXHAUSTED": UpstreamRateLimited,
    "UNAVAILABLE": UpstreamServerError,
    "INTERNAL": UpstreamServerError,
    "DEADLINE_EXCEEDED": UpstreamTimeout,
    "UNAUTHENTICATED": UpstreamAuthError,
    "PERMISSION_DENIED": UpstreamAuthError,
    "NOT_FOUND": UpstreamModelNotFound,
    "INVALID_ARGUMENT": UpstreamBadRequest,
    "FAILED_PRECONDITION": UpstreamBadRequest,
}


def _extract(body: Any) -> tuple[str | None, str | None]:
    """(message, type-or-code) from the common error shapes."""
    if isinstance(body, list) and body:
        body = body[0]
    if not isinstance(body, Mapping):
        return None, None
    err = body.get("error", body)
    if isinstance(err, str):
        return err, None
    if not isinstance(err, Mapping):
        return None, None
    message = None
    for key in ("message", "msg", "detail", "error_msg"):
        value = err.get(key)
        if isinstance(value, str) and value:
            message = value
            break
    kind = None
    for key in ("type", "status", "code"):
        value = err.get(key)
        if isinstance(value, str) and value:
            kind = value
            break
    if kind is None and isinstance(err.get("code"), int):
        kind = str(err["code"])
    return message, kind


def _class_for(status: int | None, kind: str | None, message: str) -> type[UpstreamError]:
    lowered = message.lower()
    if kind in _ANTHROPIC_TYPES and status in (None, 200):
        return _ANTHROPIC_TYPES[kind]
    if status == 400 and ("api key not valid" in lowered or "api_key_invalid" in lowered):
        return UpstreamAuthError  # Google answers a bad key with 400 INVALID_ARGUMENT
    if status is None or status == 200:
        # An error event inside a 200 stream: classify by its type/status/code.
        if kind in _GOOGLE_STATUSES:
            return _GOOGLE_STATUSES[kind]
        if kind and kind.isascii() and kind.isdigit():
            return _class_for(int(kind), None, message)
        if kind in ("rate_limit_exceeded", "insufficient_quota"):
            return UpstreamRateLimited
        if kind in ("context_length_exceeded", "invalid_request_error", "exceed_context_size_error"):
            return UpstreamBadRequest
        return UpstreamServerError
    if status in (401, 403):
        return UpstreamAuthError
    if status == 404:
        return UpstreamModelNotFound
    if status in (408, 504, 524):
        return UpstreamTimeout
    if status == 429:
        return UpstreamRateLimited
    if status == 503 and kind == "unavailable_error" and "loading" in lowered:
        return UpstreamLoading  # llama.cpp while it loads the model
    if status >= 500:
        return UpstreamServerError
    return UpstreamBadRequest


def error_from_response(
    status: int | None,
    body: bytes | str | Any,
    *,
    headers: Mapping[str, str] | None = None,
    provider: str = "upstream",
    secrets: tuple[str | None, ...] = (),
) -> UpstreamError:
    """Map an upstream HTTP error (status + body) or an in-stream error payload (``status=None``,
    body = the decoded event) to the taxonomy, with a safe message."""
    parsed: Any = body
    raw_text = ""
    if isinstance(body, bytes | str):
        raw_text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
        try:
            parsed = orjson.loads(raw_text) if raw_text.strip() else None
        except orjson.JSONDecodeError:
            parsed = None
    message, kind = _extract(parsed)
    if not message:
        message = raw_text.strip()[:200] if raw_text.strip() and not raw_text.lstrip().startswith("<") else ""
    cls = _class_for(status, kind, message or "")
    if cls is UpstreamServerError and status is None and kind and "overloaded" in kind:
        status_text = "overloaded"
    elif status == 529:
        status_text = "HTTP 529 (overloaded)"
    else:
        status_text = f"HTTP {status}" if status not in (None, 200) else "an error event"
    prefix = f"{provider} returned {status_text}"
    if kind and kind != str(status):
        prefix += f" [{kind}]"
    text = safe_message(f"{prefix}: {message}" if message else prefix, secrets)
    kwargs: dict[str, Any] = {"upstream_status": status, "upstream_code": kind, "provider": provider}
    if cls is UpstreamRateLimited or cls is UpstreamLoading:
        return cls(text, retry_after=parse_retry_after(headers, body=parsed), **kwargs)
    if cls is UpstreamBadRequest and message and any(h in message.lower() for h in _CONTEXT_HINTS):
        kwargs["upstream_code"] = kind or "context_length_exceeded"
    return cls(text, **kwargs)


def is_error_payload(obj: Any) -> bool:
    """True for ``{"error": {...}}`` / ``{"type": "error", ...}`` objects seen inside a stream."""
    return isinstance(obj, dict) and (
        (obj.get("error") not in (None, "", {}) and "choices" not in obj) or obj.get("type") == "error"
    )
