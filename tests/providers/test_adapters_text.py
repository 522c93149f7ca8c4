"""Text Completions adapter (instruct templates) against the real fake upstream."""

from __future__ import annotations

import asyncio
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
