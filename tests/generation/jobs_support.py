"""Resumable generations in tests: a reader of a job's SSE events (the fixtures are in conftest.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

JOB_BODY = {"mode": "writing", "parameters": {"主角名字": "李明", "故事背景": "现代都市"}, "userInput": "写吧"}


@dataclass
class Event:
    id: str
    data: str

    @property
    def json(self) -> Any:
        return orjson.loads(self.data)


@dataclass
class Read:
    events: list[Event] = field(default_factory=list)
    raw: bytes = b""
    pings: int = 0

    @property
    def done(self) -> bool:
        return bool(self.events) and self.events[-1].data == "[DONE]"

    @property
    def text(self) -> str:
        return "".join(e.json.get("content", "") for e in self.events if e.data != "[DONE]")

    @property
    def final(self) -> Any:
        return self.events[-2].json


def parse(raw: bytes) -> tuple[list[Event], int]:
    events, pings = [], 0
    for block in raw.decode().split("\n\n"):
        if block.startswith(": ping"):
            pings += 1
            continue
        fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line and not line.startswith(":"))
        if "data" in fields:
            events.append(Event(fields.get("id", ""), fields["data"]))
    return events, pings


def read_events(
    client: httpx.Client, url: str, *, limit: int | None = None, headers: dict[str, str] | None = None
) -> Read:
    """Read a job's event stream to its end, or drop the connection after `limit` events."""
    raw = b""
    with client.stream("GET", url, headers=headers or {}, timeout=30) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for chunk in response.iter_raw():
            raw += chunk
            if limit is not None and len(parse(raw[: raw.rfind(b"\n\n") + 2])[0]) >= limit:
                break
    events, pings = parse(raw[: raw.rfind(b"\n\n") + 2])
    if limit is not None:
        events = events[:limit]
    return Read(events, raw, pings)


def create(client: httpx.Client, body: dict[str, Any]) -> Any:
    response = client.post("/api/v1/generation/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")
