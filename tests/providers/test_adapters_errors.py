"""The upstream error taxonomy, Retry-After parsing and retry backoff (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from apps.providers.adapters.errors import (
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectError,
    UpstreamError,
    UpstreamLoading,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    error_from_response,
    error_retry_delay,
    parse_retry_after,
    redact,
    retry_delay,
)

TAXONOMY = [
    (UpstreamTimeout, True, 504),
    (UpstreamConnectError, True, 502),
    (UpstreamRateLimited, True, 429),
    (UpstreamModelNotFound, True, 502),
    (UpstreamServerError, True, 502),
    (UpstreamLoading, True, 503),
    (UpstreamBadRequest, False, 502),
    (UpstreamAuthError, False, 502),
    (UpstreamProtocolError, False, 502),
]


@pytest.mark.parametrize(("cls", "retryable", "status"), TAXONOMY)
def test_taxonomy_flags(cls: type[UpstreamError], retryable: bool, status: int) -> None:
    err = cls("msg")
    assert isinstance(err, UpstreamError)
    assert (err.retryable, err.client_status, str(err)) == (retryable, status, "msg")


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            400,
            b'{"error": {"message": "maximum context length exceeded", "type": "invalid_request_error"}}',
            UpstreamBadRequest,
        ),
        (401, b'{"error": {"message": "bad key"}}', UpstreamAuthError),
        (403, b"forbidden", UpstreamAuthError),
        (404, b'{"error": {"message": "model not found"}}', UpstreamModelNotFound),
        (408, b"", UpstreamTimeout),
        (413, b"too large", UpstreamBadRequest),
        (422, b'{"detail": "bad"}', UpstreamBadRequest),
        (429, b'{"error": {"message": "slow down"}}', UpstreamRateLimited),
        (500, b"<html>oops</html>", UpstreamServerError),
        (502, b"", UpstreamServerError),
        (  # llama.cpp loading its model
            503,
            b'{"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}',
            UpstreamLoading,
        ),
        (503, b'{"error": {"code": 503, "message": "busy", "type": "unavailable_error"}}', UpstreamServerError),
        (503, b"Loading", UpstreamServerError),
        (504, b"", UpstreamTimeout),
        (
            529,
            b'{"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}',
            UpstreamServerError,
        ),
        (
            400,
            b'[{"error": {"code": 400, "message": "API key not valid.", "status": "INVALID_ARGUMENT"}}]',
            UpstreamAuthError,
        ),
        # error payloads inside a 200 stream
        (None, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}, UpstreamServerError),
        (None, {"type": "error", "error": {"type": "rate_limit_error", "message": "x"}}, UpstreamRateLimited),
        (None, {"error": {"code": 429, "message": "x"}}, UpstreamRateLimited),
        (None, {"error": {"code": "429", "message": "x"}}, UpstreamRateLimited),
        (None, {"error": {"message": "x", "type": "context_length_exceeded"}}, UpstreamBadRequest),
        (None, {"error": {"status": "UNAVAILABLE", "message": "x"}}, UpstreamServerError),
        (None, {"error": "something broke"}, UpstreamServerError),
    ],
)
def test_error_from_response(status, body, cls) -> None:
    assert type(error_from_response(status, body)) is cls


def test_loading_carries_the_retry_after() -> None:
    body = b'{"error": {"code": 503, "message": "Loading model", "type": "unavailable_error"}}'
    err = error_from_response(503, body, headers={"retry-after": "7"}, provider="llama.cpp")
    assert isinstance(err, UpstreamLoading)
    assert (err.retry_after, err.code, str(err)) == (
        7.0,
        "upstream_loading",
        "llama.cpp returned HTTP 503 [unavailable_error]: Loading model",
    )
    assert error_from_response(503, body).retry_after is None


def test_message_is_safe() -> None:
    key = "sk-proj-abcdefghijklmnopqrstuvwxyz"
    body = f'{{"error": {{"message": "Incorrect API key provided: {key}. Also sk-other-1234567890abc"}}}}'
    err = error_from_response(401, body.encode(), provider="OpenAI", secrets=(key,))
    assert key not in str(err)
    assert "sk-other" not in str(err)
    assert str(err) == "OpenAI returned HTTP 401: Incorrect API key provided: ***. Also ***"


def test_message_is_truncated() -> None:
    err = error_from_response(400, b'{"error": {"message": "' + b"x" * 5000 + b'"}}')
    assert len(str(err)) <= 500


def test_redact_short_secrets_are_left_alone() -> None:
    assert redact("abc def", ("abc",)) == "abc def"
    assert redact("key=AIzaSyA0123456789abcdefghijklmn", ()) == "key=***"


NOW = datetime(2026, 11, 22, 3, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "12"}, 12.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "Sun, 22 Nov 2026 03:00:30 GMT"}, 30.0),
        ({"retry-after": "Sun, 22 Nov 2026 02:59:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "-3"}, None),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({}, None),
    ],
)
def test_parse_retry_after(headers, expected) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_retry_after_on_429() -> None:
    err = error_from_response(429, b"{}", headers={"retry-after": "4"})
    assert isinstance(err, UpstreamRateLimited)
    assert err.retry_after == 4.0


@pytest.mark.parametrize("attempt", [0, 1, 2, 3, 10])
def test_retry_delay_backoff_is_jittered_and_capped(attempt: int) -> None:
    d = min(8.0, 0.5 * 2**attempt)
    delays = {retry_delay(attempt) for _ in range(50)}
    assert all(d / 2 <= x <= d for x in delays)
    assert len(delays) > 1


def test_retry_delay_honours_retry_after() -> None:
    assert 3.0 <= retry_delay(0, retry_after=3.0) <= 3.1
    assert 30.0 <= retry_delay(0, retry_after=1000) <= 30.1
    assert 2.0 <= error_retry_delay(UpstreamRateLimited("x", retry_after=2.0), 5) <= 2.1
    assert error_retry_delay(UpstreamServerError("x"), 0) <= 0.5
