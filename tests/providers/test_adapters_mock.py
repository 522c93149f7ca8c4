"""The offline mock provider."""

from __future__ import annotations

import asyncio
import dataclasses
import math

import pytest

from apps.providers.adapters import (
    ChatRequest,
    Completion,
    ConnectionConfig,
    Delta,
    UpstreamRateLimited,
    UpstreamServerError,
    Usage,
    get_adapter,
)
from apps.providers.adapters.mock import PASSAGE, MockAdapter, mock_text
from apps.providers.types import ChatMessage as M
from tests.fakes.upstream import collect

REQ = ChatRequest(
    messages=(M("system", "sys"), M("user", "写一个雨夜的开头")),
    model="mock",
    max_tokens=2048,
    temperature=0.7,
)
FAST = ConnectionConfig(kind="mock", options={"chunk_delay": 0})


def test_get_adapter_gives_mock() -> None:
    assert isinstance(get_adapter(ConnectionConfig(kind="mock")), MockAdapter)
    assert get_adapter(ConnectionConfig(kind="mock")).chunk_delay == 0.02


async def test_stream_is_deterministic_and_chunked() -> None:
    a = get_adapter(FAST)
    first = await collect(a.stream(REQ))
    second = await collect(a.stream(REQ))
    content, reasoning, final, deltas = first
    expected = "【模拟回复】关于「写一个雨夜的开头」：\n\n" + PASSAGE
    assert content == expected == second[0]
    assert reasoning == ""
    assert all(len(d.content) <= 4 for d in deltas[:-1])
    assert len(deltas) == math.ceil(len(expected) / 4) + 1
    prompt_chars = len("sys") + len("写一个雨夜的开头")
    assert final == Delta(
        finish_reason="stop", usage=Usage.of(math.ceil(prompt_chars / 4), math.ceil(len(expected) / 4))
    )


async def test_text_depends_on_last_user_message() -> None:
    other = ChatRequest(messages=(M("user", "another topic"),), model="mock", max_tokens=2048, temperature=0)
    assert mock_text(other) != mock_text(REQ)
    assert mock_text(other).startswith("【模拟回复】关于「another topic」")


async def test_max_tokens_cuts_with_length() -> None:
    req = ChatRequest(messages=REQ.messages, model="mock", max_tokens=5, temperature=0)
    content, _, final, _ = await collect(get_adapter(FAST).stream(req))
    assert len(content) == 20
    assert final.finish_reason == "length"
    assert final.usage is not None and final.usage.completion_tokens == 5


async def test_complete_matches_stream() -> None:
    a = get_adapter(FAST)
    content, _, final, _ = await collect(a.stream(REQ))
    assert await a.complete(REQ) == Completion(content, "", "stop", final.usage)


async def test_reasoning_option() -> None:
    a = get_adapter(ConnectionConfig(kind="mock", options={"chunk_delay": 0, "reasoning": "想一想"}))
    _content, reasoning, _, deltas = await collect(a.stream(REQ))
    assert reasoning == "想一想"
    assert deltas[0] == Delta(reasoning="想一想")


async def test_realistic_pace() -> None:
    a = get_adapter(ConnectionConfig(kind="mock", options={"chunk_delay": 0.01}))
    req = ChatRequest(messages=REQ.messages, model="mock", max_tokens=5, temperature=0)  # 5 chunks
    loop = asyncio.get_running_loop()
    started = loop.time()
    await collect(a.stream(req))
    assert loop.time() - started >= 0.04


@pytest.mark.parametrize(
    ("name", "cls"), [("UpstreamRateLimited", UpstreamRateLimited), ("bogus", UpstreamServerError)]
)
async def test_error_option(name: str, cls: type) -> None:
    a = get_adapter(ConnectionConfig(kind="mock", options={"chunk_delay": 0, "error": name}))
    with pytest.raises(cls):
        await collect(a.stream(REQ))
    with pytest.raises(cls):
        await a.complete(REQ)


async def test_list_models() -> None:
    assert await get_adapter(FAST).list_models() == ["mock"]


async def test_sampling_is_ignored() -> None:
    a = get_adapter(FAST)
    sampled = dataclasses.replace(REQ, sampling={"top_p": 0.1, "top_k": 1, "seed": 42, "reasoning_effort": "high"})
    assert await collect(a.stream(sampled)) == await collect(a.stream(REQ))
    assert await a.complete(sampled) == await a.complete(REQ)


@pytest.mark.parametrize("prompt", ["Once upon a time, in a town by the river", "", "  续写：\n雨夜  "])
async def test_raw_prompt_answers_as_one_user_message(prompt: str) -> None:
    a = get_adapter(FAST)
    # messages are not used: the prompt is answered as if it were the only (user) message
    raw = dataclasses.replace(REQ, prompt=prompt)
    one_user = dataclasses.replace(REQ, messages=(M("user", prompt),))
    assert await collect(a.stream(raw)) == await collect(a.stream(one_user))
    assert await a.complete(raw) == await a.complete(one_user)
    content, _, final, _ = await collect(a.stream(raw))
    assert final.usage is not None and final.usage.prompt_tokens == math.ceil(len(prompt) / 4)
    topic = " ".join(prompt.split())[:24]
    assert content.startswith(f"【模拟回复】关于「{topic}」" if topic else "【模拟回复】\n\n")
