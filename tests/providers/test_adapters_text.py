"""Text Completions adapter (instruct templates) against the real fake upstream."""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import aclosing

import pytest

from apps.providers.adapters import (
    ChatRequest,
    ConnectionConfig,
    Delta,
    UpstreamBadRequest,
    UpstreamConnectError,
    UpstreamProtocolError,
    UpstreamRateLimited,
    UpstreamServerError,
    UpstreamTimeout,
    Usage,
    get_adapter,
)
from apps.providers.adapters.openai_text import merge_stops
from apps.providers.types import ChatMessage
from tests.fakes.upstream import FakeUpstream, Reply, collect

pytest_plugins = ("tests.fakes.fixtures",)
pytestmark = pytest.mark.usefixtures("provider_clients")

KEY = "sk-text-SECRET-0123456789"
REQ = ChatRequest(
    messages=(ChatMessage("system", "You write."), ChatMessage("user", "Hello")),
    model="base-model",
    max_tokens=32,
    temperature=0.5,
    stop=("\nUser:", "END"),
)


def adapter(fake: FakeUpstream, template: str | None = "transcript", **kw):
    cfg = {
        "kind": "openai_text",
        "base_url": fake.base_url,
        "api_key": KEY,
        "read_timeout": 5.0,
        "instruct_template": template,
        **kw,
    }
    return get_adapter(ConnectionConfig(**cfg))


async def test_stream_renders_prompt_and_merges_stops(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=[" Hi", " there"], usage=(9, 2)))
    *_, deltas = await collect(adapter(fake_upstream).stream(REQ))
    assert deltas == [Delta(" Hi"), Delta(" there"), Delta(finish_reason="stop", usage=Usage(9, 2, 11))]
    req = fake_upstream.requests[-1]
    assert req.path == "/v1/completions"
    assert req.headers["authorization"] == f"Bearer {KEY}"
    assert req.json == {
        "model": "base-model",
        "prompt": "You write.\n\nUser: Hello\nAssistant:",
        "max_tokens": 32,
        "temperature": 0.5,
        "stream": True,
        "stop": ["\nUser:", "END"],  # the template's "\nUser:" first, not repeated
        "stream_options": {"include_usage": True},
    }


async def test_chatml_template_by_name(fake_upstream: FakeUpstream) -> None:
    await collect(adapter(fake_upstream, template="chatml").stream(REQ))
    body = fake_upstream.requests[-1].json
    assert body["prompt"] == (
        "<|im_start|>system\nYou write.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n"
    )
    assert body["stop"] == ["<|im_end|>", "<|im_start|>", "\nUser:", "END"]


async def test_default_template_is_chatml(fake_upstream: FakeUpstream) -> None:
    await collect(adapter(fake_upstream, template=None).stream(REQ))
    assert fake_upstream.requests[-1].json["prompt"].startswith("<|im_start|>system")


async def test_custom_template(fake_upstream: FakeUpstream) -> None:
    source = '{# stop: ["</turn>"] #}{% for m in messages %}[{{ m.role }}] {{ m.text }}</turn>{% endfor %}[assistant] '
    a = adapter(fake_upstream, template="custom", custom_instruct_template=source)
    await collect(a.stream(REQ))
    body = fake_upstream.requests[-1].json
    assert body["prompt"] == "[system] You write.</turn>[user] Hello</turn>[assistant] "
    assert body["stop"] == ["</turn>", "\nUser:", "END"]


async def test_broken_template_is_bad_request_without_any_upstream_call(fake_upstream: FakeUpstream) -> None:
    a = adapter(fake_upstream, template="no-such-template")
    with pytest.raises(UpstreamBadRequest) as info:
        await collect(a.stream(REQ))
    assert info.value.retryable is False
    assert fake_upstream.requests == []


@pytest.mark.parametrize(("raw", "expected"), [("stop", "stop"), ("length", "length"), ("eos", "stop")])
async def test_finish_mapping(fake_upstream: FakeUpstream, raw: str, expected: str) -> None:
    fake_upstream.script(Reply(raw_finish=raw))
    *_, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert final.finish_reason == expected


async def test_usage_missing(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(usage=None))
    *_, final, _ = await collect(adapter(fake_upstream).stream(REQ))
    assert final == Delta(finish_reason="stop")


async def test_split_writes_utf8(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["从前", "有座山"], split=4, line_ending="\r\n"))
    content, *_ = await collect(adapter(fake_upstream).stream(REQ))
    assert content == "从前有座山"


@pytest.mark.parametrize(
    ("reply", "cls"),
    [
        (Reply.error(429, retry_after="1"), UpstreamRateLimited),
        (Reply.error(500), UpstreamServerError),
        (Reply.error(400, "the request exceeds the available context size"), UpstreamBadRequest),
        (Reply(garbage=b"data: nope\n\n"), UpstreamProtocolError),
        (Reply(chunks=["a", "b", "c"], reset_after=1), UpstreamConnectError),
        (Reply(stream_error={"message": "slot crashed"}), UpstreamServerError),
    ],
)
async def test_errors(fake_upstream: FakeUpstream, reply: Reply, cls: type) -> None:
    fake_upstream.script(reply)
    with pytest.raises(cls) as info:
        await collect(adapter(fake_upstream).stream(REQ))
    assert KEY not in str(info.value)


async def test_hang_times_out(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(hang=True))
    with pytest.raises(UpstreamTimeout):
        await collect(adapter(fake_upstream, read_timeout=0.2).stream(REQ))


async def test_aclose_disconnects_upstream(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["x"] * 100, chunk_delay=0.05))
    async with aclosing(adapter(fake_upstream).stream(REQ)) as stream:
        async for _ in stream:
            break
    assert len(await fake_upstream.wait_for_disconnects(1, timeout=1.0)) == 1


async def test_complete(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["Once", " upon"], raw_finish="length", usage=(3, 2)))
    result = await adapter(fake_upstream).complete(REQ)
    assert (result.content, result.reasoning, result.finish_reason, result.usage) == (
        "Once upon",
        "",
        "length",
        Usage(3, 2, 5),
    )
    assert fake_upstream.requests[-1].json["stream"] is False


async def test_list_models(fake_upstream: FakeUpstream) -> None:
    assert await adapter(fake_upstream).list_models() == ["fake-model", "fake-model-2"]


async def test_concurrent(fake_upstream: FakeUpstream) -> None:
    a = adapter(fake_upstream)
    results = await asyncio.gather(*(collect(a.stream(REQ)) for _ in range(20)))
    assert {r[0] for r in results} == {"Hello, world!"}


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ((("a", "b"), ("b", "c")), ["a", "b", "c"]),
        (((), ()), []),
        ((("", "x"), ("x",)), ["x"]),
    ],
)
def test_merge_stops(groups, expected) -> None:
    assert merge_stops(*groups) == expected


# ---------------------------------------------------------------------------------------------
# Sampling parameters and the raw prompt

BODY = {  # what REQ sends (streamed, transcript template) without any sampling parameter
    "model": "base-model",
    "prompt": "You write.\n\nUser: Hello\nAssistant:",
    "max_tokens": 32,
    "temperature": 0.5,
    "stream": True,
    "stop": ["\nUser:", "END"],
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
    "reasoning_effort": "low",
    "include_reasoning": True,
}
# OpenAI's /completions has these four; reasoning_effort is a chat parameter there
STANDARD = {"top_p": 0.8, "presence_penalty": 0.5, "frequency_penalty": -0.25, "seed": 7}


async def send(a, request: ChatRequest, mode: str) -> None:
    if mode == "stream":
        await collect(a.stream(request))
    else:
        await a.complete(request)


@pytest.mark.parametrize(
    ("options", "sampling", "sent"),
    [
        pytest.param({}, ALL_SAMPLING, ALL_SAMPLING, id="compatible server: all nine, same names"),
        pytest.param({"sampler_extras": False}, ALL_SAMPLING, STANDARD, id="extras off: OpenAI's four"),
        pytest.param({"sampler_extras": True}, ALL_SAMPLING, ALL_SAMPLING, id="extras on: all"),
        pytest.param({}, {"seed": 0, "top_k": None, "mirostat": 2}, {"seed": 0}, id="None and unknown left out"),
        pytest.param({}, {"min_p": "0.1"}, {"min_p": "0.1"}, id="values as given"),
    ],
)
async def test_sampling_sent_by_their_openai_names(fake_upstream: FakeUpstream, options, sampling, sent) -> None:
    await collect(adapter(fake_upstream, options=options).stream(dataclasses.replace(REQ, sampling=sampling)))
    assert fake_upstream.completion_requests[-1].json == {**BODY, **sent}


@pytest.mark.parametrize(
    ("base_url", "options", "sent"),
    [
        ("https://api.openai.com/v1", {}, STANDARD),
        ("", {}, STANDARD),
        ("https://api.openai.com/v1", {"sampler_extras": True}, ALL_SAMPLING),
        ("http://127.0.0.1:8080", {}, ALL_SAMPLING),
        ("http://127.0.0.1:8080", {"sampler_extras": False}, STANDARD),
    ],
)
def test_sampler_extras_rule_is_the_chat_one(base_url: str, options: dict, sent: dict) -> None:
    config = ConnectionConfig(kind="openai_text", base_url=base_url, options=options, instruct_template="transcript")
    body = get_adapter(config).body(dataclasses.replace(REQ, sampling=ALL_SAMPLING), stream=False)
    assert {k: body[k] for k in ALL_SAMPLING if k in body} == sent


async def test_extra_wins_over_sampling(fake_upstream: FakeUpstream) -> None:
    request = dataclasses.replace(REQ, sampling={"top_k": 40, "seed": 3}, extra={"top_k": 1})
    await collect(adapter(fake_upstream).stream(request))
    body = fake_upstream.completion_requests[-1].json
    assert (body["top_k"], body["seed"]) == (1, 3)


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
        b'{"model":"base-model","prompt":"You write.\\n\\nUser: Hello\\nAssistant:","max_tokens":32,'
        b'"temperature":0.5,"stream":'
        + (b'true,"stop":["\\nUser:","END"],"stream_options":{"include_usage":true}}' if mode == "stream" else b"")
        + (b'false,"stop":["\\nUser:","END"]}' if mode == "complete" else b"")
    )
    await send(adapter(fake_upstream), request_, mode)
    assert fake_upstream.completion_requests[-1].body == expected


RAW = "<|im_start|>user\n  Tell me a story <|im_end|>\n<|im_start|>assistant\nOnce"


@pytest.mark.parametrize("mode", ["stream", "complete"])
async def test_raw_prompt_is_sent_verbatim_with_the_request_stops_only(fake_upstream: FakeUpstream, mode: str) -> None:
    # chatml would add <|im_end|> and <|im_start|> as stops, and render the messages: neither happens
    fake_upstream.script(Reply(chunks=[" upon", " a time"]))
    a = adapter(fake_upstream, template="chatml")
    request = dataclasses.replace(REQ, prompt=RAW)
    if mode == "stream":
        content, *_ = await collect(a.stream(request))
    else:
        content = (await a.complete(request)).content
    assert content == " upon a time"
    req = fake_upstream.completion_requests[-1]
    assert req.path == "/v1/completions"
    assert req.json == {
        "model": "base-model",
        "prompt": RAW,
        "max_tokens": 32,
        "temperature": 0.5,
        "stream": mode == "stream",
        "stop": ["\nUser:", "END"],
        **({"stream_options": {"include_usage": True}} if mode == "stream" else {}),
    }


@pytest.mark.parametrize(
    ("prompt", "stop", "sent_stop"),
    [
        pytest.param("", (), None, id="empty prompt, no stop"),
        pytest.param(" x \n", ("\n\n", "", "\n\n"), ["\n\n"], id="stops deduplicated, empty ones dropped"),
    ],
)
async def test_raw_prompt_edges(fake_upstream: FakeUpstream, prompt: str, stop: tuple, sent_stop) -> None:
    await collect(adapter(fake_upstream).stream(dataclasses.replace(REQ, prompt=prompt, stop=stop)))
    body = fake_upstream.completion_requests[-1].json
    assert body["prompt"] == prompt
    assert body.get("stop") == sent_stop


async def test_raw_prompt_needs_no_template(fake_upstream: FakeUpstream) -> None:
    # a template that cannot render is not used at all for a raw prompt
    a = adapter(fake_upstream, template="no-such-template")
    await collect(a.stream(dataclasses.replace(REQ, prompt="Hi")))
    assert fake_upstream.completion_requests[-1].json["prompt"] == "Hi"


async def test_raw_prompt_with_sampling_and_extra(fake_upstream: FakeUpstream) -> None:
    request = dataclasses.replace(REQ, prompt="Hi", sampling={"min_p": 0.1, "seed": 5}, extra={"seed": 6})
    await collect(adapter(fake_upstream).stream(request))
    body = fake_upstream.completion_requests[-1].json
    assert (body["prompt"], body["min_p"], body["seed"]) == ("Hi", 0.1, 6)
