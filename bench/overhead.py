"""Overhead of a writing call through the service vs calling the fake upstream directly.

    .venv/bin/python bench/overhead.py              # 2,000 requests per case (several minutes)
    .venv/bin/python bench/overhead.py --quick      # 300 requests per case
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/overhead.py          # production-like backends

Method (as in shared/reference/peer-bench.md): a zero-latency fake upstream (its own process), the
service under uvicorn with one worker (its own process), and this load generator share the machine.
Direct and proxied requests are interleaved in rounds (20 with one client, 4 otherwise) so both see the
same machine state. The service process's CPU time is read from /proc before and after each case: CPU
per request is the steadiest figure. Each load worker has its own httpx client (a shared pool costs the
client ~20 ms CPU per request at 64 concurrent calls; see the reference). Prints a table and writes
bench/results/overhead.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TICKS = os.sysconf("SC_CLK_TCK")

HISTORY = [
    {"role": "user", "content": "我想写一个科幻故事"},
    {"role": "assistant", "content": "好的，我可以帮你！你有什么具体想法吗？"},
]


def service_env(tmp: str | Path, log_level: str = "INFO", **extra: str) -> dict[str, str]:
    """The service's environment for a production-like start (DEBUG off, which refuses the public
    development keys, so real secrets; rate limits off), the database `DATABASE_URL` or a SQLite file
    in `tmp`."""
    env = {
        **os.environ,
        "DEBUG": "false",
        "LOG_LEVEL": log_level,
        "RATE_LIMIT_USER": "0",
        "RATE_LIMIT_GENERATION": "0",
        "DJANGO_SETTINGS_MODULE": "writing_service.settings",
        "SECRET_KEY": os.environ.get("SECRET_KEY") or secrets.token_urlsafe(64),
        "FIELD_ENCRYPTION_KEY": os.environ.get("FIELD_ENCRYPTION_KEY") or Fernet.generate_key().decode(),
        **extra,
    }
    env.setdefault("DATABASE_URL", f"sqlite:///{tmp}/bench.sqlite3")
    return env


def start_fake(chunks: int) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [PY, "-m", "tests.fakes.upstream", "--port", "0", "--uvloop", "--chunks", str(chunks)],
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


SETUP = r"""
import json, os
from decimal import Decimal
from apps.accounts.services import user_create
from bench.setup_support import fresh_token
from apps.billing.services import wallet_grant
from apps.prompts.models import Prompt, PromptContent
from apps.providers.models import AIModel, Connection
fake = os.environ["BENCH_FAKE_URL"]
from django.contrib.auth import get_user_model
user = get_user_model().objects.filter(username="bench").first() or user_create(username="bench", password="x")
wallet_grant(user=user, amount=10**12)
conn, _ = Connection.objects.update_or_create(name="bench-fake", defaults=dict(kind="openai", base_url=fake,
    max_concurrency=0, read_timeout=60))
conn.set_api_key("sk-bench"); conn.save()
slow, _ = Connection.objects.update_or_create(name="bench-slow", defaults=dict(kind="openai", base_url=fake,
    max_concurrency=0, read_timeout=60,
    extra_headers={"x-fake-reply": json.dumps({"chunks": ["字ab"] * 50, "chunk_delay": 0.6})}))
for mid, c in (("bench-model", conn), ("bench-slow", slow)):
    AIModel.objects.update_or_create(model_id=mid, defaults=dict(connection=c, upstream_model="fake-model",
        context_tokens=32768, max_output_tokens=4096, input_ratio=Decimal(1), output_ratio=Decimal(1)))
def bench_prompt(author):
    prompt = Prompt.objects.create(author=author, title="bench")
    PromptContent.objects.create(prompt=prompt, order=1, type="text",
                                 content="你是一名专业的小说作家。主角：{{主角名字}}。")
    PromptContent.objects.create(prompt=prompt, order=2, type="text", content="故事背景：{{故事背景}}，时间 {{date}}。")
    return prompt.pk
others = []
for i in range(1, 16):  # the "16 users" cases: one user per client, each with its own wallet
    name = f"bench{i}"
    other = get_user_model().objects.filter(username=name).first() or user_create(username=name, password="x")
    wallet_grant(user=other, amount=10**12)
    others.append({"token": fresh_token(other), "prompt": bench_prompt(other)})
main = {"token": fresh_token(user), "prompt": bench_prompt(user)}
print(json.dumps({**main, "users": [main, *others]}))
"""


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def children(pid: int) -> list[int]:
    """Direct children of `pid` (uvicorn's worker processes with `--workers N`)."""
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        kids += [int(k) for k in text]
    return kids


def tree_cpu_seconds(pid: int) -> float:
    """CPU of the service: the uvicorn process and its workers."""
    return cpu_seconds(pid) + sum(cpu_seconds(k) for k in children(pid))


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_rss_mib(pid: int) -> float:
    return rss_mib(pid) + sum(rss_mib(k) for k in children(pid))


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_workers(n_clients: int, total: int, call) -> tuple[list[float], float]:  # type: ignore[no-untyped-def]
    """`total` calls spread over `n_clients` workers, each with its own client (`call(client, worker)`).
    Returns latencies, wall."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker(index: int) -> None:
        async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=4)) as client:
            for _ in counter:
                latencies.append(await call(client, index))

    started = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(n_clients)))
    return latencies, time.perf_counter() - started


class Bench:
    def __init__(
        self, fake: str, service: str, token: str, prompt: int, service_pid: int, users: list[dict] | None = None
    ) -> None:
        self.fake = fake
        self.service = service
        self.auth = {"Authorization": f"Bearer {token}"}
        self.prompt = prompt
        self.pid = service_pid
        # (headers, body) per user for the "16 users" cases
        self.users = [({"Authorization": f"Bearer {u['token']}"}, {"promptId": u["prompt"]}) for u in users or []]
        self.body = {
            "promptId": prompt,
            "parameters": {"主角名字": "李明", "故事背景": "现代都市"},
            "userInput": "请帮我写一个故事开头",
            "modelId": "bench-model",
            "maxTokens": 256,
            "history": HISTORY,
        }
        self.direct_body = {
            "model": "fake-model",
            "max_tokens": 256,
            "temperature": 0.7,
            "messages": [
                {"role": "system", "content": "你是一名专业的小说作家。主角：李明。"},
                {"role": "system", "content": "故事背景：现代都市，时间 2026年11月22日。"},
                *HISTORY,
                {"role": "user", "content": "请帮我写一个故事开头"},
            ],
        }

    async def direct(self, client: httpx.AsyncClient, _worker: int = 0) -> float:
        t = time.perf_counter()
        r = await client.post(
            f"{self.fake}/v1/chat/completions", json=self.direct_body, headers={"Authorization": "Bearer sk-bench"}
        )
        r.raise_for_status()
        return time.perf_counter() - t

    def _as(self, worker: int | None) -> tuple[dict, dict]:
        """Headers and body: the one bench user's, or (`worker` given) that worker's own user's."""
        if worker is None:
            return self.auth, self.body
        headers, body = self.users[worker % len(self.users)]
        return headers, {**self.body, **body}

    async def proxied(self, client: httpx.AsyncClient, _worker: int = 0, *, user: int | None = None) -> float:
        headers, body = self._as(user)
        t = time.perf_counter()
        r = await client.post(f"{self.service}/api/v1/generation/writing", json=body, headers=headers)
        if r.status_code != 200:
            raise RuntimeError(r.text)
        return time.perf_counter() - t

    async def direct_stream(self, client: httpx.AsyncClient, _worker: int = 0) -> float:
        t = time.perf_counter()
        first = None
        body = {**self.direct_body, "stream": True, "stream_options": {"include_usage": True}}
        async with client.stream("POST", f"{self.fake}/v1/chat/completions", json=body) as r:
            async for line in r.aiter_lines():
                if first is None and line.startswith("data: {") and '"content":"' in line:
                    first = time.perf_counter() - t
        return first if first is not None else time.perf_counter() - t

    async def proxied_stream(self, client: httpx.AsyncClient, _worker: int = 0, *, user: int | None = None) -> float:
        headers, body = self._as(user)
        t = time.perf_counter()
        first = None
        async with client.stream(
            "POST", f"{self.service}/api/v1/generation/writing/stream", json=body, headers=headers
        ) as r:
            async for line in r.aiter_lines():
                if first is None and line.startswith('data: {"content":"') and line != 'data: {"content":""':
                    first = time.perf_counter() - t
        return first if first is not None else time.perf_counter() - t

    async def case(self, name: str, clients: int, total: int, direct, proxied, rounds: int = 0) -> dict:  # type: ignore[no-untyped-def]
        # One client: 20 short rounds, so that a slow spell of the (shared, virtual) machine hits direct
        # and proxied calls alike; more clients: 4 rounds, long enough to measure a steady rate.
        rounds = rounds or (20 if clients == 1 else 4)
        d_lat: list[float] = []
        p_lat: list[float] = []
        p_wall = 0.0
        cpu = 0.0
        per_round = max(1, total // rounds)
        for _ in range(rounds):
            lat, _wall = await run_workers(clients, per_round, direct)
            d_lat += lat
            before = tree_cpu_seconds(self.pid)
            lat, wall = await run_workers(clients, per_round, proxied)
            cpu += tree_cpu_seconds(self.pid) - before
            p_lat += lat
            p_wall += wall
        n = len(p_lat)
        row = {
            "case": name,
            "clients": clients,
            "requests": n,
            "direct_p50_ms": pct(d_lat, 0.5) * 1000,
            "service_p50_ms": pct(p_lat, 0.5) * 1000,
            "overhead_p50_ms": (pct(p_lat, 0.5) - pct(d_lat, 0.5)) * 1000,
            "overhead_p99_ms": (pct(p_lat, 0.99) - pct(d_lat, 0.99)) * 1000,
            "service_rps": n / p_wall,
            "service_cpu_ms_per_request": cpu / n * 1000,
        }
        print(
            f"{name:<34} {clients:>3}  direct p50 {row['direct_p50_ms']:7.2f} ms  service p50 "
            f"{row['service_p50_ms']:7.2f} ms  overhead p50/p99 {row['overhead_p50_ms']:6.2f}/"
            f"{row['overhead_p99_ms']:6.2f} ms  {row['service_rps']:7.1f} req/s  "
            f"CPU {row['service_cpu_ms_per_request']:5.2f} ms/req",
            flush=True,
        )
        return row

    def _openai_body(self, stream: bool) -> dict:
        # the messages writing mode assembles for self.body, sent as an OpenAI client would
        return {
            "model": "bench-model",
            "messages": self.direct_body["messages"],
            "max_tokens": 256,
            "temperature": 0.7,
            "stream": stream,
        }

    async def proxied_openai(self, client: httpx.AsyncClient, _worker: int = 0) -> float:
        t = time.perf_counter()
        r = await client.post(f"{self.service}/v1/chat/completions", json=self._openai_body(False), headers=self.auth)
        if r.status_code != 200:
            raise RuntimeError(r.text)
        return time.perf_counter() - t

    async def proxied_openai_stream(self, client: httpx.AsyncClient, _worker: int = 0) -> float:
        t = time.perf_counter()
        first = None
        body = self._openai_body(True)
        async with client.stream("POST", f"{self.service}/v1/chat/completions", json=body, headers=self.auth) as r:
            async for line in r.aiter_lines():
                if (
                    first is None
                    and line.startswith("data: {")
                    and '"content":"' in line
                    and '"content":""' not in line
                ):
                    first = time.perf_counter() - t
        return first if first is not None else time.perf_counter() - t

    async def proxied_users(self, client: httpx.AsyncClient, worker: int) -> float:
        return await self.proxied(client, worker, user=worker)

    async def proxied_stream_users(self, client: httpx.AsyncClient, worker: int) -> float:
        return await self.proxied_stream(client, worker, user=worker)

    async def many_streams(self, count: int) -> dict:
        idle = tree_rss_mib(self.pid)
        body = {**self.body, "modelId": "bench-slow"}
        peak = idle
        opened = 0
        done = 0
        errors = 0
        most_open = [0]

        async def one(client: httpx.AsyncClient, delay: float) -> None:
            await asyncio.sleep(delay)
            nonlocal opened, done, errors
            try:
                async with client.stream(
                    "POST", f"{self.service}/api/v1/generation/writing/stream", json=body, headers=self.auth
                ) as r:
                    if r.status_code != 200:
                        errors += 1
                        return
                    opened += 1
                    most_open[0] = max(most_open[0], opened - done)
                    async for _ in r.aiter_raw():
                        pass
                    done += 1
            except httpx.HTTPError:
                errors += 1

        limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
        clients = [httpx.AsyncClient(timeout=300, limits=limits) for _ in range(max(1, count // 100))]
        started = time.perf_counter()
        # Streams are opened over `ramp` seconds (each lasts ~30 s), so that they are all held open at once
        # without measuring a 1,000-request thundering herd on one process.
        ramp = count / 60
        tasks = [asyncio.create_task(one(clients[i % len(clients)], i * ramp / count)) for i in range(count)]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0.5)
            peak = max(peak, tree_rss_mib(self.pid))
        for c in clients:
            await c.aclose()
        row = {
            "case": "concurrent streams",
            "streams": count,
            "completed": done,
            "errors": errors,
            "most_open_at_once": most_open[0],
            "seconds": time.perf_counter() - started,
            "rss_idle_mib": idle,
            "rss_peak_mib": peak,
            "kib_per_stream": (peak - idle) * 1024 / max(1, most_open[0]),
        }
        print(
            f"{count} streams ({most_open[0]} open at once): {done} completed, {errors} errors in "
            f"{row['seconds']:.1f} s; "
            f"RSS {idle:.0f} → {peak:.0f} MiB ({row['kib_per_stream']:.0f} KiB per stream)",
            flush=True,
        )
        return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--streams-only", action="store_true", help="only the concurrent-streams case")
    parser.add_argument("--contention", action="store_true", help="only the 16-client cases: one user against 16 users")
    parser.add_argument("--openai", action="store_true", help="only the /v1 (OpenAI-compatible) cases")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    args = parser.parse_args()
    total = 300 if args.quick else args.requests
    streams = 200 if args.quick else args.streams

    fake_proc, fake = start_fake(chunks=4)
    tmp = tempfile.mkdtemp(prefix="bench-")
    env = service_env(tmp, "WARNING")
    service_proc = None
    try:
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        out = subprocess.run(
            [PY, "manage.py", "shell", "-c", SETUP],
            cwd=ROOT,
            env={**env, "BENCH_FAKE_URL": fake},
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        setup = json.loads(out.strip().splitlines()[-1])
        service_proc = subprocess.Popen(
            [
                str(Path(PY).parent / "uvicorn"),
                "writing_service.asgi:application",
                "--port",
                str(args.port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
                "--log-level",
                "warning",
                "--lifespan",
                "off",
                "--backlog",
                "4096",
                *(["--workers", str(args.workers)] if args.workers > 1 else []),
            ],
            cwd=ROOT,
            env=env,
        )
        service = f"http://127.0.0.1:{args.port}"
        for _ in range(100):
            try:
                if httpx.get(f"{service}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        bench = Bench(fake, service, setup["token"], setup["prompt"], service_proc.pid, setup["users"])
        print(
            f"database: {env['DATABASE_URL'].split('@')[-1]}  redis: {env.get('REDIS_URL') or '-'}  "
            f"workers: {args.workers}"
        )

        async def run_all() -> list[dict]:
            rows = []
            if args.streams_only:
                return [await bench.many_streams(streams)]
            if args.openai:
                await bench.case("warm-up", 4, 100, bench.direct, bench.proxied_openai, rounds=1)
                return [
                    await bench.case("non-stream", 1, total, bench.direct, bench.proxied),
                    await bench.case("/v1 non-stream", 1, total, bench.direct, bench.proxied_openai),
                    await bench.case(
                        "/v1 stream (first chunk)", 1, total, bench.direct_stream, bench.proxied_openai_stream
                    ),
                ]
            if args.contention:
                await bench.case("warm-up", 4, 100, bench.direct, bench.proxied, rounds=1)
                return [
                    await bench.case("non-stream", 16, total, bench.direct, bench.proxied),
                    await bench.case("non-stream, 16 users", 16, total, bench.direct, bench.proxied_users),
                    await bench.case(
                        "stream (time to first chunk)", 16, total, bench.direct_stream, bench.proxied_stream
                    ),
                    await bench.case(
                        "stream (first chunk), 16 users", 16, total, bench.direct_stream, bench.proxied_stream_users
                    ),
                ]
            await bench.case("warm-up", 4, 100, bench.direct, bench.proxied, rounds=1)
            for clients in (1, 16, 64):
                rows.append(await bench.case("non-stream", clients, total, bench.direct, bench.proxied))
            # the same 16 clients, each its own user (no wallet row shared): one user should not be slower
            rows.append(await bench.case("non-stream, 16 users", 16, total, bench.direct, bench.proxied_users))
            for clients in (1, 16):
                rows.append(
                    await bench.case(
                        "stream (time to first chunk)", clients, total, bench.direct_stream, bench.proxied_stream
                    )
                )
            rows.append(
                await bench.case(
                    "stream (first chunk), 16 users", 16, total, bench.direct_stream, bench.proxied_stream_users
                )
            )
            # the OpenAI-compatible API (/v1/chat/completions), same model and messages
            rows.append(await bench.case("/v1 non-stream", 1, total, bench.direct, bench.proxied_openai))
            rows.append(
                await bench.case("/v1 stream (first chunk)", 1, total, bench.direct_stream, bench.proxied_openai_stream)
            )
            rows.append(await bench.many_streams(streams))
            return rows

        rows = asyncio.run(run_all())
        results = ROOT / "bench" / "results"
        results.mkdir(exist_ok=True)
        (results / f"overhead{'' if args.workers == 1 else f'-{args.workers}w'}.json").write_bytes(
            orjson.dumps(
                {
                    "when": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "database": env["DATABASE_URL"].split("://")[0],
                    "redis": bool(env.get("REDIS_URL")),
                    "workers": args.workers,
                    "rows": rows,
                },
                option=orjson.OPT_INDENT_2,
            )
        )
    finally:
        if service_proc:
            service_proc.terminate()
            service_proc.wait(10)
        fake_proc.terminate()
        fake_proc.wait(10)


if __name__ == "__main__":
    main()
