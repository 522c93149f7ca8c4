"""OpenAI Text Completions (``/completions``) with a prompt rendered by an instruct template.

The instruct templates live in :mod:`apps.providers.instruct` (imported lazily):
``render_prompt(messages, template, custom_template=None) -> RenderedPrompt(prompt, stop)``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from apps.providers.adapters.base import Adapter, ChatRequest, Completion, ConnectionConfig, Delta
from apps.providers.adapters.errors import UpstreamBadRequest, UpstreamProtocolError, safe_message
from apps.providers.adapters.openai import OpenAIChatAdapter, OpenAIStyleStream, map_finish, parse_usage
from apps.providers.adapters.transport import json_headers, request_json, stream_deltas

DEFAULT_TEMPLATE = "chatml"


def merge_stops(*groups: tuple[str, ...] | list[str]) -> list[str]:
    """Unique, non-empty stop strings in first-seen order."""
    seen: dict[str, None] = {}
    for group in groups:
        for stop in group:
            if stop and stop not in seen:
                seen[stop] = None
    return list(seen)


class _TextStream(OpenAIStyleStream):
    __slots__ = ()

    def on_choice(self, choice: dict[str, Any]) -> Delta | None:
        text = choice.get("text")
        if text and isinstance(text, str):
            return Delta(text)
        return None


class OpenAITextAdapter(Adapter):
    kind = "openai_text"
    provider = "text-completion upstream"

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        auth = {"authorization": f"Bearer {config.api_key}"} if config.api_key else {}
        self._headers = json_headers(config, auth)
        self._stream_headers = {**self._headers, "accept": "text/event-stream"}
        self._url = f"{self.base_url}/completions"

    def render(self, request: ChatRequest) -> tuple[str, list[str]]:
        """(prompt, stop strings: the template's then the request's). A template that fails to render
        raises :class:`UpstreamBadRequest` (not retryable: the connection is misconfigured)."""
        from apps.providers.instruct import render_prompt  # another module; imported lazily

        template = self.config.instruct_template or DEFAULT_TEMPLATE
        try:
            rendered = render_prompt(request.messages, template, self.config.custom_instruct_template)
        except ValueError as exc:  # InstructTemplateError
            raise UpstreamBadRequest(
                f"instruct template {template!r} failed: {safe_message(str(exc), (self.config.api_key,))}",
                upstream_code="instruct_template_error",
                provider=self.provider,
            ) from None
        return rendered.prompt, merge_stops(tuple(rendered.stop), request.stop)

    def body(self, request: ChatRequest, *, stream: bool) -> dict[str, Any]:
        prompt, stop = self.render(request)
        body: dict[str, Any] = {
            "model": request.model,
            "prompt": prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.temperature,
            "stream": stream,
        }
        if stop:
            body["stop"] = stop
        if stream:
            body["stream_options"] = {"include_usage": True}
        body.update(request.extra)
        return body

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        body = self.body(request, stream=True)  # rendered lazily: template errors surface on iteration
        handler = _TextStream(self.provider, (self.config.api_key,))
        deltas = stream_deltas(self.config, self._url, headers=self._stream_headers, body=body, handler=handler)
        async with aclosing(deltas):
            async for delta in deltas:
                yield delta

    async def complete(self, request: ChatRequest) -> Completion:
        obj = await request_json(
            self.config,
            "POST",
            self._url,
            headers=self._headers,
            body=self.body(request, stream=False),
            provider=self.provider,
        )
        try:
            choice = obj["choices"][0]
            text = choice.get("text") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise UpstreamProtocolError(f"{self.provider} answered without choices", provider=self.provider) from None
        return Completion(
            content=text if isinstance(text, str) else "",
            reasoning="",
            finish_reason=map_finish(choice.get("finish_reason")) or "stop",
            usage=parse_usage(obj.get("usage")),
        )

    async def list_models(self) -> list[str]:
        return await OpenAIChatAdapter(self.config).list_models()
