"""Anthropic Messages adapter: conversion (pure, table-driven) and the wire (real fake upstream)."""

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
from apps.providers.adapters.anthropic import anthropic_messages
from apps.providers.adapters.messages import PLACEHOLDER
from apps.providers.types import ChatMessage as M
from tests.fakes.upstream import FakeUpstream, Reply, collect

pytest_plugins = ("tests.fakes.fixtures",)
pytestmark = pytest.mark.usefixtures("provider_clients")

KEY = "sk-ant-api03-SECRET-abcdefghijklmnop"
REQ = ChatRequest(
    messages=(M("system", "You are Claude."), M("user", "讲个故事")),
    model="claude-test",
    max_tokens=100,
    temperature=0.8,
    stop=("\n\nHuman:",),
)


def adapter(fake: FakeUpstream, **kw):
    cfg = {"kind": "anthropic", "base_url": fake.base_url, "api_key": KEY, "read_timeout": 5.0, **kw}
    return get_adapter(ConnectionConfig(**cfg))


CONVERSIONS = [
    (
        "system extracted, user kept",
        [M("system", "S1"), M("system", "S2"), M("user", "U")],
        "S1\n\nS2",
        [("user", "U")],
    ),
    (
        "mid-prompt system becomes user and merges",
        [M("system", "S"), M("user", "U1"), M("system", "note"), M("assistant", "A"), M("user", "U2")],
        "S",
        [("user", "U1\n\nnote"), ("assistant", "A"), ("user", "U2")],
    ),
    (
        "consecutive same roles merged",
        [M("user", "a"), M("user", "b"), M("assistant", "c"), M("assistant", "d"), M("user", "e")],
        "",
        [("user", "a\n\nb"), ("assistant", "c\n\nd"), ("user", "e")],
    ),
    (
        "first message assistant gets a placeholder user",
        [M("system", "S"), M("assistant", "Hi"), M("user", "U")],
        "S",
        [("user", PLACEHOLDER), ("assistant", "Hi"), ("user", "U")],
    ),
    ("only system gives placeholder", [M("system", "S")], "S", [("user", PLACEHOLDER)]),
    ("empty conversation", [], "", [("user", PLACEHOLDER)]),
    (
        "trailing assistant is a prefill, right-trimmed",
        [M("user", "U"), M("assistant", "Once upon a time \n")],
        "",
        [("user", "U"), ("assistant", "Once upon a time")],
    ),
    ("whitespace-only prefill dropped", [M("user", "U"), M("assistant", "  ")], "", [("user", "U")]),
    (
        "names become prefixes",
        [M("user", "hello", name="Ann"), M("assistant", "Bob: hi", name="Bob")],
        "",
        [("user", "Ann: hello"), ("assistant", "Bob: hi")],
    ),
    ("empty messages dropped", [M("user", ""), M("user", "U"), M("assistant", "")], "", [("user", "U")]),
]


@pytest.mark.parametrize(("messages", "system", "turns"), [c[1:] for c in CONVERSIONS], ids=[c[0] for c in CONVERSIONS])
def test_conversion(messages, system, turns) -> None:
    got_system, got = anthropic_messages(messages)
    assert got_system == system
    assert [(m["role"], m["content"]) for m in got] == turns


def test_conversion_all_system_mode() -> None:
    system, msgs = anthropic_messages([M("system", "S"), M("user", "U"), M("system", "late")], mode="all")
    assert system == "S\n\nlate"
    assert msgs == [{"role": "user", "content": "U"}]


async def test_stream_exact_deltas_and_request(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["从前", "有座山"], reasoning=["let me", " think"], usage=(25, 9)))
    *_, deltas = await collect(adapter(fake_upstream).stream(REQ))
    assert deltas == [
        Delta(reasoning="let me"),
        Delta(reasoning=" think"),
        Delta("从前"),
        Delta("有座山"),
        Delta(finish_reason="stop", usage=Usage(25, 9, 34)),
    ]
    req = fake_upstream.requests[-1]
    assert req.path == "/v1/messages"
    assert req.headers["x-api-key"] == KEY
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    assert req.json == {
        "model": "claude-test",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "讲个故事"}],
        "temperature": 0.8,
        "system": "You are Claude.",
        "stop_sequences": ["\n\nHuman:"],
        "stream": True,
    }


async def test_temperature_clamped_and_extra_merged(fake_upstream: FakeUpstream) -> None:
    req = ChatRequest(messages=REQ.messages, model="m", max_tokens=10, temperature=1.7, extra={"top_k": 5})
    await collect(adapter(fake_upstream).stream(req))
    body = fake_upstream.requests[-1].json
    assert (body["temperature"], body["top_k"]) == (1.0, 5)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("refusal", "content_filter"),
        ("tool_use", "stop"),
    ],
)
async def test_stop_reason_mapping(fake_upstream: FakeUpstream, raw: str, expected: str) -> None:
    fake_upstream.script(Reply(raw_finish=raw), Reply(raw_finish=raw))
    *_, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert final.finish_reason == expected
    assert (await adapter(fake_upstream).complete(REQ)).finish_reason == expected


async def test_usage_missing(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(usage=None))
    *_, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert final == Delta(finish_reason="stop")


async def test_overloaded_error_event_mid_stream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["a"], stream_error={"type": "overloaded_error", "message": "Overloaded"}))
    seen = []
    with pytest.raises(UpstreamServerError, match="Overloaded") as info:
        async for d in adapter(fake_upstream).stream(REQ):
            seen.append(d)
    assert seen == [Delta("a")]
    assert info.value.retryable is True


@pytest.mark.parametrize(
    ("error_type", "cls"),
    [
        ("rate_limit_error", UpstreamRateLimited),
        ("api_error", UpstreamServerError),
        ("invalid_request_error", UpstreamBadRequest),
    ],
)
async def test_other_error_events(fake_upstream: FakeUpstream, error_type: str, cls: type) -> None:
    fake_upstream.script(Reply(chunks=[], stream_error={"type": error_type, "message": "x"}))
    with pytest.raises(cls):
        await collect(adapter(fake_upstream).stream(REQ))


@pytest.mark.parametrize(
    ("reply", "cls", "retryable"),
    [
        (Reply.error(529, "Overloaded", type="overloaded_error"), UpstreamServerError, True),
        (
            Reply.error(429, "Number of request tokens has exceeded your rate limit", retry_after="3"),
            UpstreamRateLimited,
            True,
        ),
        (Reply.error(404, "model: claude-nope", type="not_found_error"), UpstreamModelNotFound, True),
        (Reply.error(400, "prompt is too long: 250000 tokens > 200000 maximum"), UpstreamBadRequest, False),
        (Reply.error(401, "invalid x-api-key", type="authentication_error"), UpstreamAuthError, False),
        (Reply.error(500, "Internal server error", type="api_error"), UpstreamServerError, True),
    ],
)
@pytest.mark.parametrize("mode", ["stream", "complete"])
async def test_http_errors(fake_upstream: FakeUpstream, reply: Reply, cls: type, retryable: bool, mode: str) -> None:
    fake_upstream.script(reply)
    a = adapter(fake_upstream)
    with pytest.raises(cls) as info:
        await (collect(a.stream(REQ)) if mode == "stream" else a.complete(REQ))
    assert info.value.retryable is retryable
    assert KEY not in str(info.value)
    if cls is UpstreamRateLimited:
        assert info.value.retry_after == 3.0


async def test_stream_without_message_stop_is_protocol_error(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(finish=None, done=False))
    with pytest.raises(UpstreamProtocolError):
        await collect(adapter(fake_upstream).stream(REQ))


async def test_garbage_reset_hang(fake_upstream: FakeUpstream) -> None:
    a = adapter(fake_upstream, read_timeout=0.2)
    fake_upstream.script(
        Reply(garbage=b"event: message_start\ndata: {oops\n\n"),
        Reply(chunks=["a", "b", "c"], reset_after=1),
        Reply(hang=True),
    )
    with pytest.raises(UpstreamProtocolError):
        await collect(a.stream(REQ))
    with pytest.raises(UpstreamConnectError):
        await collect(a.stream(REQ))
    with pytest.raises(UpstreamTimeout):
        await collect(a.stream(REQ))


async def test_split_writes_and_keepalives(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["夜色", "像一匹"], split=6, keepalive=True, line_ending="\r\n"))
    content, *_ = await collect(adapter(fake_upstream).stream(REQ))
    assert content == "夜色像一匹"


async def test_prefill_is_sent_and_reply_continues_it(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=[" there lived"]))
    req = ChatRequest(
        messages=(M("user", "Tell me"), M("assistant", "Once upon a time ")), model="m", max_tokens=5, temperature=0
    )
    content, *_ = await collect(adapter(fake_upstream).stream(req))
    assert content == " there lived"
    assert fake_upstream.requests[-1].json["messages"][-1] == {"role": "assistant", "content": "Once upon a time"}


async def test_aclose_disconnects_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["x"] * 100, chunk_delay=0.05))
    async with aclosing(adapter(fake_upstream).stream(REQ)) as stream:
        async for _ in stream:
            break
    disconnects = await fake_upstream.wait_for_disconnects(1, timeout=1.0)
    assert [d.path for d in disconnects] == ["/v1/messages"]


async def test_complete(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["Hi", "!"], reasoning=["hmm"], usage=(7, 3)))
    result = await adapter(fake_upstream).complete(REQ)
    assert (result.content, result.reasoning, result.finish_reason, result.usage) == (
        "Hi!",
        "hmm",
        "stop",
        Usage(7, 3, 10),
    )
    assert "stream" not in fake_upstream.requests[-1].json


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/messages"])
async def test_base_url_with_or_without_v1(fake_upstream: FakeUpstream, suffix: str) -> None:
    await collect(adapter(fake_upstream, base_url=fake_upstream.base_url + suffix).stream(REQ))
    assert fake_upstream.requests[-1].path == "/v1/messages"


async def test_list_models(fake_upstream: FakeUpstream) -> None:
    assert await adapter(fake_upstream).list_models() == ["fake-model", "fake-model-2"]
    assert fake_upstream.requests[-1].headers["x-api-key"] == KEY


# ---------------------------------------------------------------------------------------------
# Sampling parameters and the raw-prompt guard

BODY = {  # what REQ sends (streamed) without any sampling parameter
    "model": "claude-test",
    "max_tokens": 100,
    "messages": [{"role": "user", "content": "讲个故事"}],
    "temperature": 0.8,
    "system": "You are Claude.",
    "stop_sequences": ["\n\nHuman:"],
    "stream": True,
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
        pytest.param(ALL_SAMPLING, {"top_p": 0.8, "top_k": 40}, id="all nine: top_p and top_k only"),
        pytest.param({"top_k": 1}, {"top_k": 1}, id="top_k alone"),
        pytest.param({"presence_penalty": 1, "seed": 3, "min_p": 0.1}, {}, id="no penalties, seed or min_p"),
        pytest.param({"top_p": None, "top_k": 0}, {"top_k": 0}, id="None left out, 0 kept"),
        pytest.param({"top_p": "0.5"}, {"top_p": "0.5"}, id="values as given"),
    ],
)
async def test_sampling_sent_by_anthropic_names(fake_upstream: FakeUpstream, sampling, sent) -> None:
    await collect(adapter(fake_upstream).stream(dataclasses.replace(REQ, sampling=sampling)))
    assert fake_upstream.completion_requests[-1].json == {**BODY, **sent}


async def test_extra_wins_over_sampling(fake_upstream: FakeUpstream) -> None:
    request = dataclasses.replace(REQ, sampling={"top_k": 40, "top_p": 0.9}, extra={"top_k": 5})
    await adapter(fake_upstream).complete(request)
    body = fake_upstream.completion_requests[-1].json
    assert (body["top_k"], body["top_p"]) == (5, 0.9)


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
    expected = (
        b'{"model":"claude-test","max_tokens":100,"messages":[{"role":"user","content":'
        b'"\xe8\xae\xb2\xe4\xb8\xaa\xe6\x95\x85\xe4\xba\x8b"}],"temperature":0.8,"system":"You are Claude.",'
        b'"stop_sequences":["\\n\\nHuman:"]' + (b',"stream":true}' if mode == "stream" else b"}")
    )
    await send(adapter(fake_upstream), request_, mode)
    assert fake_upstream.completion_requests[-1].body == expected


@pytest.mark.parametrize("mode", ["stream", "complete"])
async def test_a_raw_prompt_is_refused_without_calling_upstream(fake_upstream: FakeUpstream, mode: str) -> None:
    with pytest.raises(UpstreamBadRequest) as info:
        await send(adapter(fake_upstream), dataclasses.replace(REQ, prompt="\n\nHuman: hi\n\nAssistant:"), mode)
    assert info.value.retryable is False
    assert "this connection does not do text completion" in str(info.value)
    assert fake_upstream.requests == []
