"""The process's event log of jobs and the reading of what a job delivered (no writes to the database)."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson
from django.conf import settings

from apps.generation.jobs.events import EventLog, MemoryEventLog, RedisEventLog


@cache
def _event_log(redis_url: str) -> EventLog:
    if not redis_url:
        return MemoryEventLog()
    return RedisEventLog(redis_url, max_connections=settings.REDIS_POOL_MAX_CONNECTIONS)


def event_log() -> EventLog:
    """The process's event log: a Redis stream per job, or memory on the embedded default."""
    return _event_log(settings.REDIS_URL)


def stream_ttl() -> int:
    """How long a job's events stay while it runs (refreshed at each event): past any hold's life."""
    return settings.BILLING_HOLD_TTL_SECONDS + settings.GENERATION_JOB_TTL_SECONDS


def dumps(payload: dict[str, Any]) -> str:
    return orjson.dumps(payload).decode()


def delivered_text(entries: list[Any]) -> tuple[str, str, str]:
    """(content, reasoning, model) of the delta events of a log: what the readers were given."""
    content, reasoning, model = [], [], ""
    for entry in entries:
        if entry.done:
            break
        model = model or entry.model
        event = orjson.loads(entry.data)
        if "finishReason" in event or "error" in event:
            break
        content.append(event.get("content", ""))
        reasoning.append(event.get("reasoning", ""))
    return "".join(content), "".join(reasoning), model
