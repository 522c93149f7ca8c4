"""How a stream's events reach the socket (uvicorn → Django → fake upstream over real sockets): events
parsed from one upstream read go out as one HTTP chunk (one ASGI body message, one write), a lone event
at once, pings while the upstream is silent, the same bytes as event-by-event writes — read with a bare
socket, so that the HTTP chunks the service wrote are seen as written."""

from __future__ import annotations

import socket
import time
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest

from apps.billing.models import Charge, Hold
from apps.billing.services import wallet_grant
from apps.generation import relay as relay_module
from apps.generation.models import Generation
from tests.fakes.upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)

WRITING = "/api/v1/generation/writing/stream"
PAUSE = 0.5  # between the upstream's writes


@pytest.fixture(autouse=True)
def funds(user: Any) -> None:
    wallet_grant(user=user, amount=100_000)


def upstream_event(content: str | None = None, *, finish: str | None = None, role: bool = False) -> bytes:
    """One OpenAI chat-completion chunk as the upstream sends it."""
    delta: dict[str, Any] = {"role": "assistant"} if role else {}
    if content is not None:
        delta["content"] = content
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + orjson.dumps({"id": "up", "object": "chat.completion.chunk", "choices": [choice]}) + b"\n\n"


UPSTREAM_DONE = upstream_event(finish="stop") + b"data: [DONE]\n\n"


def writing_body(prompt: Any) -> dict[str, Any]:
    return {"promptId": prompt.pk, "userInput": "写", "modelId": "gpt-4-turbo", "maxTokens": 256}


class Chunks:
    """A POST over a bare socket; `read()` gives the response's HTTP chunks (each one ASGI body message
    of the service) with the seconds since the request at which each was complete."""

    def __init__(self, base_url: str, path: str, body: dict[str, Any], token: str) -> None:
        url = urlsplit(base_url)
        assert url.hostname and url.port
        payload = orjson.dumps(body)
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {url.netloc}\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        )
        self.sock = socket.create_connection((url.hostname, url.port), timeout=10)
        self.started = time.monotonic()
        self.sock.sendall(head.encode() + payload)
        self.buf = b""
        self.head = b""

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the service closed the connection mid-response")
        self.buf += data

    def read(self, count: int | None = None) -> list[tuple[float, bytes]]:
        """The chunks up to the end of the body (or the first `count`)."""
        while not self.head:
            if b"\r\n\r\n" in self.buf:
                self.head, self.buf = self.buf.split(b"\r\n\r\n", 1)
            else:
                self._fill()
        assert self.head.startswith(b"HTTP/1.1 200 "), self.head
        assert b"transfer-encoding: chunked" in self.head.lower()
        chunks: list[tuple[float, bytes]] = []
        while count is None or len(chunks) < count:
            while b"\r\n" not in self.buf:
                self._fill()
            size_line, _, rest = self.buf.partition(b"\r\n")
            size = int(size_line, 16)
            while len(rest) < size + 2:
                self._fill()
                rest = self.buf.partition(b"\r\n")[2]
            self.buf = rest[size + 2 :]
            if size == 0:
                break
            chunks.append((time.monotonic() - self.started, rest[:size]))
        return chunks

    def close(self) -> None:
        self.sock.close()


def post_chunks(base_url: str, path: str, body: dict[str, Any], token: str) -> list[tuple[float, bytes]]:
    reader = Chunks(base_url, path, body, token)
    try:
        return reader.read()
    finally:
        reader.close()


def events_of(piece: bytes) -> list[bytes]:
    return [event + b"\n\n" for event in piece.split(b"\n\n")[:-1]]


def test_deltas_read_together_are_one_write_and_a_lone_first_delta_goes_at_once(
    live_server_url, token, fake_upstream, make_model, writing_prompt
):
    # given: the first delta alone, then three in one upstream write, then the end
    make_model()
    burst = upstream_event("二") + upstream_event("三") + upstream_event("四")
    fake_upstream.script(Reply(events=[upstream_event("一", role=True), burst, UPSTREAM_DONE], chunk_delay=PAUSE))

    # when
    chunks = post_chunks(live_server_url, WRITING, writing_body(writing_prompt), token)

    # then: one HTTP chunk per upstream write, each event's bytes as before, in order
    assert [piece for _at, piece in chunks[:2]] == [
        'data: {"content":"一"}\n\n'.encode(),
        'data: {"content":"二"}\n\ndata: {"content":"三"}\n\ndata: {"content":"四"}\n\n'.encode(),
    ]
    assert chunks[1][0] - chunks[0][0] > PAUSE * 0.6  # the first was not held back for the burst
    final, done = events_of(chunks[2][1])
    assert len(chunks) == 3 and done == b"data: [DONE]\n\n"
    final_event = orjson.loads(final.removeprefix(b"data: "))
    assert (final_event["content"], final_event["finishReason"]) == ("", "stop")
    record = Generation.objects.get()
    assert (record.status, record.content, record.output_chars) == ("succeeded", "一二三四", 4)


def test_openai_chunks_read_together_are_one_write_with_the_same_bytes(
    live_server_url, token, fake_upstream, make_model
):
    make_model()
    burst = upstream_event("乙") + upstream_event("丙")
    fake_upstream.script(Reply(events=[upstream_event("甲", role=True), burst, UPSTREAM_DONE], chunk_delay=PAUSE))
    body = {
        "model": "gpt-4-turbo",
        "messages": [{"role": "user", "content": "写"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }

    chunks = post_chunks(live_server_url, "/v1/chat/completions", body, token)

    first = orjson.loads(chunks[0][1].removeprefix(b"data: "))
    base = {"id": first["id"], "object": "chat.completion.chunk", "created": first["created"], "model": "gpt-4-turbo"}

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        return b"data: " + orjson.dumps({**base, "choices": [choice]}) + b"\n\n"

    assert len(chunks) == 3
    assert chunks[0][1] == chunk({"role": "assistant", "content": "甲"})
    assert chunks[1][1] == chunk({"content": "乙"}) + chunk({"content": "丙"})
    assert chunks[1][0] - chunks[0][0] > PAUSE * 0.6
    last, usage, done = events_of(chunks[2][1])
    assert last == chunk({}, "stop") and done == b"data: [DONE]\n\n"
    usage_chunk = orjson.loads(usage.removeprefix(b"data: "))
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["consumption"]["totalCost"] == 3
    assert Generation.objects.get().content == "甲乙丙"


def test_a_silent_upstream_still_gets_pings_each_written_at_once(
    live_server_url, token, fake_upstream, make_model, writing_prompt, monkeypatch
):
    monkeypatch.setattr(relay_module, "PING_INTERVAL", 0.1)
    make_model()
    burst = upstream_event("b") + upstream_event("c")
    fake_upstream.script(Reply(events=[upstream_event("a"), burst, UPSTREAM_DONE], chunk_delay=PAUSE))

    chunks = post_chunks(live_server_url, WRITING, writing_body(writing_prompt), token)

    pieces = [piece for _at, piece in chunks]
    assert pieces[0] == b'data: {"content":"a"}\n\n'
    burst_at = pieces.index(b'data: {"content":"b"}\n\ndata: {"content":"c"}\n\n')
    assert 2 <= burst_at - 1 <= 6 and set(pieces[1:burst_at]) == {b": ping\n\n"}  # each ping its own write
    assert set(pieces[burst_at + 1 : -1]) == {b": ping\n\n"}  # the upstream's silence before its end
    assert pieces[-1].endswith(b"data: [DONE]\n\n") and b'"finishReason":"stop"' in pieces[-1]


def test_a_client_gone_after_two_writes_of_bursts_is_cancelled_and_pays_for_what_it_got(
    live_server_url, token, fake_upstream, make_model, writing_prompt
):
    make_model()
    bursts = [b"".join(upstream_event(f"片{i}{part}") for part in "abc") for i in range(100)]
    fake_upstream.script(Reply(events=[*bursts, UPSTREAM_DONE], chunk_delay=0.05))

    reader = Chunks(live_server_url, WRITING, writing_body(writing_prompt), token)
    received = b"".join(piece for _at, piece in reader.read(2))
    reader.close()

    deadline = time.monotonic() + 5
    while (
        not fake_upstream.disconnects or Generation.objects.get().status == "pending"
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_upstream.disconnects and fake_upstream.disconnects[0].events_sent < 100
    record = Generation.objects.get()
    delivered = "".join(orjson.loads(event.removeprefix(b"data: "))["content"] for event in events_of(received))
    assert record.status == "cancelled" and record.content.startswith(delivered)
    assert delivered.startswith("片0a片0b片0c")
    charge = Charge.objects.get(generation_id=record.public_id)
    assert charge.output_chars == len(record.content) == record.output_chars
    assert Hold.objects.get().status == "settled"
