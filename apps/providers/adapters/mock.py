"""The offline ``mock`` provider: deterministic text, streamed at a realistic pace.

The reply is a fixed Chinese + English passage introduced by a quote of the last user message, so
that the same request always gives the same answer. ``max_tokens`` is honoured at ≈ 4 characters per
token (finish ``length`` when cut); usage is computed the same way.

Options (``ConnectionConfig.options``): ``chunk_delay`` seconds between chunks (default 0.02; use 0
in tests), ``chunk_chars`` (default 4), ``text`` (replace the passage), ``reasoning`` (emit this
reasoning text first), ``error`` (raise that error class before the first token, e.g.
``"UpstreamRateLimited"`` — for tests of the layers above).

Sampling parameters are ignored; a raw ``prompt`` is answered as a conversation of one user message
holding that prompt.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import AsyncGenerator

from apps.providers.adapters import errors
from apps.providers.adapters.base import Adapter, ChatRequest, Completion, ConnectionConfig, Delta, Usage
from apps.providers.types import ChatMessage

CHARS_PER_TOKEN = 4
DEFAULT_CHUNK_DELAY = 0.02
DEFAULT_CHUNK_CHARS = 4

PASSAGE = (
    "夜色像一匹缓缓展开的墨色绸缎，覆在青石小镇的屋檐上。"
    "林晚提着一盏旧灯笼走过长街，听见远处的钟声一下一下敲进雾里。"
    "她知道，今夜之后，一切都会不同。\n\n"
    "The lantern flickered as she turned the corner, and the old bookshop at the end of the lane "
    "was still lit, its windows fogged with the breath of the river. "
    "Inside, someone was waiting with a story that had never been written down.\n\n"
    "她推开门，铜铃轻响。柜台后的老人抬起头，微笑着说：“你终于来了。”"
)


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN) if text else 0


def mock_text(request: ChatRequest, passage: str = PASSAGE) -> str:
    last_user = next((m.content for m in reversed(request.messages) if m.role == "user"), "")
    topic = " ".join(last_user.split())[:24]
    intro = f"【模拟回复】关于「{topic}」：\n\n" if topic else "【模拟回复】\n\n"
    return intro + passage


class MockAdapter(Adapter):
    kind = "mock"

    def __init__(self, config: ConnectionConfig) -> None:
        super().__init__(config)
        options = config.options
        self.chunk_delay = float(options.get("chunk_delay", DEFAULT_CHUNK_DELAY))
        self.chunk_chars = max(1, int(options.get("chunk_chars", DEFAULT_CHUNK_CHARS)))
        self.passage = str(options.get("text", PASSAGE))
        self.reasoning = str(options.get("reasoning", ""))
        self.error = options.get("error")

    def _plan(self, request: ChatRequest) -> tuple[str, str, str, Usage]:
        if self.error:
            cls = getattr(errors, str(self.error), None)
            if not (isinstance(cls, type) and issubclass(cls, errors.UpstreamError)):
                cls = errors.UpstreamServerError
            raise cls(f"mock upstream failure ({cls.__name__})", provider="mock")
        if request.prompt is not None:
            request = dataclasses.replace(request, messages=(ChatMessage("user", request.prompt),), prompt=None)
        text = mock_text(request, self.passage)
        limit = max(0, request.max_tokens) * CHARS_PER_TOKEN
        reasoning = self.reasoning[:limit]
        budget = limit - len(reasoning)
        finish = "stop"
        if len(text) > budget:
            text, finish = text[: max(0, budget)], "length"
        prompt_chars = sum(len(m.content) for m in request.messages)
        usage = Usage.of(math.ceil(prompt_chars / CHARS_PER_TOKEN), estimate_tokens(reasoning + text))
        return text, reasoning, finish, usage

    async def stream(self, request: ChatRequest) -> AsyncGenerator[Delta, None]:
        text, reasoning, finish, usage = self._plan(request)
        step, delay = self.chunk_chars, self.chunk_delay
        first = True
        for field, value in (("reasoning", reasoning), ("content", text)):
            for i in range(0, len(value), step):
                if delay and not first:
                    await asyncio.sleep(delay)
                first = False
                piece = value[i : i + step]
                yield Delta(reasoning=piece) if field == "reasoning" else Delta(piece)
        if delay:
            await asyncio.sleep(delay)
        yield Delta(finish_reason=finish, usage=usage)  # type: ignore[arg-type]

    async def complete(self, request: ChatRequest) -> Completion:
        text, reasoning, finish, usage = self._plan(request)
        if self.chunk_delay:
            await asyncio.sleep(self.chunk_delay)
        return Completion(text, reasoning, finish, usage)  # type: ignore[arg-type]

    async def list_models(self) -> list[str]:
        return ["mock"]
