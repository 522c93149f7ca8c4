"""The relay in OpenAI's wire format: `chat.completion` / `text_completion` bodies, and streams of
`chat.completion.chunk` events (`delta.content`, `delta.reasoning_content` — what SillyTavern and Tavo
read), a last chunk with `finish_reason`, a usage chunk when asked (`stream_options.include_usage`,
with our `consumption`), then `[DONE]`. A failure after the stream started is a final `error` event."""

from __future__ import annotations

import time
from typing import Any

from apps.core.errors import ApplicationError
from apps.generation.relay import DONE, Relay, sse
from apps.generation.services import Finished
from apps.openai_api.errors import openai_error
from apps.openai_api.services import ChatPrepared
from apps.providers.adapters import Delta


class OpenAIRelay(Relay):
    prepared: ChatPrepared

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.created = int(time.time())
        self._role_sent = False

    @property
    def _text(self) -> bool:
        return self.prepared.text_completion

    def _model(self) -> str:
        target = self.routed.target or self.prepared.targets[0]
        return str(target.model_id)

    def _chunk(self, choice: dict[str, Any], *, usage: dict[str, Any] | None = None) -> bytes:
        body: dict[str, Any] = {
            "id": self.prepared.generation_id,
            "object": "text_completion" if self._text else "chat.completion.chunk",
            "created": self.created,
            "model": self._model(),
            "choices": [choice] if choice else [],
        }
        if usage is not None:
            body["usage"] = usage
        return sse(body)

    def _usage(self, finished: Finished) -> dict[str, Any]:
        usage = finished.usage
        return {
            "prompt_tokens": usage["promptTokens"],
            "completion_tokens": usage["completionTokens"],
            "total_tokens": usage["totalTokens"],
            "consumption": finished.consumption,
        }

    # -- stream ------------------------------------------------------------------------------------
    def delta_event(self, delta: Delta) -> bytes | None:
        if self._text:
            if not delta.content:
                return None
            return self._chunk({"index": 0, "text": delta.content, "logprobs": None, "finish_reason": None})
        if not delta.content and not delta.reasoning:
            return None
        part: dict[str, Any] = {}
        if not self._role_sent:
            part["role"] = "assistant"
            self._role_sent = True
        if delta.reasoning:
            part["reasoning_content"] = delta.reasoning
        part["content"] = delta.content
        return self._chunk({"index": 0, "delta": part, "finish_reason": None})

    def end_events(self) -> list[bytes]:
        assert self.finished is not None
        reason = self.finish_reason or "stop"
        if self._text:
            last = {"index": 0, "text": "", "logprobs": None, "finish_reason": reason}
        else:
            last = {"index": 0, "delta": {} if self._role_sent else {"role": "assistant", "content": ""}}
            last["finish_reason"] = reason
        events = [self._chunk(last)]
        if self.prepared.include_usage:
            events.append(self._chunk({}, usage=self._usage(self.finished)))
        return [*events, DONE]

    def error_events(self, error: ApplicationError) -> list[bytes]:
        return [sse(openai_error(error.status_code, error.message, code=error.code)), DONE]

    # -- one answer ----------------------------------------------------------------------------------
    def answer(self, finished: Finished) -> dict[str, Any]:
        content, reasoning = "".join(self.content), "".join(self.reasoning)
        reason = self.finish_reason or "stop"
        if self._text:
            choice: dict[str, Any] = {"index": 0, "text": content, "logprobs": None, "finish_reason": reason}
        else:
            message: dict[str, Any] = {"role": "assistant", "content": content}
            if reasoning:
                message["reasoning_content"] = reasoning
            choice = {"index": 0, "message": message, "finish_reason": reason}
        return {
            "id": self.prepared.generation_id,
            "object": "text_completion" if self._text else "chat.completion",
            "created": self.created,
            "model": finished.model,
            "choices": [choice],
            "usage": self._usage(finished),
        }
