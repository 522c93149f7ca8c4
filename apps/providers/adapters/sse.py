"""Incremental Server-Sent Events parser (pure Python, no Django imports).

Follows the WHATWG "event stream interpretation" rules:

* line ends ``\\r\\n``, ``\\n`` or ``\\r`` (also a ``\\r`` at the end of one read followed by ``\\n`` at
  the start of the next);
* ``data:`` lines of one event joined with ``\\n``; one optional space after the colon is removed;
* comment lines (``: keep-alive``) ignored; ``event:``, ``id:``, ``retry:`` fields;
* a UTF-8 BOM at the very start ignored; UTF-8 characters split across reads decoded correctly
  (the parser works on bytes and decodes complete lines only);
* an event is dispatched on a blank line; an event without data is not dispatched.

This is the per-chunk hot path: it splits whole reads with ``bytes.split`` (C speed) and only loops
in Python over complete lines.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import orjson

from apps.providers.adapters.errors import UpstreamProtocolError

__all__ = [
    "DONE",
    "JSONEvent",
    "SSEEvent",
    "SSEParser",
    "aiter_json_events",
    "aiter_sse",
    "iter_json_events",
    "parse_json_event",
]

_BOM: Final = b"\xef\xbb\xbf"
MAX_LINE_BYTES: Final = 16 * 1024 * 1024  # a single line above this is garbage, not SSE


class SSEEvent(NamedTuple):
    """One dispatched event (a NamedTuple: immutable and cheap to create on the hot path)."""

    event: str | None
    data: str
    id: str | None = None
    retry: int | None = None


class SSEParser:
    """Feed raw bytes as they arrive; get back the events completed by them."""

    __slots__ = ("_buf", "_data", "_event", "_id", "_pending_cr", "_retry", "_started")

    def __init__(self) -> None:
        self._buf = b""  # incomplete last line
        self._data: list[bytes] = []
        self._event: str | None = None
        self._id: str | None = None  # "last event id" persists across events (spec)
        self._retry: int | None = None
        self._pending_cr = False
        self._started = False

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        if not chunk:
            return []
        if not self._started:
            buf = self._buf + chunk
            if len(buf) < 3 and _BOM.startswith(buf):
                self._buf = buf  # could still become a BOM
                return []
            self._started = True
            self._buf = b""
            chunk = buf[3:] if buf.startswith(_BOM) else buf
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        if b"\r" in chunk:
            if chunk[-1:] == b"\r":
                self._pending_cr = True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        if b"\n" not in chunk:
            self._buf += chunk
            if len(self._buf) > MAX_LINE_BYTES:
                raise UpstreamProtocolError("upstream sent an SSE line longer than 16 MiB")
            return []
        lines = (self._buf + chunk).split(b"\n")
        self._buf = lines.pop()
        return self._lines(lines)

    def flush(self) -> list[SSEEvent]:
        """End of stream: complete a trailing line/event that had no final blank line."""
        lines = []
        if self._buf:
            buf, self._buf = self._buf, b""
            if not self._started and _BOM.startswith(buf):
                buf = b""
            if buf:
                lines.append(buf)
        self._started = True
        lines.append(b"")
        return self._lines(lines)

    def _lines(self, lines: list[bytes]) -> list[SSEEvent]:
        out: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    payload = b"\n".join(data) if len(data) > 1 else data[0]
                    out.append(SSEEvent(self._event, payload.decode("utf-8", "replace"), self._id, self._retry))
                    data.clear()
                self._event = None
                continue
            if line[:5] == b"data:":
                data.append(line[6:] if line[5:6] == b" " else line[5:])
                continue
            if line[0] == 58:  # b":" comment / keep-alive
                continue
            name, sep, value = line.partition(b":")
            if sep and value[:1] == b" ":
                value = value[1:]
            if name == b"data":  # "data" without a colon: an empty data line
                data.append(value)
            elif name == b"event":
                self._event = value.decode("utf-8", "replace") or None
            elif name == b"id" and b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
            elif name == b"retry" and value.isdigit():
                self._retry = int(value)
            # unknown fields are ignored (spec)
        return out


async def aiter_sse(chunks: AsyncIterable[bytes]) -> AsyncIterator[SSEEvent]:
    """Parse an async byte stream into events (flushes at the end)."""
    parser = SSEParser()
    feed = parser.feed
    async for chunk in chunks:
        for event in feed(chunk):
            yield event
    for event in parser.flush():
        yield event


# ---------------------------------------------------------------------------------------------
# JSON payloads


class _Done:
    __slots__ = ()

    def __repr__(self) -> str:
        return "DONE"


DONE: Final = _Done()
"""Sentinel data of the ``data: [DONE]`` event."""


@dataclass(frozen=True, slots=True)
class JSONEvent:
    event: str | None
    data: Any  # the decoded JSON value, or DONE


def parse_json_event(event: SSEEvent) -> JSONEvent | None:
    """Decode one event's data; ``None`` for an empty-data event; raise on invalid JSON."""
    data = event.data
    if not data or data.isspace():
        return None
    if data == "[DONE]" or data.strip() == "[DONE]":
        return JSONEvent(event.event, DONE)
    try:
        return JSONEvent(event.event, orjson.loads(data))
    except orjson.JSONDecodeError:
        snippet = data[:80].replace("\n", "\\n")
        raise UpstreamProtocolError(f"upstream sent invalid JSON in an SSE event: {snippet!r}") from None


def iter_json_events(events: Iterable[SSEEvent]) -> Iterator[JSONEvent]:
    """Decode events' JSON data; yields ``JSONEvent(event, DONE)`` for ``[DONE]``; skips empty data;
    raises :class:`UpstreamProtocolError` on invalid JSON."""
    for event in events:
        decoded = parse_json_event(event)
        if decoded is not None:
            yield decoded


async def aiter_json_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[JSONEvent]:
    """Bytes → SSE → JSON in one async pass (what the adapters use)."""
    parser = SSEParser()
    feed = parser.feed
    async for chunk in chunks:
        for event in feed(chunk):
            decoded = parse_json_event(event)
            if decoded is not None:
                yield decoded
    for event in parser.flush():
        decoded = parse_json_event(event)
        if decoded is not None:
            yield decoded
