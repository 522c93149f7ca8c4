"""The fake upstream itself: routes, scripting, disconnect bookkeeping, standalone mode."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from tests.fakes.upstream import FakeUpstream, Reply

pytest_plugins = ("tests.fakes.fixtures",)

ROOT = Path(__file__).resolve().parents[2]


async def test_model_lists_per_protocol(fake_upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=fake_upstream.base_url) as c:
        openai = (await c.get("/v1/models")).json()
        anthropic = (await c.get("/v1/models", headers={"anthropic-version": "2023-06-01"})).json()
        gemini = (await c.get("/v1beta/models")).json()
        missing = await c.post("/nope", json={})
    assert [m["id"] for m in openai["data"]] == ["fake-model", "fake-model-2"]
    assert anthropic["has_more"] is False and anthropic["data"][0]["type"] == "model"
    assert gemini["models"][0]["name"] == "models/fake-model"
    assert missing.status_code == 404


async def test_non_stream_shapes(fake_upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=fake_upstream.base_url) as c:
        chat = (await c.post("/v1/chat/completions", json={"model": "m", "messages": []})).json()
        text = (await c.post("/v1/completions", json={"model": "m", "prompt": "x"})).json()
    assert chat["choices"][0]["message"] == {"role": "assistant", "content": "Hello, world!"}
    assert chat["usage"] == {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}
    assert text["choices"][0]["text"] == "Hello, world!"


async def test_openai_stream_usage_only_when_asked(fake_upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=fake_upstream.base_url) as c:
        plain = (await c.post("/v1/chat/completions", json={"model": "m", "stream": True})).text
        asked = (
            await c.post(
                "/v1/chat/completions",
                json={"model": "m", "stream": True, "stream_options": {"include_usage": True}},
            )
        ).text
    assert '"usage"' not in plain
    assert '"choices":[],"usage":{"prompt_tokens":10' in asked
    assert plain.startswith('data: {"id":"chatcmpl-fake"')
    assert '"delta":{"role":"assistant","content":null}' in plain
    assert plain.endswith("data: [DONE]\n\n")


async def test_script_queue_then_default_and_header_override(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["one"]), Reply.error(500))
    fake_upstream.default = Reply(chunks=["dflt"])
    async with httpx.AsyncClient(base_url=fake_upstream.base_url) as c:
        bodies = [(await c.post("/v1/completions", json={})) for _ in range(3)]
        custom = await c.post("/v1/completions", json={}, headers={"x-fake-reply": json.dumps({"chunks": ["hdr"]})})
    assert [b.status_code for b in bodies] == [200, 500, 200]
    assert bodies[0].json()["choices"][0]["text"] == "one"
    assert bodies[2].json()["choices"][0]["text"] == "dflt"
    assert custom.json()["choices"][0]["text"] == "hdr"
    assert [r.path for r in fake_upstream.completion_requests] == ["/v1/completions"] * 4


async def test_disconnect_is_recorded_with_progress(fake_upstream: FakeUpstream) -> None:
    fake_upstream.script(Reply(chunks=["x"] * 50, chunk_delay=0.02))
    async with (
        httpx.AsyncClient(base_url=fake_upstream.base_url) as c,
        c.stream("POST", "/v1/chat/completions", json={"stream": True}) as r,
    ):
        async for chunk in r.aiter_bytes():
            if b'"content":"x"' in chunk:
                break
    (d,) = await fake_upstream.wait_for_disconnects(1)
    assert d.path == "/v1/chat/completions"
    assert 1 <= d.events_sent < 50


async def test_completed_responses_are_not_disconnects(fake_upstream: FakeUpstream) -> None:
    async with httpx.AsyncClient(base_url=fake_upstream.base_url) as c:
        await c.post("/v1/chat/completions", json={"stream": True})
    assert await fake_upstream.wait_for_disconnects(1, timeout=0.2) == []


def test_standalone_cli() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", "--port", "0", "--chunks", "2", "--chunk-text", "字"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        base = line.rsplit(" ", 1)[-1].strip()
        assert base.startswith("http://127.0.0.1:")
        r = httpx.post(f"{base}/v1/chat/completions", json={"model": "m"}, timeout=5)
        assert r.json()["choices"][0]["message"]["content"] == "字字"
    finally:
        proc.terminate()
        proc.wait(5)


def test_context_manager_start_stop() -> None:
    with FakeUpstream() as fake:
        assert httpx.get(f"{fake.base_url}/v1/models", timeout=5).status_code == 200
