"""Google AI Studio (Gemini) ``generateContent`` / ``streamGenerateContent?alt=sse``.

Conversion (after SillyTavern's ``convertGooglePrompt`` with ``use_sysprompt``): leading system
messages → ``systemInstruction`` (later ones become ``user`` turns where they stand), assistant →
``model``, ``name`` → ``"Name: "`` prefix, empty messages dropped, consecutive same roles merged with
blank lines. Sampling parameters go into ``generationConfig`` by its names (``topP``, ``topK``,
``presencePenalty``, ``frequencyPenalty``, ``seed``). Key in the ``x-goog-api-key`` header (never in
the URL, so it can't leak into logs).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson

from apps.providers.adapters.base import ChatRequest, Completion, Delta, SamplingNames, Usage, add_sampling
from apps.providers.adapters.errors import UpstreamProtocolError
from apps.providers.adapters.messages import PLACEHOLDER, merge_turns, split_system
from apps.providers.adapters.sse import SSEEvent
from apps.providers.adapters.transport import HttpAdapter, StreamHandler
from apps.providers.types import ChatMessage, FinishReason

MAX_STOP_SEQUENCES = 5
# The sampling parameters `generationConfig` has, by their camelCase names there.
SAMPLING: SamplingNames = (
    ("top_p", "topP"),
    ("top_k", "topK"),
    ("presence_penalty", "presencePenalty"),
    ("frequency_penalty", "frequencyPenalty"),
    ("seed", "seed"),
)
SAFETY_CATEGORIES = (
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
    "HARM_CATEGORY_CIVIC_INTEGRITY",
)
_FILTERED = frozenset(
    {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "IMAGE_PROHIBITED_CONTENT"}
)


def map_finish_reason(value: Any) -> FinishReason | None:
    if not value or value == "FINISH_REASON_UNSPECIFIED":
        return None
    value = str(value)
    if value == "MAX_TOKENS":
        return "length"
    if value in _FILTERED:
        return "content_filter"
    return "stop"  # STOP, LANGUAGE, OTHER, MALFORMED_FUNCTION_CALL, …


def gemini_contents(messages: Sequence[ChatMessage]) -> tuple[str, list[dict[str, Any]]]:
    system, turns = split_system(messages)
    merged = merge_turns([("model" if role == "assistant" else "user", text) for role, text in turns])
    if not merged:
        merged = [["user", system or PLACEHOLDER]]
        system = ""
    return system, [{"role": role, "parts": [{"text": text}]} for role, text in merged]


def parse_usage_metadata(meta: Any) -> Usage | None:
    if not isinstance(meta, dict):
        return None
    prompt = int(meta.get("promptTokenCount") or 0)
    total = meta.get("totalTokenCount")
    if meta.get("candidatesTokenCount") is None and meta.get("thoughtsTokenCount") is None:
        if not total:
            return None
        completion = max(0, int(total) - prompt)  # e.g. tool-use or cached tokens only
    else:
        completion = int(meta.get("candidatesTokenCount") or 0) + int(meta.get("thoughtsTokenCount") or 0)
    return Usage(prompt, completion, int(total) if total else prompt + completion)


def _parts_text(candidate: Mapping[str, Any]) -> tuple[str, str]:
    content = candidate.get("content") or {}
    text = reasoning = ""
    for part in content.get("parts") or ():
        value = part.get("text")
        if not value:
            continue
        if part.get("thought"):
            reasoning += value
        else:
            text += value
    return text, reasoning


class _GeminiStream(StreamHandler):
    __slots__ = ("seen",)

    def __init__(self, provider: str, secrets: tuple[str | None, ...]) -> None:
        super().__init__(provider, secrets)
        self.seen = False

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
        if type(obj) is list and obj:
            obj = obj[0]
        if type(obj) is not dict:
            raise UpstreamProtocolError(f"{self.provider} sent an unexpected stream event", provider=self.provider)
        if obj.get("error"):
            raise self.error(obj)
        self.seen = True
        meta = obj.get("usageMetadata")
        if meta:
            self.usage = parse_usage_metadata(meta)
        feedback = obj.get("promptFeedback")
        if feedback and feedback.get("blockReason"):
            self.finish = "content_filter"
        candidates = obj.get("candidates")
        if not candidates:
            return None
        candidate = candidates[0]
        finish = map_finish_reason(candidate.get("finishReason"))
        if finish:
            self.finish = finish
        text, reasoning = _parts_text(candidate)
        if text or reasoning:
            return Delta(text, reasoning)
        return None

    def final(self) -> Delta:
        if not self.seen:
            raise UpstreamProtocolError(f"{self.provider} stream ended without any response", provider=self.provider)
        return Delta(finish_reason=self.finish or "stop", usage=self.usage)


class GeminiAdapter(HttpAdapter):
    kind = "gemini"
    provider = "Gemini upstream"

    def auth_headers(self) -> dict[str, str]:
        return {"x-goog-api-key": self.config.api_key} if self.config.api_key else {}

    def url(self, request: ChatRequest, *, stream: bool) -> str:
        model = quote(request.model.removeprefix("models/"), safe="-._~@")
        if stream:
            return f"{self.base_url}/models/{model}:streamGenerateContent?alt=sse"
        return f"{self.base_url}/models/{model}:generateContent"

    def body(self, request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
        self.refuse_prompt(request)
        system, contents = gemini_contents(request.messages)
        config: dict[str, Any] = {
            "candidateCount": 1,
            "maxOutputTokens": request.max_tokens,
            "temperature": request.temperature,
        }
        if request.stop:
            config["stopSequences"] = list(request.stop[:MAX_STOP_SEQUENCES])
        if request.sampling:
            add_sampling(config, request.sampling, SAMPLING)
        body: dict[str, Any] = {
            "contents": contents,
            "generationConfig": config,
            "safetySettings": [{"category": c, "threshold": "OFF"} for c in SAFETY_CATEGORIES],
        }
        if system:
            body["systemInstruction"] = {"parts": [{"text": system}]}
        for key, value in request.extra.items():
            if key == "generationConfig" and isinstance(value, Mapping):
                config.update(value)
            else:
                body[key] = value
        return body

    def stream_handler(self) -> StreamHandler:
        return _GeminiStream(self.provider, (self.config.api_key,))

    def completion(self, obj: Any) -> Completion:
        if not isinstance(obj, dict):
            raise UpstreamProtocolError(f"{self.provider} answered an unexpected body", provider=self.provider)
        usage = parse_usage_metadata(obj.get("usageMetadata"))
        feedback = obj.get("promptFeedback") or {}
        candidates = obj.get("candidates") or []
        if not candidates:
            if feedback.get("blockReason"):
                return Completion("", "", "content_filter", usage)
            raise UpstreamProtocolError(f"{self.provider} answered without candidates", provider=self.provider)
        text, reasoning = _parts_text(candidates[0])
        finish = map_finish_reason(candidates[0].get("finishReason")) or "stop"
        return Completion(text, reasoning, finish, usage)

    async def list_models(self) -> list[str]:
        obj = await self.get_json("models")
        models = obj.get("models") if isinstance(obj, dict) else None
        return [str(m["name"]).removeprefix("models/") for m in models or [] if isinstance(m, dict) and m.get("name")]
