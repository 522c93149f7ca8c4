"""Gemini (Google AI Studio) adapter: conversion and the wire, against the real fake upstream."""

from __future__ import annotations

import dataclasses
from contextlib import aclosing

import pytest

from apps.providers.adapters import (
    ChatRequest,
    ConnectionConfig,
    Delta,
    UpstreamAuthError,
    UpstreamBadRequest,
    UpstreamConnectError,
    UpstreamModelNotFound,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    Usage,
    get_adapter,
)
from apps.providers.adapters.gemini import SAFETY_CATEGORIES, gemini_contents
from apps.providers.types import ChatMessage as M
from tests.fakes.upstream import FakeUpstream, Reply, collect

pytest_plugins = ("tests.fakes.fixtures",)
pytestmark = pytest.mark.usefixtures("provider_clients")

KEY = "AIzaSyA-SECRET-0123456789abcdefghijk"
REQ = ChatRequest(
    messages=(M("system", "Be brief."), M("user", "Hi"), M("assistant", "Hello"), M("user", "写诗")),
    model="gemini-test",
    max_tokens=50,
    temperature=0.9,
    stop=("a", "b", "c", "d", "e", "f"),
)


def adapter(fake: FakeUpstream, **kw):
    cfg = {"kind": "gemini", "base_url": fake.base_url, "api_key": KEY, "read_timeout": 5.0, **kw}
    return get_adapter(ConnectionConfig(**cfg))


@pytest.mark.parametrize(
    ("messages", "system", "contents"),
    [
        ([M("system", "S"), M("user", "U")], "S", [("user", "U")]),
        ([M("user", "a"), M("user", "b"), M("assistant", "c")], "", [("user", "a\n\nb"), ("model", "c")]),
        ([M("system", "S"), M("user", "U"), M("system", "late")], "S", [("user", "U\n\nlate")]),
        ([M("system", "only")], "", [("user", "only")]),
        ([M("user", "x", name="Ann")], "", [("user", "Ann: x")]),
    ],
)
def test_conversion(messages, system, contents) -> None:
    got_system, got = gemini_contents(messages)
    assert got_system == system
    assert [(c["role"], c["parts"][0]["text"]) for c in got] == contents


async def test_stream_exact_deltas_and_request(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["床前", "明月光"], reasoning=["thinking…"], usage=(12, 6)))
    *_, deltas = await collect(adapter(fake_upstream).stream(REQ))
    assert deltas == [
        Delta(reasoning="thinking…"),
        Delta("床前"),
        Delta("明月光"),
        Delta(finish_reason="stop", usage=Usage(12, 6, 18)),
    ]
    req = fake_upstream.requests[-1]
    assert req.path == "/v1beta/models/gemini-test:streamGenerateContent"
    assert req.query == {"alt": ["sse"]}
    assert req.headers["x-goog-api-key"] == KEY
    body = req.json
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "Hi"}]},
        {"role": "model", "parts": [{"text": "Hello"}]},
        {"role": "user", "parts": [{"text": "写诗"}]},
    ]
    assert body["generationConfig"] == {
        "candidateCount": 1,
        "maxOutputTokens": 50,
        "temperature": 0.9,
        "stopSequences": ["a", "b", "c", "d", "e"],  # Gemini accepts at most 5
    }
    assert len(body["safetySettings"]) == 5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
    ],
)
async def test_finish_reason_mapping(fake_upstream: FakeUpstream, raw: str, expected: str) -> None:
    fake_upstream.script(Reply(raw_finish=raw), Reply(raw_finish=raw))
    *_, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert final.finish_reason == expected
    assert (await adapter(fake_upstream).complete(REQ)).finish_reason == expected


async def test_prompt_blocked(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(
        Reply(block_reason="PROHIBITED_CONTENT", usage=(4, 0)), Reply(block_reason="SAFETY", usage=(4, 0))
    )
    content, _, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert (content, final.finish_reason) == ("", "content_filter")
    result = await adapter(fake_upstream).complete(REQ)
    assert (result.content, result.finish_reason) == ("", "content_filter")


async def test_usage_missing(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(usage=None))
    *_, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert final == Delta(finish_reason="stop")


@pytest.mark.parametrize(
    ("reply", "cls"),
    [
        (Reply.error(429, "Resource has been exhausted"), UpstreamRateLimited),
        (Reply.error(503, "The model is overloaded."), UpstreamServerError),
        (Reply.error(500), UpstreamServerError),
        (Reply.error(404, "models/gemini-nope is not found"), UpstreamModelNotFound),
        (Reply.error(400, "The input token count exceeds the maximum"), UpstreamBadRequest),
        (
            Reply.error(400, "API key not valid. Please pass a valid API key.", type="INVALID_ARGUMENT"),
            UpstreamAuthError,
        ),
        (Reply.error(403, "Permission denied"), UpstreamAuthError),
    ],
)
@pytest.mark.parametrize("mode", ["stream", "complete"])
async def test_http_errors(fake_upstream: FakeUpstream, reply: Reply, cls: type, mode: str) -> None:
    fake_upstream.script(reply)
    a = adapter(fake_upstream)
    with pytest.raises(cls) as info:
        await (collect(a.stream(REQ)) if mode == "stream" else a.complete(REQ))
    assert KEY not in str(info.value)


async def test_retry_delay_from_google_retry_info(fake_upstream: FakeUpstream) -> None:
    body = {
        "error": {
            "code": 429,
            "message": "quota",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "37s"}],
        }
    }
    fake_upstream.script(Reply(status=429, json_body=body))
    with pytest.raises(UpstreamRateLimited) as info:
        await collect(adapter(fake_upstream).stream(REQ))
    assert info.value.retry_after == 37.0


async def test_error_in_stream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(
        Reply(chunks=["a"], stream_error={"code": 503, "message": "overloaded", "status": "UNAVAILABLE"})
    )
    with pytest.raises(UpstreamServerError):
        await collect(adapter(fake_upstream).stream(REQ))


async def test_garbage_reset_hang_empty(fake_upstream: FakeUpstream) -> None:
    a = adapter(fake_upstream, read_timeout=0.2)
    fake_upstream.script(
        Reply(garbage=b'data: {"candidates": [\n\n'),
        Reply(chunks=["a", "b", "c"], reset_after=1),
        Reply(hang=True),
        Reply(garbage=b": nothing but comments\n\n"),
    )
    with pytest.raises(UpstreamProtocolError):
        await collect(a.stream(REQ))
    with pytest.raises(UpstreamConnectError):
        await collect(a.stream(REQ))
    with pytest.raises(UpstreamTimeout):
        await collect(a.stream(REQ))
    with pytest.raises(UpstreamProtocolError):
        await collect(a.stream(REQ))


async def test_split_writes(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["疑是", "地上霜"], split=5, line_ending="\r\n", keepalive=True))
    content, *_ = await collect(adapter(fake_upstream).stream(REQ))
    assert content == "疑是地上霜"


async def test_aclose_disconnects_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["x"] * 100, chunk_delay=0.05))
    async with aclosing(adapter(fake_upstream).stream(REQ)) as stream:
        async for _ in stream:
            break
    disconnects = await fake_upstream.wait_for_disconnects(1, timeout=1.0)
    assert [d.path for d in disconnects] == ["/v1beta/models/gemini-test:streamGenerateContent"]


async def test_complete(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["举头", "望明月"], reasoning=["hm"], raw_finish="MAX_TOKENS", usage=(8, 4)))
    result = await adapter(fake_upstream).complete(REQ)
    assert (result.content, result.reasoning, result.finish_reason, result.usage) == (
        "举头望明月",
        "hm",
        "length",
        Usage(8, 4, 12),
    )
    assert fake_upstream.requests[-1].path == "/v1beta/models/gemini-test:generateContent"


@pytest.mark.parametrize("suffix", ["", "/v1beta", "/v1beta/", "/v1beta/models"])
async def test_base_url_variants(fake_upstream: FakeUpstream, suffix: str) -> None:
    await collect(adapter(fake_upstream, base_url=fake_upstream.base_url + suffix).stream(REQ))
    assert fake_upstream.requests[-1].path == "/v1beta/models/gemini-test:streamGenerateContent"


async def test_model_with_models_prefix(fake_upstream: FakeUpstream) -> None:
    req = ChatRequest(messages=REQ.messages, model="models/gemini-x", max_tokens=5, temperature=0)
    await collect(adapter(fake_upstream).stream(req))
    assert fake_upstream.requests[-1].path == "/v1beta/models/gemini-x:streamGenerateContent"


async def test_list_models(fake_upstream: FakeUpstream) -> None:
    assert await adapter(fake_upstream).list_models() == ["fake-model", "fake-model-2"]
    assert fake_upstream.requests[-1].path == "/v1beta/models"


# ---------------------------------------------------------------------------------------------
# Sampling parameters and the raw-prompt guard

CONFIG = {  # REQ's generationConfig without any sampling parameter
    "candidateCount": 1,
    "maxOutputTokens": 50,
    "temperature": 0.9,
    "stopSequences": ["a", "b", "c", "d", "e"],
}
ALL_SAMPLING = {
    "top_p": 0.8,
    "top_k": 40,
    "min_p": 0.05,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.25,
    "repetition_penalty": 1.1,
    "seed": 7,
    "reasoning_effort": "high",
    "include_reasoning": True,
}


async def send(a, request: ChatRequest, mode: str) -> None:
    if mode == "stream":
        await collect(a.stream(request))
    else:
        await a.complete(request)


@pytest.mark.parametrize(
    ("sampling", "sent"),
    [
        pytest.param(
            ALL_SAMPLING,
            {"topP": 0.8, "topK": 40, "presencePenalty": 0.5, "frequencyPenalty": -0.25, "seed": 7},
            id="all nine: the five generationConfig has, camelCase",
        ),
        pytest.param({"min_p": 0.1, "repetition_penalty": 1.2, "reasoning_effort": "low"}, {}, id="none of these"),
        pytest.param({"seed": 0, "top_p": None}, {"seed": 0}, id="None left out, 0 kept"),
        pytest.param({"top_k": "40"}, {"topK": "40"}, id="values as given"),
    ],
)
async def test_sampling_sent_in_generation_config(fake_upstream: FakeUpstream, sampling, sent) -> None:
    await collect(adapter(fake_upstream).stream(dataclasses.replace(REQ, sampling=sampling)))
    body = fake_upstream.completion_requests[-1].json
    assert body["generationConfig"] == {**CONFIG, **sent}
    assert set(body) == {"contents", "generationConfig", "safetySettings", "systemInstruction"}


async def test_extra_generation_config_wins_over_sampling(fake_upstream: FakeUpstream) -> None:
    request = dataclasses.replace(REQ, sampling={"top_k": 40, "seed": 3}, extra={"generationConfig": {"topK": 1}})
    await adapter(fake_upstream).complete(request)
    config = fake_upstream.completion_requests[-1].json["generationConfig"]
    assert (config["topK"], config["seed"]) == (1, 3)


@pytest.mark.parametrize("mode", ["stream", "complete"])
@pytest.mark.parametrize(
    "request_",
    [
        pytest.param(REQ, id="no sampling"),
        pytest.param(dataclasses.replace(REQ, sampling={}), id="empty sampling"),
        pytest.param(dataclasses.replace(REQ, sampling=dict.fromkeys(ALL_SAMPLING)), id="all None"),
    ],
)
async def test_no_sampling_body_is_byte_for_byte_unchanged(fake_upstream: FakeUpstream, request_, mode: str) -> None:
    # the bytes this adapter sent for REQ before sampling parameters existed (commit 011fc14)
    safety = ",".join(f'{{"category":"{c}","threshold":"OFF"}}' for c in SAFETY_CATEGORIES).encode()
    expected = (
        b'{"contents":[{"role":"user","parts":[{"text":"Hi"}]},{"role":"model","parts":[{"text":"Hello"}]},'
        b'{"role":"user","parts":[{"text":"\xe5\x86\x99\xe8\xaf\x97"}]}],"generationConfig":{"candidateCount":1,'
        b'"maxOutputTokens":50,"temperature":0.9,"stopSequences":["a","b","c","d","e"]},"safetySettings":['
        + safety
        + b'],"systemInstruction":{"parts":[{"text":"Be brief."}]}}'
    )
    await send(adapter(fake_upstream), request_, mode)
    assert fake_upstream.completion_requests[-1].body == expected


@pytest.mark.parametrize("mode", ["stream", "complete"])
async def test_a_raw_prompt_is_refused_without_calling_upstream(fake_upstream: FakeUpstream, mode: str) -> None:
    with pytest.raises(UpstreamBadRequest) as info:
        await send(adapter(fake_upstream), dataclasses.replace(REQ, prompt="Once upon a time"), mode)
    assert info.value.retryable is False
    assert "this connection does not do text completion" in str(info.value)
    assert fake_upstream.requests == []
