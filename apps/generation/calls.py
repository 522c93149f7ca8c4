"""The upstream calls one generation made, as both the metrics (`upstream_calls_total`) and the operators'
dashboard (error rate per connection) count them — one definition, so the two agree. No Django.

Every failed attempt before the first text is one call with its error code (`RoutedCall.attempts`: the
retries and the fallbacks). Then the call the generation ended on: `ok` when it succeeded, `cancelled`
when the client left, its error code when the upstream broke off after the first text. A generation
that failed before any text has no call beyond its attempts (its last attempt is that failure), nor has
one refused before any upstream call (busy, a bug of ours).
"""

from __future__ import annotations

OK = "ok"
CANCELLED = "cancelled"
NOT_FAILURES = frozenset({OK, CANCELLED})


def final_call_outcome(*, status: str, error_code: str, first_text: bool) -> str | None:
    """The outcome of the call a generation ended on (`status`: the record's), or None when it is already
    one of its attempts or there was none."""
    if status == "succeeded":
        return OK
    if status == "cancelled":
        return CANCELLED
    if status == "failed" and first_text and error_code.startswith("upstream_"):
        return error_code
    return None


def is_failure(outcome: str) -> bool:
    return outcome not in NOT_FAILURES
