"""Anthropic Messages API (``POST {root}/messages``; root = base URL with ``/v1``).

Conversion (after SillyTavern's ``convertClaudeMessages`` with ``use_sysprompt``):

* leading system messages → top-level ``system`` (joined with blank lines); system messages later in
  the conversation become ``user`` messages where they stand (``options["system_mode"] = "all"``
  moves every system message to ``system`` instead);
* ``name`` → a ``"Name: "`` prefix; empty messages dropped; consecutive same roles merged (``\\n\\n``);
* the first message must be ``user``: the placeholder ``[Start a new chat]`` is inserted if needed;
* a trailing assistant message is a **prefill** (trailing whitespace removed, which the API demands):
  the reply continues it and the deltas contain only the new text;
* ``temperature`` is clamped to Anthropic's 0–1; of the sampling parameters only ``top_p`` and
  ``top_k`` exist (passed as given).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from apps.providers.adapters.base import (
    ChatRequest,
    Completion,
    ConnectionConfig,
    Delta,
    SamplingNames,
    Usage,
    add_sampling,
)
from apps.providers.adapters.errors import UpstreamProtocolError
from apps.providers.adapters.messages import PLACEHOLDER, merge_turns, split_system
from apps.providers.adapters.sse import SSEEvent
from apps.providers.adapters.transport import HttpAdapter, StreamHandler
from apps.providers.types import ChatMessage, FinishReason

ANTHROPIC_VERSION = "2023-06-01"
# The Messages API's sampling parameters (no penalties, no seed), under the same names.
SAMPLING: SamplingNames = (("top_p", "top_p"), ("top_k", "top_k"))

_STOP: Mapping[str, FinishReason] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "tool_use": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "refusal": "content_filter",
}


def map_stop_reason(value: Any) -> FinishReason | None:
    if not value:
        return None
    return _STOP.get(str(value), "stop")


def anthropic_messages(messages: Sequence[ChatMessage], *, mode: str = "leading") -> tuple[str, list[dict[str, str]]]:
    system, turns = split_system(messages, mode=mode)
    merged = merge_turns(turns)
    if merged and merged[-1][0] == "assistant":
        merged[-1][1] = merged[-1][1].rstrip()
        if not merged[-1][1]:
            merged.pop()
    if not merged or merged[0][0] != "user":
        merged.insert(0, ["user", PLACEHOLDER])
    return system, [{"role": role, "content": text} for role, text in merged]


def _usage(prompt: int | None, completion: int | None) -> Usage | None:
    if prompt is None and completion is None:
        return None
    return Usage.of(prompt or 0, completion or 0)


def _input_tokens(usage: Any) -> int | None:
    if not isinstance(usage, dict) or usage.get("input_tokens") is None:
        return None
    return sum(
        int(usage.get(k) or 0) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
    )


class _MessagesStream(StreamHandler):
    __slots__ = ("input_tokens", "output_tokens")

    def __init__(self, provider: str, secrets: tuple[str | None, ...]) -> None:
        super().__init__(provider, secrets)
        self.input_tokens: int | None = None
        self.output_tokens: int | None = None

    def on_event(self, event: SSEEvent) -> Delta | None:
        data = event.data
        if not data:
            return None
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"{self.provider} sent invalid JSON in the stream: {data[:80]!r}", provider=self.provider
            ) from None
        if type(obj) is not dict:
            raise UpstreamProtocolError(f"{self.provider} sent an unexpected stream event", provider=self.provider)
        kind = obj.get("type") or event.event
        if kind == "content_block_delta":
            delta = obj.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = delta.get("text")
                return Delta(text) if text else None
            if dtype == "thinking_delta":
                thinking = delta.get("thinking")
                return Delta(reasoning=thinking) if thinking else None
            return None  # signature_delta, input_json_delta, citations…
        if kind == "content_block_start":
            block = obj.get("content_block") or {}
            if block.get("type") == "text" and block.get("text"):
                return Delta(block["text"])
            if block.get("type") == "thinking" and block.get("thinking"):
                return Delta(reasoning=block["thinking"])
            return None
        if kind == "message_start":
            usage = (obj.get("message") or {}).get("usage")
            self.input_tokens = _input_tokens(usage)
            if isinstance(usage, dict) and usage.get("output_tokens") is not None:
                self.output_tokens = int(usage["output_tokens"])
            return None
        if kind == "message_delta":
            stop = (obj.get("delta") or {}).get("stop_reason")
            if stop:
                self.finish = map_stop_reason(stop)
            usage = obj.get("usage")
            if isinstance(usage, dict):
                if usage.get("output_tokens") is not None:
                    self.output_tokens = int(usage["output_tokens"])
                tokens = _input_tokens(usage)
                if tokens:
                    self.input_tokens = tokens
            return None
        if kind == "message_stop":
            self.done = True
            return None
        if kind == "error":
            raise self.error(obj)
        return None  # ping, content_block_stop, unknown future events

    def final(self) -> Delta:
        if not self.done and self.finish is None:
            raise UpstreamProtocolError(f"{self.provider} stream ended before message_stop", provider=self.provider)
        return Delta(finish_reason=self.finish or "stop", usage=_usage(self.input_tokens, self.output_tokens))


class AnthropicAdapter(HttpAdapter):
    kind = "anthropic"
    provider = "Anthropic upstream"
    path = "messages"

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self._system_mode = str(config.options.get("system_mode", "leading"))

    def auth_headers(self) -> dict[str, str]:
        auth = {"anthropic-version": ANTHROPIC_VERSION}
        if self.config.api_key:
            auth["x-api-key"] = self.config.api_key
        return auth

    def body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        self.refuse_prompt(request)
        system, messages = anthropic_messages(request.messages, mode=self._system_mode)
        body: dict[str, Any] = {
            "model": request.model,
            "max_tokens": request.max_tokens,
            "messages": messages,
            "temperature": min(1.0, max(0.0, float(request.temperature))),
        }
        if system:
            body["system"] = system
        if request.stop:
            body["stop_sequences"] = list(request.stop)
        if stream:
            body["stream"] = True
        if request.sampling:
            add_sampling(body, request.sampling, SAMPLING)
        body.update(request.extra)
        return body

    def stream_handler(self) -> StreamHandler:
        return _MessagesStream(self.provider, (self.config.api_key,))

    def completion(self, obj: Any) -> Completion:
        blocks = obj.get("content") if isinstance(obj, dict) else None
        if not isinstance(blocks, list):
            raise UpstreamProtocolError(f"{self.provider} answered without content", provider=self.provider)
        text = "".join(b.get("text") or "" for b in blocks if isinstance(b, dict) and b.get("type") == "text")
        thinking = "".join(
            b.get("thinking") or "" for b in blocks if isinstance(b, dict) and b.get("type") == "thinking"
        )
        usage = obj.get("usage")
        out = (
            int(usage["output_tokens"]) if isinstance(usage, dict) and usage.get("output_tokens") is not None else None
        )
        return Completion(
            content=text,
            reasoning=thinking,
            finish_reason=map_stop_reason(obj.get("stop_reason")) or "stop",
            usage=_usage(_input_tokens(usage), out),
        )

    async def list_models(self) -> list[str]:
        obj = await self.get_json("models")
        data = obj.get("data") if isinstance(obj, dict) else None
        return [str(m["id"]) for m in data or [] if isinstance(m, dict) and m.get("id")]
