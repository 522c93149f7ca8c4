"""Resumable generations at scale: N concurrent jobs on ONE Celery worker process (issue 17).

    REDIS_URL=redis://127.0.0.1:6379/8 DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench_jobs \
        .venv/bin/python bench/jobs.py --jobs 200

Starts the fake upstream (each answer `--chunks` events `--chunk-delay` s apart), one uvicorn web process,
and one worker as `make worker` runs it (thread pool, one event loop for the jobs). Then creates the jobs
at once and follows every one of them over SSE, and prints: time from POST to the first delta event (p50,
p95), events delivered per second over the run, the wall time, and the worker's resident memory per job
(peak RSS during the run minus its RSS after a warm-up job, divided by the jobs). The Redis database given
is flushed; the PostgreSQL database is created if missing and migrated.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

SETUP = r"""
import json, os
from decimal import Decimal
from apps.accounts.services import user_create
from bench.setup_support import fresh_token
from apps.billing.services import wallet_grant
from apps.prompts.models import Prompt, PromptContent
from apps.providers.models import AIModel, Connection
user = user_create(username="bench-jobs", password="x")
wallet_grant(user=user, amount=10**12)
prompt = Prompt.objects.create(author=user, title="p")
PromptContent.objects.create(prompt=prompt, order=1, type="text", content="你是作家。")
connection = Connection.objects.create(
    name="fake", kind="openai", base_url=os.environ["BENCH_UPSTREAM"], max_concurrency=0, read_timeout=60
)
connection.set_api_key("sk-bench-0123456789")
connection.save()
AIModel.objects.create(model_id="bench", connection=connection, upstream_model="up", context_tokens=8192,
                       max_output_tokens=4096, input_ratio=Decimal(1), output_ratio=Decimal(1))
print(json.dumps({"token": fresh_token(user), "prompt": prompt.pk}))
"""


def rss_mib(pid: int, field: str = "VmRSS:") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until(check: object, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"{what} did not come up")


async def one_job(client: httpx.AsyncClient, body: dict, marks: dict) -> None:
    started = time.perf_counter()
    created = await client.post("/api/v1/generation/jobs", json=body)
    created.raise_for_status()
    accepted = time.perf_counter()
    marks["accepted"].append(accepted - started)
    events, last_id, url = 0, "", created.json()["eventsUrl"]
    while True:  # a dropped connection is resumed where it stopped (Last-Event-ID), as EventSource does
        headers = {"Last-Event-ID": last_id} if last_id else {}
        try:
            async with client.stream("GET", url, headers=headers, timeout=300) as response:
                async for line in response.aiter_lines():
                    if line.startswith("id: "):
                        last_id = line[4:]
                    if not line.startswith("data: "):
                        continue
                    if line == "data: [DONE]":
                        break
                    events += 1
                    if events == 1:
                        marks["first"].append(time.perf_counter() - started)
                        marks["first_after_202"].append(time.perf_counter() - accepted)
            break
        except httpx.TransportError:
            marks["resumed"] += 1
    marks["events"] += events
    marks["ended"].append(time.perf_counter() - started)


async def run_jobs(url: str, token: str, body: dict, count: int) -> dict:
    marks: dict = {"first": [], "first_after_202": [], "accepted": [], "ended": [], "events": 0, "resumed": 0}
    limits = httpx.Limits(max_connections=count * 2 + 10, max_keepalive_connections=count * 2 + 10)
    async with httpx.AsyncClient(
        base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120, limits=limits
    ) as client:
        started = time.perf_counter()
        await asyncio.gather(*(one_job(client, body, marks) for _ in range(count)))
        marks["wall"] = time.perf_counter() - started
    return marks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--chunks", type=int, default=100)
    parser.add_argument("--chunk-delay", type=float, default=0.05)
    parser.add_argument("--port", type=int, default=8767)
    parser.add_argument("--upstream-port", type=int, default=8768)
    args = parser.parse_args()
    if not os.environ.get("REDIS_URL"):
        raise SystemExit("set REDIS_URL (its database is flushed), e.g. redis://127.0.0.1:6379/8")
    tmp = tempfile.mkdtemp(prefix="bench-jobs-")
    env = {
        **os.environ,
        "DEBUG": "false",
        "LOG_LEVEL": "WARNING",
        "DJANGO_SETTINGS_MODULE": "writing_service.settings",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "RATE_LIMIT_USER": "0",
        "RATE_LIMIT_GENERATION": "0",
        "DEFAULT_MODEL_ID": "bench",
    }
    env.setdefault("DATABASE_URL", f"sqlite:///{tmp}/jobs.sqlite3")
    import redis

    redis.Redis.from_url(env["REDIS_URL"]).flushdb()
    if env["DATABASE_URL"].startswith("postgres"):
        name = env["DATABASE_URL"].rsplit("/", 1)[1]
        admin = env["DATABASE_URL"].rsplit("/", 1)[0] + "/postgres"
        subprocess.run(["psql", admin, "-qc", f"DROP DATABASE IF EXISTS {name}"], check=True)
        subprocess.run(["psql", admin, "-qc", f"CREATE DATABASE {name}"], check=True)
    processes: list[subprocess.Popen] = []
    try:
        upstream_url = f"http://127.0.0.1:{args.upstream_port}"
        processes.append(
            subprocess.Popen(
                [PY, "-m", "tests.fakes.upstream", "--port", str(args.upstream_port), "--chunks", str(args.chunks),
                 "--chunk-text", "字ab", "--chunk-delay", str(args.chunk_delay)],
                cwd=ROOT, stdout=subprocess.DEVNULL,
            )
        )  # fmt: skip
        subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
        out = subprocess.run(
            [PY, "manage.py", "shell", "-c", SETUP],
            cwd=ROOT, env={**env, "BENCH_UPSTREAM": upstream_url}, check=True, capture_output=True, text=True,
        )  # fmt: skip
        setup = json.loads(out.stdout.strip().splitlines()[-1])
        url = f"http://127.0.0.1:{args.port}"
        processes.append(
            subprocess.Popen(
                [str(Path(PY).parent / "uvicorn"), "writing_service.asgi:application", "--port", str(args.port),
                 "--lifespan", "off", "--log-level", "warning", "--no-access-log"],
                cwd=ROOT, env=env,
            )
        )  # fmt: skip
        worker = subprocess.Popen(
            [PY, "-m", "celery", "-A", "writing_service", "worker", "--pool", "threads",
             "--concurrency", str(max(256, args.jobs)), "--queues", "generation,housekeeping",
             "--without-heartbeat", "--without-mingle", "--without-gossip", "--loglevel", "WARNING"],
            cwd=ROOT, env=env,
        )  # fmt: skip
        processes.append(worker)
        wait_until(lambda: httpx.get(f"{url}/healthz").status_code == 200, "the web server")
        wait_until(lambda: httpx.get(f"{upstream_url}/v1/models").status_code < 500, "the fake upstream")
        body = {"mode": "writing", "promptId": setup["prompt"], "userInput": "写", "maxTokens": 4000}
        asyncio.run(run_jobs(url, setup["token"], body, 2))  # warm-up: imports, connections, the loop
        base = rss_mib(worker.pid)
        web = processes[1]
        cpu_before = {"worker": cpu_seconds(worker.pid), "web": cpu_seconds(web.pid)}
        marks = asyncio.run(run_jobs(url, setup["token"], body, args.jobs))
        cpu = {
            "worker": cpu_seconds(worker.pid) - cpu_before["worker"],
            "web": cpu_seconds(web.pid) - cpu_before["web"],
        }
        peak = rss_mib(worker.pid, "VmHWM:")
        first = sorted(marks["first"])

        def p50_p95(values: list[float]) -> str:
            values = sorted(values)
            return f"{statistics.median(values) * 1000:.0f} / {values[int(len(values) * 0.95) - 1] * 1000:.0f} ms"

        print(f"jobs at once on one worker process   {args.jobs}")
        print(f"events per answer                    {args.chunks} (every {args.chunk_delay * 1000:.0f} ms)")
        print(f"all jobs ended (wall)                {marks['wall']:.2f} s (one answer alone: "
              f"{args.chunks * args.chunk_delay:.2f} s)")  # fmt: skip
        print(f"POST → 202 p50 / p95                 {p50_p95(marks['accepted'])}")
        print(f"POST → first event p50 / p95         {p50_p95(first)}")
        print(f"202 → first event p50 / p95          {p50_p95(marks['first_after_202'])}")
        print(f"streams resumed after a drop         {marks['resumed']}")
        print(f"events delivered per second          {marks['events'] / marks['wall']:.0f}")
        per_event = {k: v / max(1, marks["events"]) * 1e6 for k, v in cpu.items()}
        print(f"CPU during the run: worker / web      {cpu['worker']:.1f} / {cpu['web']:.1f} s "
              f"({per_event['worker']:.0f} / {per_event['web']:.0f} µs per event)")  # fmt: skip
        per_job = (peak - base) * 1024 / args.jobs
        print(f"worker RSS: base / peak / per job    {base:.0f} / {peak:.0f} MiB / {per_job:.0f} KiB")
    finally:
        for process in reversed(processes):
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()


if __name__ == "__main__":
    main()
