"""A fake LLM upstream: a real HTTP/1.1 server on 127.0.0.1 speaking OpenAI chat and text
completions, Anthropic Messages and Gemini generateContent (JSON and SSE), with scriptable
latency, errors, hangs, resets, garbage and awkward TCP splits.

It is a raw asyncio server (``asyncio.Protocol``) running on its own event loop in a background
thread, so tests on any loop can use it, it sees client disconnects the moment they happen, and it
can abort sockets (RST) or split writes wherever we like.

Use from tests through the fixtures in ``tests/fakes/fixtures.py``::

    def test_x(fake_upstream):
        fake_upstream.script(Reply(chunks=["你好", "world"], finish="length"))
        ... base_url=fake_upstream.base_url ...
        assert fake_upstream.requests[-1].json["model"] == "m"

Standalone (benchmarks, manual runs)::

    python -m tests.fakes.upstream --port 9999 --chunks 20 --chunk-delay 0.01

A request may also carry ``x-fake-reply: {json of Reply fields}`` to script itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson

DEFAULT_CHUNKS: tuple[str, ...] = ("Hello", ", ", "world", "!")
AUTO = "auto"


# ---------------------------------------------------------------------------------------------
# What to answer


@dataclass
class Reply:
    """One scripted answer. Finish reasons are given in OpenAI terms (``stop``/``length``/
    ``content_filter``) and translated per protocol; ``raw_finish`` is sent verbatim instead."""

    status: int = 200
    chunks: Sequence[str] = DEFAULT_CHUNKS
    reasoning: Sequence[str] = ()
    reasoning_field: str = "reasoning_content"  # OpenAI chat: or "reasoning" (OpenRouter)
    finish: str | None = "stop"  # None ⇒ no finish reason is sent at all
    raw_finish: str | None = None
    usage: Any = AUTO  # AUTO ⇒ (10, len(chunks)+len(reasoning)); (prompt, completion); None ⇒ none
    force_usage: bool = False  # OpenAI chat: send usage even if the client didn't ask include_usage
    done: bool = True  # send the terminal event ([DONE] / message_stop)
    error_message: str = ""
    error_type: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)  # extra response headers
    latency: float = 0.0  # before the response headers
    chunk_delay: float = 0.0  # between events
    hang: bool = False  # never answer (hold the connection until the client goes away)
    hang_after: int | None = None  # send this many content events, then go silent
    reset_after: int | None = None  # send this many content events, then abort the socket (RST)
    garbage: bytes | None = None  # a 200 event stream whose body is these bytes
    events: Sequence[bytes] | None = None  # a 200 event stream of exactly these raw bytes pieces
    json_body: Any = None  # answer this JSON instead of the rendered completion (or error) body
    stream_error: Mapping[str, Any] | None = None  # in-stream error event after the chunks
    block_reason: str | None = None  # Gemini promptFeedback.blockReason (no candidates)
    split: int | None = None  # write the body in pieces of this many bytes (separate TCP writes)
    split_delay: float = 0.002
    keepalive: bool = False  # ": keep-alive" comment lines between events
    line_ending: str = "\n"
    bom: bool = False  # start the event stream with a UTF-8 BOM
    close_after: bool = False  # close the connection after answering, without saying so (llama.cpp does)

    @classmethod
    def error(
        cls,
        status: int,
        message: str = "",
        *,
        type: str | None = None,
        retry_after: str | float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        hdrs = dict(headers or {})
        if retry_after is not None:
            hdrs["retry-after"] = str(retry_after)
        return cls(status=status, error_message=message, error_type=type, headers=hdrs)

    def usage_pair(self) -> tuple[int, int] | None:
        if self.usage is None:
            return None
        if self.usage == AUTO:
            return 10, len(self.chunks) + len(self.reasoning)
        prompt, completion = self.usage
        return int(prompt), int(completion)


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    connection: int = 0  # serial number of the TCP connection it came on (keep-alive reuse)

    @property
    def json(self) -> Any:
        return orjson.loads(self.body) if self.body else None


@dataclass(frozen=True)
class Disconnect:
    path: str
    events_sent: int  # content events written before the client went away
    at: float  # time.monotonic()


# ---------------------------------------------------------------------------------------------
# Protocol renderers: (status, headers, body) for JSON; list of (bytes, is_content) for streams

_OPENAI_ERR = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    529: "overloaded_error",
}
_GOOGLE_ERR = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    529: "UNAVAILABLE",
}
_ANTHROPIC_FINISH = {"stop": "end_turn", "length": "max_tokens", "content_filter": "refusal"}
_GEMINI_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "content_filter": "SAFETY"}


def error_body(protocol: str, reply: Reply) -> dict[str, Any]:
    status = reply.status
    message = reply.error_message
    if not message:
        try:
            message = HTTPStatus(status).phrase
        except ValueError:
            message = "Overloaded" if status == 529 else "error"
    if protocol == "anthropic":
        return {
            "type": "error",
            "error": {"type": reply.error_type or _OPENAI_ERR.get(status, "api_error"), "message": message},
        }
    if protocol == "gemini":
        return {
            "error": {
                "code": status,
                "message": message,
                "status": reply.error_type or _GOOGLE_ERR.get(status, "UNKNOWN"),
            }
        }
    return {
        "error": {
            "message": message,
            "type": reply.error_type or _OPENAI_ERR.get(status, "api_error"),
            "param": None,
            "code": reply.error_type,
        }
    }


def _finish(reply: Reply, table: Mapping[str, str] | None) -> str | None:
    if reply.raw_finish is not None:
        return reply.raw_finish
    if reply.finish is None:
        return None
    return table.get(reply.finish, reply.finish) if table else reply.finish


def _openai_usage(pair: tuple[int, int]) -> dict[str, int]:
    return {"prompt_tokens": pair[0], "completion_tokens": pair[1], "total_tokens": pair[0] + pair[1]}


def render_json(protocol: str, reply: Reply, model: str) -> dict[str, Any]:
    text = "".join(reply.chunks)
    reasoning = "".join(reply.reasoning)
    usage = reply.usage_pair()
    if protocol == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning:
            message[reply.reasoning_field] = reasoning
        body: dict[str, Any] = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": _finish(reply, None)}],
        }
        if usage:
            body["usage"] = _openai_usage(usage)
        return body
    if protocol == "text":
        body = {
            "id": "cmpl-fake",
            "object": "text_completion",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "text": text, "finish_reason": _finish(reply, None)}],
        }
        if usage:
            body["usage"] = _openai_usage(usage)
        return body
    if protocol == "anthropic":
        content = []
        if reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": "sig"})
        content.append({"type": "text", "text": text})
        body = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": _finish(reply, _ANTHROPIC_FINISH),
            "stop_sequence": None,
        }
        if usage:
            body["usage"] = {"input_tokens": usage[0], "output_tokens": usage[1]}
        return body
    # gemini
    if reply.block_reason:
        body = {"promptFeedback": {"blockReason": reply.block_reason}}
    else:
        parts = ([{"text": reasoning, "thought": True}] if reasoning else []) + [{"text": text}]
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        finish = _finish(reply, _GEMINI_FINISH)
        if finish:
            candidate["finishReason"] = finish
        body = {"candidates": [candidate], "modelVersion": model}
    if usage:
        body["usageMetadata"] = {
            "promptTokenCount": usage[0],
            "candidatesTokenCount": usage[1],
            "totalTokenCount": usage[0] + usage[1],
        }
    return body


def _data(obj: Any, le: str) -> bytes:
    return b"data: " + orjson.dumps(obj) + (le * 2).encode()


def render_stream(protocol: str, reply: Reply, model: str, include_usage: bool) -> list[tuple[bytes, bool]]:
    le = reply.line_ending
    usage = reply.usage_pair()
    finish = None
    out: list[tuple[bytes, bool]] = []
    if protocol == "chat":
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1700000000, "model": model}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            return _data({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}, le)

        out.append((chunk({"role": "assistant", "content": None}), False))
        out += [(chunk({reply.reasoning_field: r}), True) for r in reply.reasoning]
        out += [(chunk({"content": c}), True) for c in reply.chunks]
        if reply.stream_error is not None:
            out.append((_data({"error": dict(reply.stream_error)}, le), False))
        else:
            finish = _finish(reply, None)
            if finish:
                out.append((chunk({}, finish), False))
            if usage and (include_usage or reply.force_usage):
                out.append((_data({**base, "choices": [], "usage": _openai_usage(usage)}, le), False))
        if reply.done:
            out.append((b"data: [DONE]" + (le * 2).encode(), False))
        return out
    if protocol == "text":
        base = {"id": "cmpl-fake", "object": "text_completion", "created": 1700000000, "model": model}
        out += [
            (_data({**base, "choices": [{"index": 0, "text": c, "finish_reason": None}]}, le), True)
            for c in reply.chunks
        ]
        if reply.stream_error is not None:
            out.append((_data({"error": dict(reply.stream_error)}, le), False))
        else:
            last: dict[str, Any] = {
                **base,
                "choices": [{"index": 0, "text": "", "finish_reason": _finish(reply, None)}],
            }
            if usage:
                last["usage"] = _openai_usage(usage)
            if last["choices"][0]["finish_reason"] or usage:
                out.append((_data(last, le), False))
        if reply.done:
            out.append((b"data: [DONE]" + (le * 2).encode(), False))
        return out
    if protocol == "anthropic":

        def ev(name: str, obj: dict[str, Any]) -> bytes:
            return f"event: {name}{le}".encode() + _data(obj, le)

        start_usage = {"input_tokens": usage[0], "output_tokens": 1} if usage else {}
        out.append(
            (
                ev(
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": "msg_fake",
                            "type": "message",
                            "role": "assistant",
                            "model": model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": start_usage,
                        },
                    },
                ),
                False,
            )
        )
        index = 0
        if reply.reasoning:
            out.append(
                (
                    ev(
                        "content_block_start",
                        {
                            "type": "content_block_start",
                            "index": index,
                            "content_block": {"type": "thinking", "thinking": ""},
                        },
                    ),
                    False,
                )
            )
            out += [
                (
                    ev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "thinking_delta", "thinking": r},
                        },
                    ),
                    True,
                )
                for r in reply.reasoning
            ]
            out.append(
                (
                    ev(
                        "content_block_delta",
                        {
                            "type": "content_block_delta",
                            "index": index,
                            "delta": {"type": "signature_delta", "signature": "sig"},
                        },
                    ),
                    False,
                )
            )
            out.append((ev("content_block_stop", {"type": "content_block_stop", "index": index}), False))
            index += 1
        out.append(
            (
                ev(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                ),
                False,
            )
        )
        out.append((ev("ping", {"type": "ping"}), False))
        out += [
            (
                ev(
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": {"type": "text_delta", "text": c}},
                ),
                True,
            )
            for c in reply.chunks
        ]
        if reply.stream_error is not None:
            out.append((ev("error", {"type": "error", "error": dict(reply.stream_error)}), False))
            return out
        out.append((ev("content_block_stop", {"type": "content_block_stop", "index": index}), False))
        finish = _finish(reply, _ANTHROPIC_FINISH)
        delta_usage = {"output_tokens": usage[1]} if usage else {}
        out.append(
            (
                ev(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": finish, "stop_sequence": None},
                        "usage": delta_usage,
                    },
                ),
                False,
            )
        )
        if reply.done:
            out.append((ev("message_stop", {"type": "message_stop"}), False))
        return out
    # gemini
    if reply.block_reason:
        body: dict[str, Any] = {"promptFeedback": {"blockReason": reply.block_reason}}
        if usage:
            body["usageMetadata"] = {"promptTokenCount": usage[0], "totalTokenCount": usage[0]}
        return [(_data(body, le), False)]

    def cand(parts: list[dict[str, Any]], finish_reason: str | None = None) -> dict[str, Any]:
        c: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish_reason:
            c["finishReason"] = finish_reason
        return {"candidates": [c], "modelVersion": model}

    items: list[tuple[dict[str, Any], bool]] = [(cand([{"text": r, "thought": True}]), True) for r in reply.reasoning]
    items += [(cand([{"text": c}]), True) for c in reply.chunks]
    if reply.stream_error is not None:
        out += [(_data(obj, le), is_c) for obj, is_c in items]
        out.append((_data({"error": dict(reply.stream_error)}, le), False))
        return out
    finish = _finish(reply, _GEMINI_FINISH)
    if items:
        last_obj = items[-1][0]
        if finish:
            last_obj["candidates"][0]["finishReason"] = finish
    else:
        items.append((cand([{"text": ""}], finish), False))
        last_obj = items[-1][0]
    if usage:
        for obj, _ in items[:-1]:
            obj["usageMetadata"] = {"promptTokenCount": usage[0], "totalTokenCount": usage[0]}
        last_obj["usageMetadata"] = {
            "promptTokenCount": usage[0],
            "candidatesTokenCount": usage[1],
            "totalTokenCount": usage[0] + usage[1],
        }
    return [(_data(obj, le), is_c) for obj, is_c in items]


def models_body(protocol: str) -> dict[str, Any]:
    names = ("fake-model", "fake-model-2")
    if protocol == "anthropic":
        return {
            "data": [
                {"type": "model", "id": n, "display_name": n.title(), "created_at": "2025-01-01T00:00:00Z"}
                for n in names
            ],
            "has_more": False,
            "first_id": names[0],
            "last_id": names[-1],
        }
    if protocol == "gemini":
        return {
            "models": [
                {"name": f"models/{n}", "displayName": n.title(), "supportedGenerationMethods": ["generateContent"]}
                for n in names
            ]
        }
    return {
        "object": "list",
        "data": [{"id": n, "object": "model", "created": 1700000000, "owned_by": "fake"} for n in names],
    }


# ---------------------------------------------------------------------------------------------
# The server


async def collect(stream: Any) -> tuple[str, str, Any, list[Any]]:
    """Test helper: run an adapter stream to the end → (content, reasoning, final delta, all deltas)."""
    deltas = [d async for d in stream]
    content = "".join(d.content for d in deltas)
    reasoning = "".join(d.reasoning for d in deltas)
    return content, reasoning, deltas[-1], deltas


class _ClientGone(Exception):
    pass


def _route(method: str, path: str, headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(protocol, action) for a path; action ∈ json | stream | models | maybe-stream."""
    p = path.rstrip("/")
    if method == "GET":
        if p.endswith("/models") or p == "/models":
            if "v1beta" in p or "/v1alpha" in p:
                return "gemini", "models"
            if "anthropic-version" in headers:
                return "anthropic", "models"
            return "chat", "models"
        return None
    if p.endswith("/chat/completions"):
        return "chat", "maybe-stream"
    if p.endswith("/completions"):
        return "text", "maybe-stream"
    if p.endswith("/messages"):
        return "anthropic", "maybe-stream"
    if ":streamGenerateContent" in p:
        return "gemini", "stream"
    if ":generateContent" in p:
        return "gemini", "json"
    return None


class _Conn(asyncio.Protocol):
    def __init__(self, server: FakeUpstream) -> None:
        self.server = server
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.aborted_by_us = False
        self.in_response: tuple[str, int] | None = None  # (path, epoch) while answering
        self.events_sent = 0
        self.serial = 0
        self._data_ev = asyncio.Event()
        self._closed_fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._writable = asyncio.Event()
        self._writable.set()
        self._task: asyncio.Task[None] | None = None

    # protocol callbacks ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's transports are not subclasses
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server._conns.add(self)
        self.server._serial += 1
        self.serial = self.server._serial
        self._task = asyncio.get_running_loop().create_task(self._serve())
        self.server._tasks.add(self._task)
        self._task.add_done_callback(self.server._tasks.discard)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        self._data_ev.set()

    def eof_received(self) -> bool:
        self._gone()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._gone()
        self.server._conns.discard(self)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    def _gone(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._writable.set()
        self._data_ev.set()
        if not self._closed_fut.done():
            self._closed_fut.set_result(None)
        if self.in_response is not None and not self.aborted_by_us:
            path, epoch = self.in_response
            if epoch == self.server.epoch:
                self.server.disconnects.append(Disconnect(path, self.events_sent, time.monotonic()))

    # helpers ------------------------------------------------------------------------------
    async def _write(self, data: bytes) -> None:
        if self.closed or self.transport is None or self.transport.is_closing():
            raise _ClientGone
        self.transport.write(data)
        if not self._writable.is_set():
            await self._writable.wait()
            if self.closed:
                raise _ClientGone

    async def _sleep(self, seconds: float | None) -> None:
        if self.closed:
            raise _ClientGone
        if seconds is None:  # until the client goes away
            await self._closed_fut
            raise _ClientGone
        # A plain sleep is cheap; a disconnect is recorded by the protocol callbacks the moment it
        # happens, and the next write notices it.
        await asyncio.sleep(max(0.0, seconds))
        if self.closed:
            raise _ClientGone

    def _abort(self) -> None:
        self.aborted_by_us = True
        assert self.transport is not None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()

    async def _read_request(self) -> tuple[str, str, dict[str, str], bytes] | None:
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end >= 0:
                break
            if self.closed:
                return None
            self._data_ev.clear()
            await self._data_ev.wait()
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[: end + 4]
        lines = head.split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        while len(self.buf) < length:
            if self.closed:
                return None
            self._data_ev.clear()
            await self._data_ev.wait()
        body = bytes(self.buf[:length])
        del self.buf[:length]
        return method, target, headers, body

    async def _serve(self) -> None:
        try:
            while not self.closed:
                request = await self._read_request()
                if request is None:
                    return
                method, target, headers, body = request
                parts = urlsplit(target)
                recorded = RecordedRequest(method, parts.path, parse_qs(parts.query), headers, body, self.serial)
                self.server.requests.append(recorded)
                self.in_response = (parts.path, self.server.epoch)
                self.events_sent = 0
                self.close_after = False
                try:
                    await self._respond(recorded)
                finally:
                    self.in_response = None
                if headers.get("connection", "").lower() == "close" or self.close_after:
                    self._close()
                    return
        except _ClientGone:
            return
        except Exception:  # a bug in the fake must not hang the client
            if self.transport is not None and not self.closed:
                self._abort()
            raise

    def _close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    async def _send_head(self, status: int, headers: Mapping[str, str]) -> None:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = "Overloaded" if status == 529 else "Unknown"
        lines = [f"HTTP/1.1 {status} {phrase}", "server: fake-upstream"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        await self._write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    async def _send_json(self, status: int, obj: Any, extra: Mapping[str, str] | None = None) -> None:
        body = orjson.dumps(obj)
        headers = {"content-type": "application/json", "content-length": str(len(body)), **(extra or {})}
        await self._send_head(status, headers)
        await self._write(body)

    async def _respond(self, req: RecordedRequest) -> None:
        route = _route(req.method, req.path, req.headers)
        if route is None:
            await self._send_json(
                404, {"error": {"message": f"Invalid URL ({req.method} {req.path})", "type": "invalid_request_error"}}
            )
            return
        protocol, action = route
        if action == "models":
            await self._send_json(200, models_body(protocol))
            return
        payload: dict[str, Any] = {}
        with contextlib.suppress(orjson.JSONDecodeError):
            loaded = orjson.loads(req.body) if req.body else {}
            payload = loaded if isinstance(loaded, dict) else {}
        try:
            reply = self.server._next_reply(req)
            self.close_after = reply.close_after
        except (ValueError, TypeError) as exc:  # a malformed x-fake-reply header
            await self._send_json(400, {"error": {"message": f"bad x-fake-reply: {exc}", "type": "fake_error"}})
            return
        stream = action == "stream" or (action == "maybe-stream" and bool(payload.get("stream")))
        model = str(payload.get("model") or req.path.rsplit("/", 1)[-1].split(":")[0])
        if reply.hang:
            await self._sleep(None)
            return
        if reply.latency:
            await self._sleep(reply.latency)
        extra = dict(reply.headers)
        if reply.status >= 300:
            body = error_body(protocol, reply) if reply.json_body is None else reply.json_body
            await self._send_json(reply.status, body, extra)
            return
        if not stream:
            body = reply.json_body if reply.json_body is not None else render_json(protocol, reply, model)
            await self._send_json(200, body, extra)
            return
        include_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        if reply.garbage is not None:
            events: list[tuple[bytes, bool]] = [(reply.garbage, False)]
        elif reply.events is not None:
            events = [(e, True) for e in reply.events]
        else:
            events = render_stream(protocol, reply, model, include_usage)
        if reply.bom and events:
            events[0] = (b"\xef\xbb\xbf" + events[0][0], events[0][1])
        await self._send_head(
            200,
            {"content-type": "text/event-stream", "cache-control": "no-cache", "transfer-encoding": "chunked", **extra},
        )
        await self._send_events(reply, events)

    async def _send_chunk(self, data: bytes, reply: Reply) -> None:
        if not data:
            return
        if reply.split:
            step = reply.split
            for i in range(0, len(data), step):
                piece = data[i : i + step]
                await self._write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await self._sleep(reply.split_delay)
        else:
            await self._write(b"%x\r\n%s\r\n" % (len(data), data))

    async def _send_events(self, reply: Reply, events: list[tuple[bytes, bool]]) -> None:
        keepalive = (": keep-alive" + reply.line_ending * 2).encode()
        for i, (data, is_content) in enumerate(events):
            if i and reply.chunk_delay:
                await self._sleep(reply.chunk_delay)
            if reply.keepalive:
                await self._send_chunk(keepalive, reply)
            await self._send_chunk(data, reply)
            if is_content:
                self.events_sent += 1
                if reply.reset_after is not None and self.events_sent >= reply.reset_after:
                    await asyncio.sleep(0.01)  # let the events reach the client first
                    self._abort()
                    raise _ClientGone
                if reply.hang_after is not None and self.events_sent >= reply.hang_after:
                    await self._sleep(None)
        await self._write(b"0\r\n\r\n")


class FakeUpstream:
    """The server. ``start()`` runs it on a background thread; ``base_url`` is ``http://127.0.0.1:PORT``."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, use_uvloop: bool = False) -> None:
        self.host = host
        self.port = port
        self.use_uvloop = use_uvloop
        self.default = Reply()
        self.requests: list[RecordedRequest] = []
        self.disconnects: list[Disconnect] = []
        self.epoch = 0
        self._queue: deque[Reply] = deque()
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._serial = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    # scripting -----------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def script(self, *replies: Reply) -> FakeUpstream:
        """Queue answers for the next completion requests (FIFO); afterwards ``default`` answers."""
        self._queue.extend(replies)
        return self

    def reset(self) -> None:
        """Forget scripts, recorded requests and disconnects (and ignore stale connections)."""
        self.epoch += 1
        self._queue.clear()
        self.requests.clear()
        self.disconnects.clear()
        self.default = Reply()

    @property
    def completion_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST"]

    def _next_reply(self, req: RecordedRequest) -> Reply:
        header = req.headers.get("x-fake-reply")
        if header:
            spec = orjson.loads(header)
            known = {f.name for f in fields(Reply)}
            return Reply(**{k: v for k, v in spec.items() if k in known})
        try:
            return self._queue.popleft()
        except IndexError:
            return self.default

    async def wait_for_disconnects(self, count: int = 1, timeout: float = 2.0) -> list[Disconnect]:
        deadline = time.monotonic() + timeout
        while len(self.disconnects) < count and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        return list(self.disconnects)

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    # lifecycle -----------------------------------------------------------------------------
    async def serve(self) -> None:
        """Run on the current loop (until cancelled)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._server = await loop.create_server(
            lambda: _Conn(self), self.host, self.port, backlog=4096, reuse_address=True
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            self._server.close()
            for conn in list(self._conns):
                if conn.transport is not None:
                    conn.transport.abort()
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def start(self) -> FakeUpstream:
        def run() -> None:
            if self.use_uvloop:
                import uvloop

                loop = uvloop.new_event_loop()
            else:
                loop = asyncio.new_event_loop()
            asyncio.set_event_loop(loop)
            self._main = loop.create_task(self.serve())
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._main)
            loop.close()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._main.cancel)
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake LLM upstream (OpenAI, Anthropic, Gemini).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999, help="0 = a free port (printed)")
    parser.add_argument("--chunks", type=int, default=4, help="content events per answer")
    parser.add_argument("--chunk-text", default="字ab", help="text of each content event")
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before the response headers")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args(argv)
    server = FakeUpstream(args.host, args.port, use_uvloop=args.uvloop)
    server.default = Reply(chunks=[args.chunk_text] * args.chunks, chunk_delay=args.chunk_delay, latency=args.latency)
    if args.uvloop:
        import uvloop

        runner = uvloop.run
    else:
        runner = asyncio.run

    async def run() -> None:
        task = asyncio.create_task(server.serve())
        while not server._ready.is_set():
            await asyncio.sleep(0.01)
        print(f"fake upstream listening on {server.base_url}", flush=True)
        await task

    with contextlib.suppress(KeyboardInterrupt):
        runner(run())


if __name__ == "__main__":
    main()
