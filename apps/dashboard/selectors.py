"""The dashboard's reads: billing's usage sums (the same ones `/billing/usage` answers with) and the
upstream calls per connection (counted as the metrics count them). Nothing is computed here that those
selectors do not already compute."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from apps.billing.selectors import UsageRow, day_bounds, usage_by, usage_by_day
from apps.generation.selectors import ConnectionCalls, upstream_calls_by_connection

TOP_USERS = 10


@dataclass(frozen=True, slots=True)
class Dashboard:
    start: date
    end: date
    timezone: str
    days: list[dict[str, Any]]  # `usage_by_day`'s days: {"date", *USAGE_FIELDS}
    totals: dict[str, int]
    models: list[UsageRow]
    users: list[UsageRow]  # the largest spenders first
    connections: list[ConnectionCalls]


def usage_dashboard(*, start: date, end: date, top_users: int | None = TOP_USERS) -> Dashboard:
    """Every user's usage from `start` to `end` (billing days, inclusive): per day, per model, the top
    users (all of them with `top_users=None`), and the upstream calls per connection of those days."""
    per_day = usage_by_day(user=None, start=start, end=end)
    since, until = day_bounds(start=start, end=end)
    return Dashboard(
        start=start,
        end=end,
        timezone=per_day["timezone"],
        days=per_day["days"],
        totals=per_day["totals"],
        models=usage_by(group="model", start=start, end=end),
        users=usage_by(group="user", start=start, end=end, limit=top_users),
        connections=upstream_calls_by_connection(since=since, until=until),
    )
