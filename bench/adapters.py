"""Relay overhead of the LLM transport layer (SSE parser + adapters + pooled aiohttp) — prints figures.

    .venv/bin/python bench/adapters.py            # full run (~1 min)
    .venv/bin/python bench/adapters.py --quick    # smaller counts

The fake upstream runs in a separate process (``python -m tests.fakes.upstream --uvloop``) so that
its CPU is not counted; every figure below is CPU time (``time.process_time``) or wall time of
this process only. Zero upstream latency; scenarios are scripted with the ``x-fake-reply`` header.

1. parser + handler alone (pure CPU, per chunk) for OpenAI, Anthropic and Gemini events; then the
   request body each HTTP adapter builds (``body()``, pure CPU, per request), without and with
   sampling parameters;
2. relay per chunk end-to-end: one long stream whose events arrive one per TCP read (a tiny delay
   between events), adapter vs. a bare ``aiohttp`` and a bare ``httpx`` stream that only read the bytes;
3. per request: non-stream ``complete()`` and a short stream (time to first delta), vs bare aiohttp
   and bare httpx;
4. concurrency: 64 concurrent non-stream calls, and N concurrent streams (default 500) in one process
   through the adapter (one pooled session); then the same N streams read by bare aiohttp with one
   session vs 64 sessions — does aiohttp need the sharding httpx needed (the httpcore pool trap)?
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import aclosing
from functools import partial
from pathlib import Path

import aiohttp
import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apps.providers.adapters import ChatRequest, ConnectionConfig, get_adapter  # noqa: E402
from apps.providers.adapters import client as client_mod  # noqa: E402
from apps.providers.adapters.anthropic import _MessagesStream  # noqa: E402
from apps.providers.adapters.gemini import _GeminiStream  # noqa: E402
from apps.providers.adapters.openai import _ChatStream  # noqa: E402
from apps.providers.adapters.sse import SSEParser  # noqa: E402
from apps.providers.types import ChatMessage  # noqa: E402

REQ = ChatRequest(
    messages=(ChatMessage("system", "你是一位小说家。"), ChatMessage("user", "写一段雨夜的开头。")),
    model="fake-model",
    max_tokens=512,
    temperature=0.7,
)
# every sampling parameter set (each adapter sends the ones its wire format has)
SAMPLED = dataclasses.replace(
    REQ,
    sampling={
        "top_p": 0.9,
        "top_k": 40,
        "min_p": 0.05,
        "presence_penalty": 0.3,
        "frequency_penalty": 0.2,
        "repetition_penalty": 1.1,
        "seed": 42,
        "reasoning_effort": "low",
        "include_reasoning": True,
    },
)


def start_fake() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", "--port", "0", "--uvloop"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"fake upstream failed to start: {line!r}")
    return proc, line.rsplit(" ", 1)[-1].strip()


def cfg(base: str, kind: str = "openai", **reply: object) -> ConnectionConfig:
    return ConnectionConfig(
        kind=kind,
        base_url=base,
        api_key="sk-bench",
        extra_headers={"x-fake-reply": json.dumps(reply)} if reply else {},
        connect_timeout=10,
        read_timeout=60,
    )


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# 1 ------------------------------------------------------------------------------------------------


def bench_parser(n: int) -> None:
    print("\n## 1. SSE parser + stream handler alone (CPU per chunk, one event per read)")
    text = "夜色像一匹墨色"
    openai_ev = (
        b"data: "
        + orjson.dumps(
            {
                "id": "chatcmpl-123",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": "gpt-4-turbo",
                "system_fingerprint": "fp_1",
                "choices": [{"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
            }
        )
        + b"\n\n"
    )
    anthropic_ev = (
        b"event: content_block_delta\ndata: "
        + orjson.dumps({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}})
        + b"\n\n"
    )
    gemini_ev = (
        b"data: "
        + orjson.dumps(
            {
                "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
                "usageMetadata": {"promptTokenCount": 12, "totalTokenCount": 12},
                "modelVersion": "gemini-2.0-flash",
            }
        )
        + b"\n\n"
    )
    for name, event, handler_cls in (
        ("openai", openai_ev, _ChatStream),
        ("anthropic", anthropic_ev, _MessagesStream),
        ("gemini", gemini_ev, _GeminiStream),
    ):
        parser = SSEParser()
        handler = handler_cls("bench", ())
        feed, on_event = parser.feed, handler.on_event
        t0 = time.process_time()
        for _ in range(n):
            for ev in feed(event):
                on_event(ev)
        dt = time.process_time() - t0
        # the same events split mid-line, mid-character (two reads per event)
        parser = SSEParser()
        feed = parser.feed
        cut = len(event) // 2
        a, b = event[:cut], event[cut:]
        t0 = time.process_time()
        for _ in range(n):
            for ev in feed(a):
                on_event(ev)
            for ev in feed(b):
                on_event(ev)
        dt_split = time.process_time() - t0
        print(
            f"  {name:<9} {len(event):>4} B/event: {dt / n * 1e6:6.2f} µs/chunk"
            f"   (split in two reads: {dt_split / n * 1e6:6.2f} µs)"
        )


def bench_body(n: int) -> None:
    print("\n## 1b. Adapter and request body alone (CPU per get_adapter() — once a request —, per body())")
    for kind in ("openai", "openai_text", "anthropic", "gemini"):
        config = cfg("http://127.0.0.1:9", kind)
        adapter = get_adapter(config)
        body = adapter.body  # type: ignore[attr-defined]
        calls = (partial(get_adapter, config), partial(body, REQ, stream=True), partial(body, SAMPLED, stream=True))
        best = [float("inf")] * len(calls)
        for _ in range(5):  # interleaved rounds, the best of each (the least disturbed)
            for i, call in enumerate(calls):
                t0 = time.process_time()
                for _ in range(n // 5):
                    call()
                best[i] = min(best[i], (time.process_time() - t0) / (n // 5) * 1e6)
        print(
            f"  {kind:<11} get_adapter {best[0]:5.2f} µs   body(): no sampling {best[1]:6.2f} µs,"
            f" all sampling parameters set {best[2]:6.2f} µs"
        )


# 2 ------------------------------------------------------------------------------------------------


async def bench_relay_per_chunk(base: str, chunks: int, streams: int) -> None:
    print(f"\n## 2. Relay per chunk end-to-end ({streams} streams × {chunks} chunks, one event per read)")
    reply = {"chunks": ["夜色像一匹墨色"] * chunks, "chunk_delay": 0.0003}
    for kind in ("openai", "anthropic", "gemini"):
        config = cfg(base, kind, **reply)
        adapter = get_adapter(config)
        await _collect(adapter)  # warm up (connection, code paths)
        cpu = []
        for _ in range(streams):
            t0 = time.process_time()
            n = await _collect(adapter)
            cpu.append((time.process_time() - t0) / n)
        print(f"  {kind:<9} adapter: {statistics.median(cpu) * 1e6:6.1f} µs CPU/chunk (median of {streams})")
    # bare clients: read the bytes, nothing else
    headers = {"x-fake-reply": json.dumps(reply), "content-type": "application/json"}
    body = orjson.dumps({"model": "m", "messages": [], "stream": True})
    url = f"{base}/v1/chat/completions"
    async with aiohttp.ClientSession() as session:
        cpu = []
        for _ in range(streams + 1):
            t0 = time.process_time()
            async with session.post(url, data=body, headers=headers) as r:
                async for _chunk in r.content.iter_any():
                    pass
            cpu.append((time.process_time() - t0) / (chunks + 3))
        print(f"  bare aiohttp read: {statistics.median(cpu[1:]) * 1e6:6.1f} µs CPU/chunk (the floor: aiohttp + loop)")
    async with httpx.AsyncClient(timeout=60) as client:
        cpu = []
        for _ in range(streams + 1):
            t0 = time.process_time()
            async with client.stream("POST", url, content=body, headers=headers) as r:
                async for _chunk in r.aiter_bytes():
                    pass
            cpu.append((time.process_time() - t0) / (chunks + 3))
        print(f"  bare httpx read:   {statistics.median(cpu[1:]) * 1e6:6.1f} µs CPU/chunk (h11 + httpcore + loop)")


async def _collect(adapter) -> int:  # type: ignore[no-untyped-def]
    n = 0
    async with aclosing(adapter.stream(REQ)) as stream:
        async for _ in stream:
            n += 1
    return n


# 3 ------------------------------------------------------------------------------------------------


async def bench_per_request(base: str, n: int) -> None:
    print(f"\n## 3. Per request, sequential ({n} each, zero latency)")
    config = cfg(base, "openai", chunks=["你好，"] * 8)
    adapter = get_adapter(config)
    headers = {
        "content-type": "application/json",
        "authorization": "Bearer x",
        "x-fake-reply": config.extra_headers["x-fake-reply"],
    }
    url = f"{base}/v1/chat/completions"
    post_body = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "x"}]})
    stream_body = orjson.dumps({"model": "m", "messages": [], "stream": True})

    async def aiohttp_post() -> object:
        async with session.post(url, data=post_body, headers=headers) as r:
            return orjson.loads(await r.read())

    async def httpx_post() -> object:
        async with client.stream("POST", url, content=post_body, headers=headers) as r:
            return orjson.loads(await r.aread())

    async def adapter_stream(mark: list[float]) -> None:
        async with aclosing(adapter.stream(REQ)) as stream:
            async for _ in stream:
                if not mark:
                    mark.append(time.perf_counter())

    async def aiohttp_stream(mark: list[float]) -> None:
        async with session.post(url, data=stream_body, headers=headers) as r:
            async for _ in r.content.iter_any():
                if not mark:
                    mark.append(time.perf_counter())

    async def httpx_stream(mark: list[float]) -> None:
        async with client.stream("POST", url, content=stream_body, headers=headers) as r:
            async for _ in r.aiter_bytes():
                if not mark:
                    mark.append(time.perf_counter())

    async with aiohttp.ClientSession() as session, httpx.AsyncClient(timeout=60) as client:
        for label, call in (
            ("adapter.complete()", lambda: adapter.complete(REQ)),
            ("bare aiohttp POST", aiohttp_post),
            ("bare httpx POST", httpx_post),
        ):
            await call()
            lat, t_cpu = [], time.process_time()
            for _ in range(n):
                t0 = time.perf_counter()
                await call()
                lat.append(time.perf_counter() - t0)
            cpu = (time.process_time() - t_cpu) / n
            print(
                f"  non-stream {label:<18}: p50 {pct(lat, 0.5) * 1e3:5.2f} ms  p99 {pct(lat, 0.99) * 1e3:5.2f} ms"
                f"  CPU {cpu * 1e3:5.2f} ms/req"
            )
        # stream: time to first delta (first bytes for the bare clients), total
        for label, run in (
            ("adapter.stream()", adapter_stream),
            ("bare aiohttp stream", aiohttp_stream),
            ("bare httpx stream", httpx_stream),
        ):
            await run([])
            ttft, total, t_cpu = [], [], time.process_time()
            for _ in range(n):
                mark: list[float] = []
                t0 = time.perf_counter()
                await run(mark)
                ttft.append(mark[0] - t0)
                total.append(time.perf_counter() - t0)
            cpu = (time.process_time() - t_cpu) / n
            print(
                f"  stream {label:<22}: first delta p50 {pct(ttft, 0.5) * 1e3:5.2f} ms"
                f"  whole p50 {pct(total, 0.5) * 1e3:5.2f} ms  CPU {cpu * 1e3:5.2f} ms/req"
            )


# 4 ------------------------------------------------------------------------------------------------


async def bench_concurrency(base: str, concurrency: int, chunks: int, delay: float) -> None:
    await client_mod.aclose_clients()
    adapter = get_adapter(cfg(base, "openai", chunks=["字字"] * chunks, chunk_delay=delay))
    errors: list[BaseException] = []
    first_delays: list[float] = []

    async def one() -> int:
        t0 = time.perf_counter()
        n = 0
        try:
            async with aclosing(adapter.stream(REQ)) as stream:
                async for _ in stream:
                    if n == 0:
                        first_delays.append(time.perf_counter() - t0)
                    n += 1
        except Exception as exc:
            errors.append(exc)
        return n

    for round_ in ("cold", "warm"):  # warm: the pool already holds the connections
        first_delays.clear()
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        counts = await asyncio.gather(*(one() for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
        relayed = sum(counts)
        print(
            f"  adapter, {concurrency} streams × {chunks} chunks, {round_}: wall {wall:5.2f} s"
            f" (ideal {chunks * delay:4.2f})  CPU {cpu:5.2f} s = {cpu / max(relayed, 1) * 1e6:5.1f} µs/chunk"
            f"  first delta p50 {pct(first_delays, 0.5) * 1e3:6.1f} ms p99 {pct(first_delays, 0.99) * 1e3:6.1f} ms"
            f"  errors {len(errors)}"
        )
    if errors:
        print(f"    first error: {errors[0]!r}")
    await client_mod.aclose_clients()


async def bench_concurrency_bare(base: str, concurrency: int, chunks: int, delay: float, sessions: int) -> None:
    """The same streams read by bare aiohttp, spread over ``sessions`` sessions (1 = no sharding)."""
    reply = {"chunks": ["字字"] * chunks, "chunk_delay": delay}
    headers = {"x-fake-reply": json.dumps(reply), "content-type": "application/json"}
    body = orjson.dumps({"model": "m", "messages": [], "stream": True})
    url = f"{base}/v1/chat/completions"
    pool = [aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) for _ in range(sessions)]
    errors: list[BaseException] = []

    async def one(session: aiohttp.ClientSession) -> int:
        n = 0
        try:
            async with session.post(url, data=body, headers=headers) as r:
                async for _ in r.content.iter_any():
                    n += 1
        except Exception as exc:
            errors.append(exc)
        return n

    try:
        for round_ in ("cold", "warm"):
            t_wall, t_cpu = time.perf_counter(), time.process_time()
            counts = await asyncio.gather(*(one(pool[i % sessions]) for i in range(concurrency)))
            wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
            print(
                f"  bare aiohttp, {sessions:>2} session(s), {round_}: wall {wall:5.2f} s  CPU {cpu:5.2f} s"
                f" = {cpu / max(sum(counts), 1) * 1e6:5.1f} µs/read  errors {len(errors)}"
            )
    finally:
        for session in pool:
            await session.close()


async def bench_nonstream_concurrency(base: str, concurrency: int, total: int) -> None:
    await client_mod.aclose_clients()
    adapter = get_adapter(cfg(base, "openai"))
    sem = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with sem:
            await adapter.complete(REQ)

    await asyncio.gather(*(one() for _ in range(concurrency)))  # warm up the connections
    t_wall, t_cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(one() for _ in range(total)))
    wall, cpu = time.perf_counter() - t_wall, time.process_time() - t_cpu
    print(f"  non-stream, {concurrency} concurrent: {total / wall:7.0f} req/s  CPU {cpu / total * 1e3:5.2f} ms/req")
    await client_mod.aclose_clients()


async def main_async(args: argparse.Namespace, base: str) -> None:
    q = args.quick
    await bench_relay_per_chunk(base, chunks=300 if q else 1000, streams=3 if q else 5)
    await bench_per_request(base, n=100 if q else 500)
    print(f"\n## 4. Concurrency in one process (fake upstream in another; {os.cpu_count()} cores shared)")
    await bench_nonstream_concurrency(base, 64, 600 if q else 3000)
    await bench_concurrency(base, args.concurrency, chunks=20, delay=0.05)
    for sessions in (1, 64):
        await bench_concurrency_bare(base, args.concurrency, chunks=20, delay=0.05, sessions=sessions)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--concurrency", type=int, default=500)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    print(
        f"# bench/adapters.py — Python {sys.version.split()[0]}, aiohttp {aiohttp.__version__},"
        f" httpx {httpx.__version__}, loop {args.loop}"
    )
    print(f"# {os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f} (others' work skews wall times)")
    bench_parser(20_000 if args.quick else 200_000)
    bench_body(20_000 if args.quick else 200_000)
    proc, base = start_fake()
    try:
        if args.loop == "uvloop":
            import uvloop

            uvloop.run(main_async(args, base))
        else:
            asyncio.run(main_async(args, base))
    finally:
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    main()
