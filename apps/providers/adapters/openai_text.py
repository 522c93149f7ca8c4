"""OpenAI Text Completions (``/completions``) with a prompt rendered by an instruct template, or the
request's raw ``prompt`` sent as it is.

The instruct templates live in :mod:`apps.providers.instruct` (imported lazily):
``render_prompt(messages, template, custom_template=None) -> RenderedPrompt(prompt, stop)``.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import aclosing
from typing import Any

from apps.providers.adapters.base import ChatRequest, Completion, Delta, SamplingNames, add_sampling
from apps.providers.adapters.errors import UpstreamBadRequest, UpstreamProtocolError, safe_message
from apps.providers.adapters.openai import (
    CHAT_SAMPLING_EXTRAS,
    OpenAIChatAdapter,
    OpenAIStyleStream,
    map_finish,
    parse_usage,
)
from apps.providers.adapters.transport import StreamHandler

DEFAULT_TEMPLATE = "chatml"
# OpenAI's /completions has no `reasoning_effort` (a chat parameter): here it is one of the extras,
# sent only where `sampler_extras` allows, like the parameters OpenAI does not know at all.
TEXT_SAMPLING: SamplingNames = tuple((n, n) for n in ("top_p", "presence_penalty", "frequency_penalty", "seed"))
TEXT_SAMPLING_EXTRAS: SamplingNames = (*CHAT_SAMPLING_EXTRAS, ("reasoning_effort", "reasoning_effort"))


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


class OpenAITextAdapter(OpenAIChatAdapter):
    """OpenAI's legacy text completions: the messages rendered into one prompt by an instruct
    template, or the request's raw ``prompt`` as it is; same authentication, stream framing and
    sampling rule (:func:`~apps.providers.adapters.openai.sampler_extras`) as chat completions."""

    kind = "openai_text"
    provider = "text-completion upstream"
    path = "completions"
    sampling_names = TEXT_SAMPLING
    sampling_extras = TEXT_SAMPLING_EXTRAS

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
        if request.prompt is None:
            prompt, stop = self.render(request)
        else:  # a raw prompt (`/v1/completions`): sent as it is, with the caller's stop strings only
            prompt, stop = request.prompt, merge_stops(request.stop)
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
        if request.sampling:
            add_sampling(body, request.sampling, self._sampling)
        body.update(request.extra)
        return body

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        # rendered lazily: template errors surface on iteration, like the upstream's own errors
        deltas = super().stream(request)
        async with aclosing(deltas):
            async for delta in deltas:
                yield delta

    def stream_handler(self) -> StreamHandler:
        return _TextStream(self.provider, (self.config.api_key,))

    def completion(self, obj: Any) -> Completion:
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
