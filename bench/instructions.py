"""Instructions per call in the service process, counted by valgrind's callgrind: a figure that does not
move with the machine's load, for A/B of changes too small for the CPU-time benches to see.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/prof REDIS_URL=redis://127.0.0.1:6379/14 \
        .venv/bin/python bench/instructions.py --case writing --clients 16 --compare /tmp/base

The service runs as in `bench/profile.py` (one uvicorn worker, uvloop, httptools, the in-repo fake
upstream, rate limits off), under `valgrind --tool=callgrind --instr-atstart=no`: nothing is counted
while it starts and warms up (`--warmup` calls: connections open, caches filled); then counting is
switched on (`callgrind_control --instr=on`), `--requests` calls are made from `--clients` concurrent
clients, and the process's user-space instructions (all threads) are read from callgrind's dump.
The kernel's side (system calls, the network stack) is not counted: `bench/profile.py --perf` shows it.
With `--compare DIR` the other checkout's service runs beside this one and the two are counted in
interleaved rounds (`--rounds`), the order alternating.

Under valgrind the service runs some 20–50 times slower; timeouts are seconds long, so nothing times
out, but the figures of time (latency, requests per second) mean nothing here. With one client (the
default) every call takes the same path: rounds of 100 calls spread by 1–3 % around their median, and
two services of the same code came out 1.3 % apart; with 16 clients, 2–4 % apart (the interleaving of
the calls and the collector's timing vary). Steps of 2 % and more show.
`--annotate N` prints the N functions with the most instructions (inclusive) of this checkout's run.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import start_fake

# bench/profile.py by its path: the standard library has a `profile` module too
_spec = importlib.util.spec_from_file_location("bench_profile", Path(__file__).with_name("profile.py"))
assert _spec is not None and _spec.loader is not None
_profile = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_profile)
PY, ROOT, Target = _profile.PY, _profile.ROOT, _profile.Target
service_env, prepare_database = _profile.service_env, _profile.prepare_database

CASES = ("writing", "stream", "openai", "openai-stream")


def start_counted(checkout: Path, port: int, env: dict[str, str], out_dir: Path) -> subprocess.Popen[bytes]:
    """The service under callgrind, counting off; returns once it answers /healthz (a minute at most)."""
    log = open(out_dir / "service.log", "wb")  # noqa: SIM115 (open for the server's life)
    proc = subprocess.Popen(
        [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out_dir}/callgrind.out.%p",
            str(Path(PY).parent / "uvicorn"),
            "writing_service.asgi:application",
            *("--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log"),
        ],
        cwd=checkout,
        env=env,
        stdout=log,
        stderr=log,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"service exited: {(out_dir / 'service.log').read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("service did not start under valgrind")


async def calls(target: Target, case: str, total: int, clients: int) -> None:
    per_client = max(1, total // clients)

    async def one() -> None:
        async with httpx.AsyncClient(timeout=300) as client:
            for _ in range(per_client):
                await target.call(client, case)

    await asyncio.gather(*(one() for _ in range(clients)))


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True)


def dumped_instructions(out_dir: Path, pid: int) -> int:
    """The instructions of the last dump (callgrind writes one file per dump: `<out>.<pid>.<n>`)."""
    dumps = sorted(out_dir.glob(f"callgrind.out.{pid}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    text = dumps[-1].read_text(errors="replace")
    found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if found is None:
        raise RuntimeError(f"no totals in {dumps[-1]}")
    return int(found.group(1))


def count(target: Target, pid: int, out_dir: Path, case: str, requests: int, clients: int) -> int:
    """The instructions of `requests` calls (counting on only meanwhile)."""
    control(pid, "--instr=on")
    control(pid, "--zero")
    asyncio.run(calls(target, case, requests, clients))
    control(pid, "--dump")
    control(pid, "--instr=off")
    return dumped_instructions(out_dir, pid)


def annotate(out_dir: Path, pid: int, top: int) -> str:
    dumps = sorted(out_dir.glob(f"callgrind.out.{pid}.*"), key=lambda p: int(p.name.rsplit(".", 1)[1]))
    out = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", f"--threshold={99}", str(dumps[-1])],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = [line for line in out.splitlines() if re.match(r"^\s*[\d,]+ \(", line)]
    return "\n".join(lines[:top])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=CASES, default="writing")
    parser.add_argument("--requests", type=int, default=600, help="calls counted per service")
    parser.add_argument("--rounds", type=int, default=6, help="counted bursts per service, interleaved")
    parser.add_argument("--warmup", type=int, default=200, help="calls before counting starts")
    parser.add_argument("--clients", type=int, default=1, help="concurrent clients (1: the same path every call)")
    parser.add_argument("--chunks", type=int, default=4, help="content events per fake answer")
    parser.add_argument("--port", type=int, default=8776)
    parser.add_argument("--annotate", type=int, default=0, metavar="N", help="the N heaviest functions")
    parser.add_argument("--compare", metavar="DIR", help="another checkout, counted in rounds with this one")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed (Debian: apt-get install -y valgrind)")

    fake_proc, fake = start_fake(chunks=args.chunks)
    tmp = Path(tempfile.mkdtemp(prefix="instructions-"))
    # the same hashes in both processes: their dicts and sets probe alike
    env = service_env(tmp, "INFO", PYTHONHASHSEED="0")
    checkouts = [("this", ROOT)] + ([("other", Path(args.compare).resolve())] if args.compare else [])
    procs: list[subprocess.Popen[bytes]] = []
    try:
        setup = prepare_database(env, fake)
        services = []
        for i, (name, checkout) in enumerate(checkouts):
            out_dir = tmp / name
            out_dir.mkdir()
            proc = start_counted(checkout, args.port + i, env, out_dir)
            procs.append(proc)
            target = Target(fake, f"http://127.0.0.1:{args.port + i}", setup["token"], setup["prompt"])
            asyncio.run(calls(target, args.case, args.warmup, args.clients))
            services.append((name, target, proc.pid, out_dir))
        per_round = max(1, args.requests // args.rounds // args.clients) * args.clients
        counted = {name: [] for name, *_ in services}
        for r in range(args.rounds):  # interleaved, the order alternating: what came before weighs alike
            for name, target, pid, out_dir in services if r % 2 == 0 else services[::-1]:
                counted[name].append(count(target, pid, out_dir, args.case, per_round, args.clients) / per_round)
        for name, figures in counted.items():
            rounds = " ".join(f"{f / 1e6:.3f}" for f in figures)
            print(
                f"{args.case:<13} {name:<6} c={args.clients}  {statistics.median(figures) / 1e6:7.3f} M instructions"
                f"/call, median of rounds of {per_round}: {rounds}",
                flush=True,
            )
        if len(services) == 2:
            this, other = (statistics.median(f) for f in counted.values())
            print(f"this / other: {this / other:.4f}")
        if args.annotate:
            _name, _target, pid, out_dir = services[0]
            print(annotate(out_dir, pid, args.annotate), flush=True)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=60)
        fake_proc.terminate()
        fake_proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
