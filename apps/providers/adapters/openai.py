"""OpenAI Chat Completions (OpenAI, DeepSeek, OpenRouter, Mistral, Ollama, llama.cpp, vLLM, …)."""

from __future__ import annotations

import abc
import functools
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

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
from apps.providers.adapters.sse import SSEEvent
from apps.providers.adapters.transport import HttpAdapter, StreamHandler
from apps.providers.types import FinishReason

_FINISH: Mapping[str, FinishReason] = {
    "stop": "stop",
    "length": "length",
    "content_filter": "content_filter",
    "tool_calls": "stop",
    "function_call": "stop",
    "eos": "stop",
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
}


# Sampling parameters of OpenAI's Chat Completions API, and those only OpenAI-compatible servers take
# (llama.cpp, vLLM, Ollama, OpenRouter, koboldcpp…: sent when `sampler_extras` allows). Same names.
CHAT_SAMPLING: SamplingNames = tuple(
    (n, n) for n in ("top_p", "presence_penalty", "frequency_penalty", "seed", "reasoning_effort")
)
CHAT_SAMPLING_EXTRAS: SamplingNames = tuple(
    (n, n) for n in ("top_k", "min_p", "repetition_penalty", "include_reasoning")
)
OPENAI_HOST = "api.openai.com"
_TRUE = frozenset({"1", "true", "yes", "on"})


def sampler_extras(config: ConnectionConfig, base_url: str) -> bool:
    """Whether an OpenAI-style connection may be sent the sampling parameters OpenAI's own API does
    not define (``top_k``, ``min_p``, ``repetition_penalty``, ``include_reasoning``; for text
    completion also ``reasoning_effort``): the connection's ``options["sampler_extras"]`` when set (a
    bool, or a string such as ``"true"``/``"false"``); otherwise yes unless ``base_url``'s host is
    ``api.openai.com``, which answers an unknown body field with a 400 (llama.cpp, vLLM, Ollama,
    OpenRouter… take them or ignore the ones they lack). Decided when the adapter is built."""
    explicit = config.options.get("sampler_extras")
    if explicit is not None:
        return explicit.strip().lower() in _TRUE if isinstance(explicit, str) else bool(explicit)
    return not _is_openai(base_url)


@functools.lru_cache(maxsize=256)
def _is_openai(base_url: str) -> bool:  # cached: an adapter is built for every request
    return urlsplit(base_url).hostname == OPENAI_HOST


def map_finish(value: Any) -> FinishReason | None:
    if not value:
        return None
    return _FINISH.get(str(value).lower(), "stop")


def parse_usage(obj: Any) -> Usage | None:
    if not isinstance(obj, Mapping):
        return None
    try:
        prompt = int(obj.get("prompt_tokens") or 0)
        completion = int(obj.get("completion_tokens") or 0)
        total = obj.get("total_tokens")
        return Usage(prompt, completion, int(total) if total is not None else prompt + completion)
    except (TypeError, ValueError):
        return None


def openai_messages(request: ChatRequest) -> list[dict[str, Any]]:
    out = []
    for m in request.messages:
        item: dict[str, Any] = {"role": m.role, "content": m.content}
        if m.name:
            item["name"] = m.name
        out.append(item)
    return out


class OpenAIStyleStream(StreamHandler):
    """The event loop shared by the OpenAI chat and text-completion streams: `[DONE]`, JSON, usage,
    in-stream errors, the finish check; subclasses read the text out of `choices[0]`."""

    __slots__ = ()

    def on_event(self, event: SSEEvent) -> Delta | None:
        data = event.data
        if not data:
            return None
        if data[0] != "{" and data.strip() == "[DONE]":
            self.done = True
            return None
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(
                f"{self.provider} sent invalid JSON in the stream: {data[:80]!r}", provider=self.provider
            ) from None
        if type(obj) is not dict:
            raise UpstreamProtocolError(f"{self.provider} sent an unexpected stream event", provider=self.provider)
        choices = obj.get("choices")
        usage = obj.get("usage")
        if usage:
            self.usage = parse_usage(usage)
        if not choices:
            if obj.get("error"):
                raise self.error(obj)
            return None
        choice = choices[0]
        finish = choice.get("finish_reason")
        if finish:
            self.finish = map_finish(finish)
        return self.on_choice(choice)

    @abc.abstractmethod
    def on_choice(self, choice: dict[str, Any]) -> Delta | None:
        """The delta carried by `choices[0]` (finish reason and usage are already recorded)."""

    def final(self) -> Delta:
        if self.finish is None and not self.done:
            raise UpstreamProtocolError(
                f"{self.provider} stream ended before the answer was finished", provider=self.provider
            )
        return Delta(finish_reason=self.finish or "stop", usage=self.usage)


class _ChatStream(OpenAIStyleStream):
    __slots__ = ()

    def on_choice(self, choice: dict[str, Any]) -> Delta | None:
        delta = choice.get("delta") or choice.get("message")
        if not delta:
            return None
        content = delta.get("content")
        reasoning = delta.get("reasoning_content") or delta.get("reasoning")
        if content or reasoning:
            if type(content) is list:  # Mistral-style content parts
                content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
            return Delta(content or "", reasoning if isinstance(reasoning, str) else "")
        return None


class OpenAIChatAdapter(HttpAdapter):
    kind = "openai"
    provider = "OpenAI-compatible upstream"
    path = "chat/completions"
    #: the sampling parameters always sent, and those sent when :func:`sampler_extras` allows
    sampling_names: SamplingNames = CHAT_SAMPLING
    sampling_extras: SamplingNames = CHAT_SAMPLING_EXTRAS

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        self._sampling = self.sampling_names
        if sampler_extras(config, self.base_url):
            self._sampling += self.sampling_extras

    def auth_headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.config.api_key}"} if self.config.api_key else {}

    def body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        self.refuse_prompt(request)
        body: dict[str, Any] = {
            "model": request.model,
            "messages": openai_messages(request),
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }
        if request.stop:
            body["stop"] = list(request.stop)
        if stream:
            body["stream_options"] = {"include_usage": True}
        if request.sampling:
            add_sampling(body, request.sampling, self._sampling)
        body.update(request.extra)
        return body

    def stream_handler(self) -> StreamHandler:
        return _ChatStream(self.provider, (self.config.api_key,))

    def completion(self, obj: Any) -> Completion:
        try:
            choice = obj["choices"][0]
            message = choice.get("message") or {}
            content = message.get("content") or choice.get("text") or ""
            reasoning = message.get("reasoning_content") or message.get("reasoning") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamProtocolError(f"{self.provider} answered without choices", provider=self.provider) from None
        return Completion(
            content=content if isinstance(content, str) else "",
            reasoning=reasoning if isinstance(reasoning, str) else "",
            finish_reason=map_finish(choice.get("finish_reason")) or "stop",
            usage=parse_usage(obj.get("usage")),
        )

    async def list_models(self) -> list[str]:
        obj = await self.get_json("models")
        data = obj.get("data") if isinstance(obj, dict) else obj
        if not isinstance(data, list):
            data = obj.get("models", []) if isinstance(obj, dict) else []
        return [
            str(m.get("id") or m.get("name")) for m in data if isinstance(m, dict) and (m.get("id") or m.get("name"))
        ]
