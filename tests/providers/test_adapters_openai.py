"""OpenAI Chat Completions adapter against the real fake upstream (HTTP on loopback)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

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
    normalize_base_url,
)
from apps.providers.adapters.openai import sampler_extras
from apps.providers.types import ChatMessage
from tests.fakes.upstream import FakeUpstream, Reply, collect

pytest_plugins = ("tests.fakes.fixtures",)
pytestmark = pytest.mark.usefixtures("provider_clients")

KEY = "sk-test-SECRET-0123456789abcdef"
REQ = ChatRequest(
    messages=(
        ChatMessage("system", "You are a novelist."),
        ChatMessage("user", "写一段开头", name="alice"),
    ),
    model="gpt-test",
    max_tokens=64,
    temperature=0.7,
    stop=("\nUser:",),
    extra={"top_p": 0.9},
)


def adapter(fake: FakeUpstream, **kw):
    cfg = {"kind": "openai", "base_url": fake.base_url, "api_key": KEY, "read_timeout": 5.0, **kw}
    return get_adapter(ConnectionConfig(**cfg))


async def test_stream_exact_deltas_and_request(fake_upstream: FakeUpstream) -> None:
    # given
    fake_upstream.script(Reply(chunks=["你好", "，", "world"], usage=(21, 3)))
    a = adapter(fake_upstream, extra_headers={"X-Title": "writing"})
    # when
    *_, deltas = await collect(a.stream(REQ))
    # then
    assert deltas == [
        Delta("你好"),
        Delta("，"),
        Delta("world"),
        Delta(finish_reason="stop", usage=Usage(21, 3, 24)),
    ]
    req = fake_upstream.requests[-1]
    assert req.path == "/v1/chat/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.headers["x-title"] == "writing"
    assert req.headers["accept"] == "text/event-stream"
    assert req.json == {
        "model": "gpt-test",
        "messages": [
            {"role": "system", "content": "You are a novelist."},
            {"role": "user", "content": "写一段开头", "name": "alice"},
        ],
        "max_tokens": 64,
        "temperature": 0.7,
        "stream": True,
        "stop": ["\nUser:"],
        "stream_options": {"include_usage": True},
        "top_p": 0.9,
    }


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
async def test_reasoning_is_separate(fake_upstream: FakeUpstream, field: str) -> None:
    fake_upstream.script(Reply(chunks=["答"], reasoning=["先想", "一下"], reasoning_field=field))
    content, reasoning, _final, deltas = await collect(adapter(fake_upstream).stream(REQ))
    assert (content, reasoning) == ("答", "先想一下")
    assert deltas[:2] == [Delta(reasoning="先想"), Delta(reasoning="一下")]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
        ("tool_calls", "stop"),
        ("function_call", "stop"),
        ("something_new", "stop"),
    ],
)
async def test_finish_reason_mapping(fake_upstream: FakeUpstream, raw: str, expected: str) -> None:
    fake_upstream.script(Reply(raw_finish=raw))
    *_, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert final.finish_reason == expected


async def test_usage_missing_gives_none(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(usage=None))
    *_, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert final == Delta(finish_reason="stop", usage=None)


async def test_done_without_finish_reason_is_stop(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(finish=None, usage=None))
    content, _, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert (content, final) == ("Hello, world!", Delta(finish_reason="stop"))


async def test_finish_without_done_is_fine(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(done=False, usage=(1, 2)))
    *_, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert final == Delta(finish_reason="stop", usage=Usage(1, 2, 3))


async def test_stream_cut_without_finish_or_done_is_protocol_error(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(finish=None, done=False))
    with pytest.raises(UpstreamProtocolError, match="ended before"):
        await collect(adapter(fake_upstream).stream(REQ))


async def test_awkward_tcp_splits_crlf_keepalives_bom(fake_upstream: FakeUpstream) -> None:
    chunks = ["龍が", "🙂x", "中文字符"]
    fake_upstream.script(Reply(chunks=chunks, split=5, keepalive=True, line_ending="\r\n", bom=True))
    content, _, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert content == "".join(chunks)
    assert final.finish_reason == "stop"


@pytest.mark.parametrize("line_ending", ["\n", "\r\n", "\r"])
async def test_line_endings(fake_upstream: FakeUpstream, line_ending: str) -> None:
    fake_upstream.script(Reply(chunks=["a", "b"], line_ending=line_ending, split=3))
    content, *_ = await collect(adapter(fake_upstream).stream(REQ))
    assert content == "ab"


ERRORS = [
    (Reply.error(429, "Rate limit reached", retry_after="7"), UpstreamRateLimited, True, 429),
    (Reply.error(500, "boom"), UpstreamServerError, True, 502),
    (Reply.error(503, "loading model"), UpstreamServerError, True, 502),
    (Reply.error(529, "Overloaded", type="overloaded_error"), UpstreamServerError, True, 502),
    (Reply.error(404, "The model `x` does not exist"), UpstreamModelNotFound, True, 502),
    (
        Reply.error(400, "This model's maximum context length is 4096 tokens", type="context_length_exceeded"),
        UpstreamBadRequest,
        False,
        502,
    ),
    (Reply.error(401, f"Incorrect API key provided: {KEY}"), UpstreamAuthError, False, 502),
    (Reply.error(403, "forbidden"), UpstreamAuthError, False, 502),
    (Reply.error(504, "gateway timeout"), UpstreamTimeout, True, 504),
]


@pytest.mark.parametrize(
    ("reply", "cls", "retryable", "client_status"), ERRORS, ids=lambda v: str(getattr(v, "status", ""))
)
@pytest.mark.parametrize("mode", ["stream", "complete"])
async def test_http_errors_map_to_taxonomy(
    fake_upstream: FakeUpstream, reply: Reply, cls: type, retryable: bool, client_status: int, mode: str
) -> None:
    fake_upstream.script(reply)
    a = adapter(fake_upstream)
    with pytest.raises(cls) as info:
        if mode == "stream":
            await collect(a.stream(REQ))
        else:
            await a.complete(REQ)
    err = info.value
    assert err.retryable is retryable
    assert err.client_status == client_status
    assert err.upstream_status == reply.status
    assert KEY not in str(err)
    assert "SECRET" not in str(err)
    assert str(reply.status) in str(err)


async def test_retry_after_seconds_and_http_date(fake_upstream: FakeUpstream) -> None:
    when = datetime.now(UTC) + timedelta(seconds=30)
    fake_upstream.script(
        Reply.error(429, retry_after="12"),
        Reply.error(429, retry_after=format_datetime(when, usegmt=True)),
        Reply.error(429),
    )
    a = adapter(fake_upstream)
    found = []
    for _ in range(3):
        with pytest.raises(UpstreamRateLimited) as info:
            await collect(a.stream(REQ))
        found.append(info.value.retry_after)
    assert found[0] == 12.0
    assert 25 <= found[1] <= 30
    assert found[2] is None


async def test_error_event_inside_stream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["part"], stream_error={"message": "upstream overloaded", "code": 529}))
    seen = []
    with pytest.raises(UpstreamServerError, match="overloaded"):
        async for d in adapter(fake_upstream).stream(REQ):
            seen.append(d)
    assert seen == [Delta("part")]


async def test_reset_mid_stream_is_connect_error_after_first_tokens(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["a", "b", "c", "d"], reset_after=2))
    seen = []
    with pytest.raises(UpstreamConnectError) as info:
        async for d in adapter(fake_upstream).stream(REQ):
            seen.append(d)
    assert seen == [Delta("a"), Delta("b")]
    assert info.value.retryable is True  # the generation layer only retries before the first token


@pytest.mark.parametrize(
    "garbage",
    [b"data: {not json}\n\n", b'data: {"choices": [\n\n', b"<html>502 Bad Gateway</html>"],
)
async def test_garbage_sse_is_protocol_error(fake_upstream: FakeUpstream, garbage: bytes) -> None:
    fake_upstream.script(Reply(garbage=garbage))
    with pytest.raises(UpstreamProtocolError):
        await collect(adapter(fake_upstream).stream(REQ))


async def test_json_where_a_stream_was_expected(fake_upstream: FakeUpstream) -> None:
    # llama.cpp answers a too-long prompt with plain JSON even for stream: true — as a 400
    fake_upstream.script(
        Reply.error(400, "the request exceeds the available context size", type="exceed_context_size_error")
    )
    with pytest.raises(UpstreamBadRequest, match="context size"):
        await collect(adapter(fake_upstream).stream(REQ))


async def test_hang_before_headers_times_out(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(hang=True))
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout) as info:
        await collect(adapter(fake_upstream, read_timeout=0.2).stream(REQ))
    assert loop.time() - started < 2
    assert info.value.client_status == 504
    assert info.value.retryable is True


async def test_silence_mid_stream_times_out(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["a", "b", "c"], hang_after=1))
    seen = []
    with pytest.raises(UpstreamTimeout, match="read timeout"):
        async for d in adapter(fake_upstream, read_timeout=0.2).stream(REQ):
            seen.append(d)
    assert seen == [Delta("a")]


async def test_connection_refused_is_connect_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    a = get_adapter(ConnectionConfig(kind="openai", base_url=f"http://127.0.0.1:{port}", api_key=KEY))
    with pytest.raises(UpstreamConnectError) as info:
        await collect(a.stream(REQ))
    assert info.value.retryable is True
    assert KEY not in str(info.value)


async def test_aclose_disconnects_upstream_promptly(fake_upstream: FakeUpstream) -> None:
    # given a long, slow stream
    fake_upstream.script(Reply(chunks=["x"] * 200, chunk_delay=0.05))
    a = adapter(fake_upstream)
    # when the consumer stops after the second delta
    async with aclosing(a.stream(REQ)) as stream:
        n = 0
        async for _ in stream:
            n += 1
            if n == 2:
                break
    # then the fake upstream sees the client go away at once, long before the answer would end
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    disconnects = await fake_upstream.wait_for_disconnects(1, timeout=1.0)
    assert len(disconnects) == 1
    assert disconnects[0].path == "/v1/chat/completions"
    assert disconnects[0].events_sent < 10
    assert loop.time() - t0 < 0.5


async def test_cancelling_the_consumer_disconnects_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["x"] * 200, chunk_delay=0.05))
    a = adapter(fake_upstream)
    got_one = asyncio.Event()

    async def consume() -> None:
        async with aclosing(a.stream(REQ)) as stream:
            async for _ in stream:
                got_one.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_one.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(await fake_upstream.wait_for_disconnects(1, timeout=1.0)) == 1


async def test_disconnect_while_upstream_is_thinking(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(latency=5))
    a = adapter(fake_upstream)
    task = asyncio.create_task(collect(a.stream(REQ)))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(await fake_upstream.wait_for_disconnects(1, timeout=1.0)) == 1


async def test_complete(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["你好", "world"], reasoning=["hm"], raw_finish="length", usage=(5, 7)))
    result = await adapter(fake_upstream).complete(REQ)
    assert (result.content, result.reasoning, result.finish_reason, result.usage) == (
        "你好world",
        "hm",
        "length",
        Usage(5, 7, 12),
    )
    body = fake_upstream.requests[-1].json
    assert body["stream"] is False
    assert "stream_options" not in body


async def test_complete_without_choices_is_protocol_error(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(json_body={"object": "chat.completion"}))
    with pytest.raises(UpstreamProtocolError):
        await adapter(fake_upstream).complete(REQ)


async def test_complete_invalid_json_is_protocol_error(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(json_body="not an object"))
    with pytest.raises(UpstreamProtocolError):
        await adapter(fake_upstream).complete(REQ)


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/", "/v1/chat/completions"])
async def test_base_url_variants_reach_the_same_endpoint(fake_upstream: FakeUpstream, suffix: str) -> None:
    a = adapter(fake_upstream, base_url=fake_upstream.base_url + suffix)
    content, *_ = await collect(a.stream(REQ))
    assert content == "Hello, world!"
    assert fake_upstream.requests[-1].path == "/v1/chat/completions"


async def test_list_models(fake_upstream: FakeUpstream) -> None:
    assert await adapter(fake_upstream).list_models() == ["fake-model", "fake-model-2"]
    assert fake_upstream.requests[-1].path == "/v1/models"


async def test_connection_is_reused_between_requests(fake_upstream: FakeUpstream) -> None:
    a = adapter(fake_upstream)
    for _ in range(3):
        await collect(a.stream(REQ))
        await a.complete(REQ)
    assert len(fake_upstream.requests) == 6
    assert len({r.connection for r in fake_upstream.requests}) == 1


async def test_many_concurrent_streams(fake_upstream: FakeUpstream) -> None:
    fake_upstream.default = Reply(chunks=["a"] * 20, chunk_delay=0.005)
    a = adapter(fake_upstream)
    results = await asyncio.gather(*(collect(a.stream(REQ)) for _ in range(100)))
    assert {r[0] for r in results} == {"a" * 20}
    assert len(fake_upstream.completion_requests) == 100


async def test_non_ascii_extra_header_value_is_sent_as_utf8(fake_upstream: FakeUpstream) -> None:
    await collect(adapter(fake_upstream, extra_headers={"X-Title": "写作服务"}).stream(REQ))
    assert fake_upstream.requests[-1].headers["x-title"].encode("latin-1").decode("utf-8") == "写作服务"


async def test_error_json_with_200_on_a_stream_request(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(json_body={"error": {"message": "quota exceeded", "code": 429}}), Reply())
    a = adapter(fake_upstream)
    # a non-stream 200 JSON error body, answered to a *stream* request: still the taxonomy
    req_stream = ChatRequest(messages=REQ.messages, model="m", max_tokens=5, temperature=0, extra={"stream": False})
    with pytest.raises(UpstreamRateLimited):
        await collect(a.stream(req_stream))


async def test_stream_mislabelled_as_json_is_still_parsed(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["a", "b"], headers={"content-type": "application/json"}))
    content, _, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert (content, final.finish_reason) == ("ab", "stop")


# ---------------------------------------------------------------------------------------------
# Sampling parameters, the sampler_extras rule, the raw-prompt guard

PLAIN = dataclasses.replace(REQ, extra={})
PLAIN_BODY = {  # what PLAIN sends (streamed) without any sampling parameter
    "model": "gpt-test",
    "messages": [
        {"role": "system", "content": "You are a novelist."},
        {"role": "user", "content": "写一段开头", "name": "alice"},
    ],
    "max_tokens": 64,
    "temperature": 0.7,
    "stream": True,
    "stop": ["\nUser:"],
    "stream_options": {"include_usage": True},
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
STANDARD = {"top_p": 0.8, "presence_penalty": 0.5, "frequency_penalty": -0.25, "seed": 7, "reasoning_effort": "high"}


async def send(a, request: ChatRequest, mode: str) -> None:
    if mode == "stream":
        await collect(a.stream(request))
    else:
        await a.complete(request)


@pytest.mark.parametrize(
    ("sampling", "sent"),
    [
        pytest.param(ALL_SAMPLING, ALL_SAMPLING, id="all nine, same names"),
        pytest.param(STANDARD, STANDARD, id="the standard ones"),
        pytest.param(
            {"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "include_reasoning": False},
            {"top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1, "include_reasoning": False},
            id="the extras",
        ),
        pytest.param({"seed": 0, "top_p": None, "min_p": 0.0}, {"seed": 0, "min_p": 0.0}, id="None left out, 0 kept"),
        pytest.param({"mirostat": 2, "top_a": 0.2, "top_k": 5}, {"top_k": 5}, id="unknown names dropped"),
        pytest.param({"top_k": "40", "seed": 1.5}, {"top_k": "40", "seed": 1.5}, id="values as given"),
        pytest.param({}, {}, id="empty"),
    ],
)
async def test_sampling_sent_by_their_openai_names(fake_upstream: FakeUpstream, sampling, sent) -> None:
    await collect(adapter(fake_upstream).stream(dataclasses.replace(PLAIN, sampling=sampling)))
    assert fake_upstream.completion_requests[-1].json == {**PLAIN_BODY, **sent}


@pytest.mark.parametrize(
    ("option", "sent"),
    [
        pytest.param({}, ALL_SAMPLING, id="default on a compatible server: all"),
        pytest.param({"sampler_extras": True}, ALL_SAMPLING, id="option true: all"),
        pytest.param({"sampler_extras": False}, STANDARD, id="option false: standard only"),
        pytest.param({"sampler_extras": "false"}, STANDARD, id="option 'false' (a string) is false"),
    ],
)
async def test_sampler_extras_option_on_the_fake_upstream(fake_upstream: FakeUpstream, option, sent) -> None:
    a = adapter(fake_upstream, options=option)
    await collect(a.stream(dataclasses.replace(PLAIN, sampling=ALL_SAMPLING)))
    assert fake_upstream.completion_requests[-1].json == {**PLAIN_BODY, **sent}


@pytest.mark.parametrize(
    ("base_url", "options", "extras"),
    [
        ("", {}, False),  # empty = OpenAI's default base URL
        ("https://api.openai.com/v1", {}, False),
        ("https://API.OpenAI.com/v1/chat/completions", {}, False),
        ("api.openai.com", {}, False),
        ("https://api.openai.com/v1", {"sampler_extras": True}, True),
        ("https://api.openai.com/v1", {"sampler_extras": "yes"}, True),
        ("https://openrouter.ai/api/v1", {}, True),
        ("https://api.deepseek.com", {}, True),
        ("http://127.0.0.1:8080", {}, True),
        ("https://api.openai.com.example.net/v1", {}, True),  # not OpenAI's host
        ("https://openrouter.ai/api/v1", {"sampler_extras": False}, False),
        ("http://127.0.0.1:8080", {"sampler_extras": 0}, False),
    ],
)
def test_sampler_extras_rule(base_url: str, options: dict, extras: bool) -> None:
    config = ConnectionConfig(kind="openai", base_url=base_url, options=options)
    assert sampler_extras(config, normalize_base_url(base_url, "openai")) is extras
    body = get_adapter(config).body(dataclasses.replace(PLAIN, sampling=ALL_SAMPLING), stream=False)
    assert {k: body[k] for k in ALL_SAMPLING if k in body} == (ALL_SAMPLING if extras else STANDARD)


async def test_extra_wins_over_sampling(fake_upstream: FakeUpstream) -> None:
    request = dataclasses.replace(REQ, sampling={"top_p": 0.5, "seed": 3})  # REQ.extra = {"top_p": 0.9}
    await collect(adapter(fake_upstream).stream(request))
    body = fake_upstream.completion_requests[-1].json
    assert (body["top_p"], body["seed"]) == (0.9, 3)


async def test_sampling_in_a_non_streamed_call(fake_upstream: FakeUpstream) -> None:
    await adapter(fake_upstream).complete(dataclasses.replace(PLAIN, sampling={"top_k": 20, "seed": 1}))
    body = fake_upstream.completion_requests[-1].json
    assert (body["stream"], body["top_k"], body["seed"]) == (False, 20, 1)
    assert "stream_options" not in body


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
        b'{"model":"gpt-test","messages":[{"role":"system","content":"You are a novelist."},{"role":"user",'
        b'"content":"\xe5\x86\x99\xe4\xb8\x80\xe6\xae\xb5\xe5\xbc\x80\xe5\xa4\xb4","name":"alice"}],"max_tokens":64,'
        b'"temperature":0.7,"stream":'
        + (b"true" if mode == "stream" else b"false")
        + b',"stop":["\\nUser:"],'
        + (b'"stream_options":{"include_usage":true},' if mode == "stream" else b"")
        + b'"top_p":0.9}'
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
