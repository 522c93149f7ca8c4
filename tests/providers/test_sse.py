"""The incremental SSE parser: table-driven cases, every split point, property tests."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from apps.providers.adapters.errors import UpstreamProtocolError
from apps.providers.adapters.sse import (
    DONE,
    JSONEvent,
    SSEEvent,
    SSEParser,
    aiter_json_events,
    aiter_sse,
    iter_json_events,
)


def parse_all(raw: bytes, *, splits: list[int] | None = None) -> list[SSEEvent]:
    parser = SSEParser()
    events: list[SSEEvent] = []
    if splits is None:
        events += parser.feed(raw)
    else:
        last = 0
        for cut in [*splits, len(raw)]:
            events += parser.feed(raw[last:cut])
            last = cut
    events += parser.flush()
    return events


E = SSEEvent

CASES = [
    ("lf", b"data: a\n\ndata: b\n\n", [E(None, "a"), E(None, "b")]),
    ("crlf", b"data: a\r\n\r\ndata: b\r\n\r\n", [E(None, "a"), E(None, "b")]),
    ("cr", b"data: a\r\rdata: b\r\r", [E(None, "a"), E(None, "b")]),
    ("mixed line ends", b"data: a\r\ndata: b\n\rdata: c\r\n\n", [E(None, "a\nb"), E(None, "c")]),
    ("multi-line data", b"data: line1\ndata: line2\ndata:\ndata: line4\n\n", [E(None, "line1\nline2\n\nline4")]),
    ("no space after colon", b'data:{"a":1}\n\n', [E(None, '{"a":1}')]),
    ("only first space stripped", b"data:  two\n\n", [E(None, " two")]),
    ("comments and keep-alives", b": keep-alive\n\n:ping\ndata: x\n: mid\n\n", [E(None, "x")]),
    (
        "event names",
        b"event: message_start\ndata: {}\n\nevent: ping\ndata: {}\n\n",
        [E("message_start", "{}"), E("ping", "{}")],
    ),
    ("event name reset after dispatch", b"event: a\ndata: 1\n\ndata: 2\n\n", [E("a", "1"), E(None, "2")]),
    (
        "id persists, retry",
        b"id: 7\nretry: 1500\ndata: a\n\ndata: b\n\n",
        [E(None, "a", "7", 1500), E(None, "b", "7", 1500)],
    ),
    ("invalid retry ignored", b"retry: soon\ndata: a\n\n", [E(None, "a")]),
    ("event without data not dispatched", b"event: x\n\n\n\ndata: y\n\n", [E(None, "y")]),
    ("empty data line dispatches empty", b"data:\n\n", [E(None, "")]),
    ("field name without colon", b"data\n\n", [E(None, "")]),
    ("unknown field ignored", b"foo: bar\ndata: a\n\n", [E(None, "a")]),
    ("bom", b"\xef\xbb\xbfdata: a\n\n", [E(None, "a")]),
    ("bom only at start", b"data: \xef\xbb\xbfa\n\n", [E(None, "\ufeffa")]),
    ("utf-8", "data: 你好，世界🙂\n\n".encode(), [E(None, "你好，世界🙂")]),
    ("trailing event without blank line", b"data: a\n\ndata: tail", [E(None, "a"), E(None, "tail")]),
    ("done", b'data: {"x":1}\n\ndata: [DONE]\n\n', [E(None, '{"x":1}'), E(None, "[DONE]")]),
    ("invalid utf-8 replaced", b"data: \xff\n\n", [E(None, "\ufffd")]),
]


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_whole(raw: bytes, expected: list[SSEEvent]) -> None:
    assert parse_all(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_split_at_every_point(raw: bytes, expected: list[SSEEvent]) -> None:
    for cut in range(len(raw) + 1):
        assert parse_all(raw, splits=[cut]) == expected, cut


@pytest.mark.parametrize(("raw", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_parse_byte_by_byte(raw: bytes, expected: list[SSEEvent]) -> None:
    assert parse_all(raw, splits=list(range(1, len(raw)))) == expected


def test_cr_at_end_of_read_then_lf_is_one_line_end() -> None:
    # given a CRLF split exactly between the two bytes
    parser = SSEParser()
    # when
    first = parser.feed(b"data: a\r")
    second = parser.feed(b"\n\r")
    third = parser.feed(b"\ndata: b\r\n\r\n")
    # then: no phantom blank line between CR and LF
    assert first == []
    assert second == [E(None, "a")]
    assert third == [E(None, "b")]


def test_multibyte_char_split_across_reads() -> None:
    raw = "data: 龍\n\n".encode()
    parser = SSEParser()
    assert parser.feed(raw[:7]) == []  # "data: " + first byte of 龍
    assert parser.feed(raw[7:8]) == []
    assert parser.feed(raw[8:]) == [E(None, "龍")]


def test_bom_split_across_reads() -> None:
    parser = SSEParser()
    assert parser.feed(b"\xef") == []
    assert parser.feed(b"\xbb") == []
    assert parser.feed(b"\xbfdata: a\n\n") == [E(None, "a")]


def test_flush_is_idempotent() -> None:
    parser = SSEParser()
    parser.feed(b"data: a")
    assert parser.flush() == [E(None, "a")]
    assert parser.flush() == []


def test_huge_line_is_a_protocol_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("apps.providers.adapters.sse.MAX_LINE_BYTES", 100)
    parser = SSEParser()
    with pytest.raises(UpstreamProtocolError):
        parser.feed(b"data: " + b"x" * 200)


# --- JSON helpers -------------------------------------------------------------------------------


def test_iter_json_events_decodes_and_recognises_done() -> None:
    events = [E(None, '{"a": 1}'), E("x", "[1, 2]"), E(None, ""), E(None, "[DONE]")]
    assert list(iter_json_events(events)) == [JSONEvent(None, {"a": 1}), JSONEvent("x", [1, 2]), JSONEvent(None, DONE)]


def test_iter_json_events_invalid_json_raises_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError, match="invalid JSON"):
        list(iter_json_events([E(None, "{not json")]))


async def _agen(chunks: list[bytes]):
    for c in chunks:
        yield c


async def test_aiter_sse_and_aiter_json_events() -> None:
    raw = [b'data: {"a"', b": 1}\n\nda", b"ta: [DONE]"]
    assert [e async for e in aiter_sse(_agen(raw))] == [E(None, '{"a": 1}'), E(None, "[DONE]")]
    assert [e.data async for e in aiter_json_events(_agen(raw))] == [{"a": 1}, DONE]


# --- properties -------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=20)
_event = st.tuples(
    st.one_of(st.none(), st.sampled_from(["a", "message_delta"])), st.lists(_text, min_size=1, max_size=3)
)


def _encode(events: list[tuple[str | None, list[str]]], le: str) -> bytes:
    out = []
    for name, lines in events:
        if name:
            out.append(f"event: {name}{le}")
        out += [f"data: {line}{le}" for line in lines]
        out.append(le)
    return "".join(out).encode()


@settings(max_examples=200, deadline=None)
@given(
    events=st.lists(_event, max_size=6),
    le=st.sampled_from(["\n", "\r\n", "\r"]),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=8),
)
def test_any_split_gives_the_same_events(events, le, cuts) -> None:
    raw = _encode(events, le)
    expected = [E(name, "\n".join(lines)) for name, lines in events]
    splits = sorted({c for c in cuts if c <= len(raw)})
    assert parse_all(raw, splits=splits) == expected


@settings(max_examples=300, deadline=None)
@given(raw=st.binary(max_size=300), cuts=st.lists(st.integers(min_value=0, max_value=300), max_size=10))
def test_arbitrary_bytes_never_crash_and_splits_do_not_matter(raw: bytes, cuts: list[int]) -> None:
    whole = parse_all(raw)
    assert parse_all(raw, splits=sorted({c for c in cuts if c <= len(raw)})) == whole
    assert all(isinstance(e.data, str) for e in whole)
