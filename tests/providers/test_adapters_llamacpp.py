"""The OpenAI-compatible adapters against a real llama.cpp server (reference/real-upstream.md).

Skipped unless ``LLAMACPP_BASE_URL`` points at a running server (e.g. ``http://127.0.0.1:8080``),
started from ``xllamacpp`` with the Gemma 3 270M test model, ``n_ctx=4096``, ``n_parallel=2``.
Quality is irrelevant; the plumbing is real: first chunk with ``content: null``, usage only with
``include_usage``, text-completion usage in the last chunk, plain-JSON 400 for a too-long prompt.
"""

from __future__ import annotations

import os
from contextlib import aclosing

import pytest

from apps.providers.adapters import ChatRequest, ConnectionConfig, UpstreamBadRequest, get_adapter
from apps.providers.types import ChatMessage as M
from tests.fakes.upstream import collect

BASE = os.environ.get("LLAMACPP_BASE_URL", "")

pytest_plugins = ("tests.fakes.fixtures",)
pytestmark = [
    pytest.mark.llamacpp,
    pytest.mark.skipif(not BASE, reason="set LLAMACPP_BASE_URL to a running llama.cpp server"),
    pytest.mark.usefixtures("provider_clients"),
]

MESSAGES = (M("system", "You are a helpful assistant."), M("user", "Name three colours."))


def req(max_tokens: int = 16, temperature: float = 0, **kw) -> ChatRequest:
    return ChatRequest(messages=MESSAGES, model="gemma", max_tokens=max_tokens, temperature=temperature, **kw)


def adapter(kind: str = "openai", **kw):
    return get_adapter(ConnectionConfig(kind=kind, base_url=BASE, read_timeout=60, **kw))


async def test_chat_stream_with_usage() -> None:
    content, _, final, deltas = await collect(adapter().stream(req()))
    assert content
    assert final.finish_reason in ("stop", "length")
    assert final.usage is not None
    assert final.usage.prompt_tokens > 0
    assert 0 < final.usage.completion_tokens <= 16
    assert all(d.finish_reason is None for d in deltas[:-1])


async def test_chat_stream_cut_by_max_tokens() -> None:
    *_, final, _ = await collect(adapter().stream(req(max_tokens=4, stop=())))
    assert final.finish_reason == "length"
    assert final.usage is not None and final.usage.completion_tokens == 4


async def test_chat_complete() -> None:
    result = await adapter().complete(req(max_tokens=8))
    assert result.finish_reason in ("stop", "length")
    assert result.usage is not None and result.usage.completion_tokens <= 8


async def test_text_completion_with_transcript_template() -> None:
    a = adapter("openai_text", instruct_template="transcript")
    content, _, final, _ = await collect(a.stream(req(max_tokens=24)))
    assert final.finish_reason in ("stop", "length")
    assert final.usage is not None and final.usage.prompt_tokens > 0
    assert "\nUser:" not in content


async def test_prompt_over_context_is_bad_request() -> None:
    long = ChatRequest(messages=(M("user", "word " * 6000),), model="gemma", max_tokens=8, temperature=0)
    with pytest.raises(UpstreamBadRequest) as info:
        await collect(adapter().stream(long))
    assert info.value.retryable is False


async def test_early_close_then_next_request_works() -> None:
    a = adapter()
    async with aclosing(a.stream(req(max_tokens=64, stop=()))) as stream:
        async for _ in stream:
            break
    content, *_ = await collect(a.stream(req(max_tokens=4)))
    assert content


async def test_list_models() -> None:
    assert "gemma" in await adapter().list_models()


ALL_SAMPLING = {
    "top_p": 0.9,
    "top_k": 40,
    "min_p": 0.05,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.1,
    "repetition_penalty": 1.1,
    "seed": 42,
    "reasoning_effort": "low",
    "include_reasoning": True,
}


@pytest.mark.parametrize("kind", ["openai", "openai_text"])
async def test_every_sampling_parameter_is_accepted(kind: str) -> None:
    a = adapter(kind, instruct_template="transcript") if kind == "openai_text" else adapter(kind)
    result = await a.complete(req(max_tokens=8, sampling=ALL_SAMPLING))
    assert result.finish_reason in ("stop", "length")


async def test_sampling_reaches_the_sampler() -> None:
    # at temperature 1.5 different seeds give different texts, unless top_k = 1 makes it greedy
    a = adapter("openai_text", instruct_template="transcript")
    free = {(await a.complete(req(max_tokens=8, temperature=1.5, sampling={"seed": s}))).content for s in range(4)}
    greedy = {
        (await a.complete(req(max_tokens=8, temperature=1.5, sampling={"seed": s, "top_k": 1}))).content
        for s in range(3)
    }
    assert len(free) > 1
    assert len(greedy) == 1


async def test_raw_prompt_is_sent_as_is() -> None:
    a = adapter("openai_text", instruct_template="no-such-template")  # not used for a raw prompt
    raw = ChatRequest(messages=(), model="gemma", max_tokens=8, temperature=0, prompt="The capital of France is")
    result = await a.complete(raw)
    assert result.usage is not None and 0 < result.usage.prompt_tokens <= 8  # no template around it
