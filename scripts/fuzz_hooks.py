"""Schemathesis hooks for scripts/fuzz_api.sh: boundary values the schema-driven generator does not
reach by itself — dates at the ends of the calendar and integers beyond 64 bits in query parameters
(`?page=99999999999999999999` and `billing/usage?to=9999-12-31` once answered 500)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import strategies as st

EXTREME_DATES = ["0001-01-01", "1969-12-31", "9999-12-31", "2000-02-29", "2100-02-28"]
EXTREME_INTEGERS = [0, -1, 2**31, 2**63 - 1, 2**63, 2**64, 10**20, -(2**63) - 1]

schemathesis.openapi.format("date", st.sampled_from(EXTREME_DATES) | st.dates().map(lambda d: d.isoformat()))


@schemathesis.hook
def map_query(ctx: Any, query: dict[str, Any] | None) -> dict[str, Any] | None:
    """Now and then, push every integer-looking query value to a 64-bit boundary or past it."""
    if not query:
        return query
    boundary = EXTREME_INTEGERS[hash(tuple(sorted(query))) % len(EXTREME_INTEGERS)]
    return {
        key: boundary if isinstance(value, int) and not isinstance(value, bool) else value
        for key, value in query.items()
    }
