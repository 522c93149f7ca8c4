"""Profile the live server on the hot paths: CPU per call, then where that CPU goes (py-spy).

    .venv/bin/python bench/profile.py                       # the four cases, 400 calls each, 15 s profiles
    .venv/bin/python bench/profile.py --case writing --no-profile --requests 1000   # CPU figures only
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/bench REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/profile.py                   # production-like backends (what bench3.sh uses)

The service runs as `shared/bench/bench3.sh` runs it: one uvicorn worker (uvloop, httptools), `DEBUG`
off, the default logging (one JSON access line per request at INFO, written to a file), rate limits off,
the model behind a connection with a concurrency limit (256, as `serve.sh`'s `fake` connection), a
prompt of one system message, and bench3's request (the prompt's id, a 150-character `userInput`,
`maxTokens` 64). The fake upstream is the in-repo one (its own process, uvloop).

`--clients N`: N concurrent clients instead of one (bench3's `c=16`), with requests per second.

`--compare DIR` runs a second service from another checkout beside this one (same database, same user)
and measures both in interleaved rounds: before/after figures under the same machine noise.

Cases: `writing` (POST /api/v1/generation/writing), `stream` (…/writing/stream, read to the end),
`openai` (POST /v1/chat/completions, the same messages) and `openai-stream` (the same with `stream: true`
and `stream_options.include_usage`, read to the end). `--chunks N`: the fake upstream's content events
per answer (default 4; `bench3.sh`'s upstream sends about 9 pieces in ~17 writes; the in-repo fake writes
its events back to back, so most arrive in one read). Per case: `--requests` calls from one client
with the upstream called directly in between (overhead p50 = service p50 − direct p50), the service
process's CPU per call from /proc; then, unless `--no-profile`, `py-spy record` on the service for
`--seconds` while one client keeps calling: the collapsed stacks go to `bench/results/profile-<case>.txt`
(open them with speedscope or flamegraph.pl) and the heaviest functions — own time and with callees —
are printed. Only the thread holding the GIL is sampled (`--gil`): the profile is where the process's
Python CPU goes, not where its threads wait. The figures of a profiled run are not the bench's: py-spy
samples from outside the process (no instrumentation), but it takes CPU on the same two cores.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import cpu_seconds, pct, service_env, start_fake

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
RESULTS = ROOT / "bench" / "results"
SYSTEM = "You are a writer."
PROMPT = (
    "Write the opening line of a quiet story about a programmer whose code starts to think for itself, "
    "late at night, while the servers hum along."
)

SETUP = r"""
import json, os
from decimal import Decimal
from apps.accounts.services import user_create
from bench.setup_support import fresh_token
from apps.billing.services import wallet_grant
from apps.prompts.models import Prompt, PromptContent
from apps.providers.models import AIModel, Connection
from django.contrib.auth import get_user_model
user = get_user_model().objects.filter(username="profile").first() or user_create(username="profile", password="x")
wallet_grant(user=user, amount=10**12)
conn, _ = Connection.objects.update_or_create(name="profile-fake", defaults=dict(kind="openai",
    base_url=os.environ["BENCH_FAKE_URL"], max_concurrency=int(os.environ.get("BENCH_SLOTS", "256")), read_timeout=5))
conn.set_api_key("sk-profile"); conn.save()
AIModel.objects.update_or_create(model_id="profile-model", defaults=dict(connection=conn, upstream_model="fake-model",
    context_tokens=8192, max_output_tokens=4096, input_ratio=Decimal(1), output_ratio=Decimal(1)))
prompt = Prompt.objects.create(author=user, title="profile")
PromptContent.objects.create(prompt=prompt, order=1, type="text", role="system", content=os.environ["BENCH_SYSTEM"])
print(json.dumps({"token": fresh_token(user), "prompt": prompt.pk}))
"""


class Target:
    def __init__(self, fake: str, service: str, token: str, prompt: int) -> None:
        self.fake, self.service = fake, service
        self.auth = {"Authorization": f"Bearer {token}"}
        self.writing = {"promptId": prompt, "userInput": PROMPT, "modelId": "profile-model", "maxTokens": 64}
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}]
        self.openai = {"model": "profile-model", "messages": messages, "max_tokens": 64, "temperature": 0.7}
        self.openai_stream = {**self.openai, "stream": True, "stream_options": {"include_usage": True}}
        self.direct = {**self.openai, "model": "fake-model"}

    async def call(self, client: httpx.AsyncClient, case: str) -> float:
        """One call of `case` (or `direct`); the time to the whole answer."""
        url, body, headers = {
            "direct": (f"{self.fake}/v1/chat/completions", self.direct, {"Authorization": "Bearer sk-profile"}),
            "writing": (f"{self.service}/api/v1/generation/writing", self.writing, self.auth),
            "stream": (f"{self.service}/api/v1/generation/writing/stream", self.writing, self.auth),
            "openai": (f"{self.service}/v1/chat/completions", self.openai, self.auth),
            "openai-stream": (f"{self.service}/v1/chat/completions", self.openai_stream, self.auth),
        }[case]
        started = time.perf_counter()
        async with client.stream("POST", url, json=body, headers=headers) as r:
            async for _ in r.aiter_raw():
                pass
            if r.status_code != 200:
                raise RuntimeError(f"{case}: {r.status_code}")
        return time.perf_counter() - started


def database_cpu_seconds(database: str | None) -> float:
    """CPU of this machine's PostgreSQL backends serving `database` (their process titles name it), as
    `bench3.sh` counts it; 0 for SQLite."""
    if not database:
        return 0.0
    total = 0.0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            title = (proc / "cmdline").read_bytes()
            if title.startswith(b"postgres: ") and f" {database} ".encode() in title:
                total += cpu_seconds(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return total


async def measure(
    services: list[tuple[str, Target, int]],
    case: str,
    total: int,
    rounds: int = 10,
    clients: int = 1,
    database: str | None = None,
) -> list[dict]:
    """`total` calls of `case` per service (name, target, pid) from `clients` concurrent clients (each its
    own keep-alive connection), in rounds interleaved with as many direct calls; the services' order
    alternates from round to round. Requests per second: calls over the rounds' wall time."""
    direct: list[float] = []
    proxied: dict[str, list[float]] = {name: [] for name, _t, _p in services}
    cpu = dict.fromkeys(proxied, 0.0)
    db_cpu = dict.fromkeys(proxied, 0.0)
    wall = dict.fromkeys(proxied, 0.0)
    per_client = max(1, total // rounds // clients)

    async def burst(pool: list[httpx.AsyncClient], target: Target, what: str, out: list[float]) -> float:
        async def one(client: httpx.AsyncClient) -> None:
            for _ in range(per_client):
                out.append(await target.call(client, what))

        started = time.perf_counter()
        await asyncio.gather(*(one(c) for c in pool))
        return time.perf_counter() - started

    pool = [httpx.AsyncClient(timeout=60) for _ in range(clients)]
    try:
        for _name, target, _pid in services:
            for _ in range(10):  # connections open, caches warm
                await asyncio.gather(*(target.call(c, case) for c in pool))
        for r in range(rounds):
            await burst(pool, services[0][1], "direct", direct)
            for name, target, pid in services if r % 2 == 0 else services[::-1]:
                before, db_before = cpu_seconds(pid), database_cpu_seconds(database)
                wall[name] += await burst(pool, target, case, proxied[name])
                cpu[name] += cpu_seconds(pid) - before
                db_cpu[name] += database_cpu_seconds(database) - db_before
    finally:
        for c in pool:
            await c.aclose()
    return [
        {
            "case": case,
            "service": name,
            "clients": clients,
            "requests": len(lat),
            "direct_p50_ms": round(pct(direct, 0.5) * 1000, 2),
            "service_p50_ms": round(pct(lat, 0.5) * 1000, 2),
            "overhead_p50_ms": round((pct(lat, 0.5) - pct(direct, 0.5)) * 1000, 2),
            "cpu_ms_per_call": round(cpu[name] / len(lat) * 1000, 2),
            "db_cpu_ms_per_call": round(db_cpu[name] / len(lat) * 1000, 2),
            "req_per_s": round(len(lat) / wall[name], 1),
        }
        for name, lat in proxied.items()
    ]


def start_service(checkout: Path, port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = open(log, "wb")  # noqa: SIM115 (open for the server's life)
    proc = subprocess.Popen(
        [
            str(Path(PY).parent / "uvicorn"),
            "writing_service.asgi:application",
            "--port",
            str(port),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
        ],
        cwd=checkout,  # the checkout's code (uvicorn imports from its working directory)
        env=env,
        stdout=out,
        stderr=out,
    )
    for _ in range(200):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    return proc


async def keep_calling(target: Target, case: str, stop: asyncio.Event) -> int:
    calls = 0
    async with httpx.AsyncClient(timeout=60) as client:
        while not stop.is_set():
            await target.call(client, case)
            calls += 1
    return calls


def frame_name(frame: str) -> str:
    """`func (path/to/module.py:123)` -> `func (module path from site-packages or the project)`."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", str(ROOT) + "/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})"


def summarise(collapsed: Path, top: int) -> str:
    """Own and inclusive sample counts per function from py-spy's collapsed stacks (`--format raw`)."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [frame_name(f) for f in stack.split(";")[1:]]  # [0] is the thread
        total += n
        if frames:
            own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    return _report("the thread holding the GIL", total, own, incl, top)


def _report(what: str, total: int, own: collections.Counter[str], incl: collections.Counter[str], top: int) -> str:
    if not total:
        return "no samples\n"
    lines = [f"{total} samples ({what})", "", "own time:"]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in own.most_common(top)]
    lines += ["", "with callees:"]
    lines += [f"  {100 * n / total:5.1f} %  {f}" for f, n in incl.most_common(top * 2)]
    return "\n".join(lines) + "\n"


def profile(target: Target, case: str, pid: int, seconds: int, rate: int, top: int, clients: int = 1) -> str:
    out = RESULTS / f"profile-{case}.txt"
    spy = shutil.which("py-spy", path=str(Path(PY).parent)) or shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy: the dev extra has it)")
    calls = _record_under_load(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(seconds),
            "--rate",
            str(rate),
            "--format",
            "raw",
            "--output",
            str(out),
            "--gil",
        ],
        target,
        case,
        clients,
    )
    return f"profile of {case}: {calls} calls in {seconds} s -> {out.relative_to(ROOT)}\n" + summarise(out, top)


def perf_frames(script: str) -> collections.Counter[tuple[str, ...]]:
    """Stacks (outermost first) and their sample counts from `perf script`'s text: the interpreter's
    own frames dropped, Python functions as `func (module)` (the perf trampoline's `py::` symbols,
    `PYTHONPERFSUPPORT=1`), native and kernel code under the Python function that called it as
    `[kernel] sym` / `[native] sym`: the time a syscall takes in the kernel counts where it was made."""
    stacks: collections.Counter[tuple[str, ...]] = collections.Counter()
    frames: list[str] = []

    def flush() -> None:
        if frames:
            stacks[tuple(reversed(frames))] += 1
            frames.clear()

    for line in script.splitlines():
        if not line.startswith(("\t", " ")):
            flush()
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) < 2:
            continue
        sym, _, dso = parts[1].rpartition(" (")
        sym = sym.split("+0x")[0]
        if sym.startswith("py::"):
            name, _, path = sym[4:].rpartition(":")
            frames.append(frame_name(f"{name} ({path}:0)"))
        elif "kernel" in dso:
            if not frames or not frames[-1].startswith("[kernel]"):
                frames.append(f"[kernel] {sym}")
        elif not frames:  # the innermost native function only (the interpreter's frames are noise)
            frames.append(f"[native] {sym}")
    flush()
    return stacks


def perf_summary(stacks: collections.Counter[tuple[str, ...]], top: int) -> str:
    """Own time per innermost Python function (its native and kernel callees included), inclusive time
    per Python function, and the kernel's share."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    kernel = 0
    total = sum(stacks.values())
    for stack, n in stacks.items():
        python = [f for f in stack if not f.startswith("[")]
        own[python[-1] if python else stack[-1]] += n
        for f in set(python):
            incl[f] += n
        if any(f.startswith("[kernel]") for f in stack):
            kernel += n
    share = f"{100 * kernel / total:.1f}" if total else "0"
    return _report(f"CPU of all threads; {share} % in the kernel", total, own, incl, top)


def perf_profile(target: Target, case: str, pid: int, seconds: int, rate: int, top: int, clients: int = 1) -> str:
    """`perf record` on the service (CPU time of every thread, the kernel's share included)."""
    data = RESULTS / f"perf-{case}.data"
    calls = _record_under_load(
        [
            "perf",
            "record",
            "-F",
            str(rate),
            "-e",
            "cpu-clock",
            "-g",
            "-p",
            str(pid),
            "-o",
            str(data),
            "--",
            "sleep",
            str(seconds),
        ],
        target,
        case,
        clients,
    )
    script = subprocess.run(["perf", "script", "-i", str(data)], capture_output=True, text=True, check=True).stdout
    stacks = perf_frames(script)
    out = RESULTS / f"perf-{case}.txt"
    out.write_text("".join(f"{';'.join(s)} {n}\n" for s, n in stacks.items()))
    return f"perf profile of {case}: {calls} calls in {seconds} s -> {out.relative_to(ROOT)}\n" + perf_summary(
        stacks, top
    )


def _record_under_load(argv: list[str], target: Target, case: str, clients: int) -> int:
    """Run the profiler `argv` while `clients` clients keep calling `case`; the calls made meanwhile."""
    recorder = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    calls = asyncio.run(_load_while(recorder, target, case, clients))
    if recorder.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {recorder.stderr.read() if recorder.stderr else ''}")
    return calls


async def _load_while(recorder: subprocess.Popen[str], target: Target, case: str, clients: int) -> int:
    stop = asyncio.Event()
    task = asyncio.gather(*(keep_calling(target, case, stop) for _ in range(clients)))
    while recorder.poll() is None:
        await asyncio.sleep(0.2)
    stop.set()
    return sum(await task)


def prepare_database(env: dict[str, str], fake: str) -> dict[str, Any]:
    """Migrations, then the user, model and prompt of the calls (`SETUP`): the token and the prompt's id."""
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    out = subprocess.run(
        [PY, "manage.py", "shell", "-c", SETUP],
        cwd=ROOT,
        env={**env, "BENCH_FAKE_URL": fake, "BENCH_SYSTEM": SYSTEM},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["writing", "stream", "openai", "openai-stream", "all"], default="all")
    parser.add_argument("--requests", type=int, default=400, help="calls per case for the CPU figure")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients (bench3's c=16: 16)")
    parser.add_argument("--seconds", type=int, default=15, help="length of each profile")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=25, help="functions listed per profile")
    parser.add_argument("--no-profile", action="store_true", help="CPU figures only")
    parser.add_argument(
        "--perf",
        action="store_true",
        help="profile with Linux perf instead of py-spy: CPU time of all threads, kernel included (needs perf "
        "and the permission to use it; the service runs with PYTHONPERFSUPPORT=1)",
    )
    parser.add_argument("--log-level", default="INFO", help="the service's LOG_LEVEL (bench3: INFO)")
    parser.add_argument(
        "--chunks", type=int, default=4, help="content events per fake answer (bench3's upstream sends ~9 pieces)"
    )
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument(
        "--other-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="with --compare: an environment variable of the other service only (A/B of a setting)",
    )
    parser.add_argument(
        "--compare",
        metavar="DIR",
        help="another checkout (e.g. `git worktree add /tmp/base main`): its service runs beside this one, on "
        "the same database, and the two are measured in interleaved rounds (the same machine noise for both)",
    )
    args = parser.parse_args()
    cases = ["writing", "stream", "openai", "openai-stream"] if args.case == "all" else [args.case]
    RESULTS.mkdir(parents=True, exist_ok=True)

    fake_proc, fake = start_fake(chunks=args.chunks)
    tmp = tempfile.mkdtemp(prefix="profile-")
    env = service_env(tmp, args.log_level, **({"PYTHONPERFSUPPORT": "1"} if args.perf else {}))
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    try:
        setup = prepare_database(env, fake)
        procs.append(("this", start_service(ROOT, args.port, env, Path(tmp) / "service.log")))
        if args.compare:
            other = Path(args.compare).resolve()
            other_env = {**env, **dict(item.split("=", 1) for item in args.other_env)}
            procs.append(("other", start_service(other, args.port + 1, other_env, Path(tmp) / "other.log")))
        services = [
            (name, Target(fake, f"http://127.0.0.1:{args.port + i}", setup["token"], setup["prompt"]), proc.pid)
            for i, (name, proc) in enumerate(procs)
        ]
        print(
            f"database: {env['DATABASE_URL'].split('@')[-1]}  redis: {env.get('REDIS_URL') or '-'}  "
            f"log level: {args.log_level}  load: {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        rows = []
        url = env["DATABASE_URL"]
        database = url.rsplit("/", 1)[-1].split("?")[0] if url.startswith("postgres") else None
        for case in cases:
            for row in asyncio.run(measure(services, case, args.requests, clients=args.clients, database=database)):
                rows.append(row)
                print(
                    f"{case:<13} {row['service']:<6} c={args.clients} direct p50 {row['direct_p50_ms']:6.2f} ms  "
                    f"service p50 {row['service_p50_ms']:6.2f} ms  overhead p50 {row['overhead_p50_ms']:6.2f} ms  "
                    f"CPU {row['cpu_ms_per_call']:5.2f} ms/call (+ PostgreSQL {row['db_cpu_ms_per_call']:4.2f})  "
                    f"{row['req_per_s']:6.1f} req/s",
                    flush=True,
                )
        _name, target, pid = services[0]
        for case in [] if args.no_profile else cases:
            run = perf_profile if args.perf else profile
            print(run(target, case, pid, args.seconds, args.rate, args.top, args.clients), flush=True)
        (RESULTS / "profile.json").write_text(json.dumps(rows, indent=1))
    finally:
        for proc in [*(p for _n, p in procs), fake_proc]:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
