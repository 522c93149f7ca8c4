"""Hostile requests against a running server: each attack's time, the server's peak memory growth, and
how long `/healthz` took while it ran (issue 20; tests/security/ asserts the bounds, this prints figures).

    .venv/bin/python bench/hostile.py            # SQLite, one uvicorn worker
    DATABASE_URL=postgres://… .venv/bin/python bench/hostile.py

The service runs under uvicorn in its own process (production-like: DEBUG off, generated secrets, the
mock model). Attacks run one at a time; each is given at most `--timeout` seconds. Memory is the
process's `VmHWM` (peak resident set) read from /proc before and after, so an attack that inflates
memory shows up even after it was freed.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

SETUP = r"""
import json
from apps.accounts.services import user_create
from bench.setup_support import fresh_token
from apps.billing.services import wallet_grant
from apps.characters.services import character_create
from apps.novels.models import Novel
from apps.prompts.models import Prompt, PromptContent
user = user_create(username="hostile", password="x")
wallet_grant(user=user, amount=10**9)
prompt = Prompt.objects.create(author=user, title="p")
PromptContent.objects.create(prompt=prompt, order=1, type="text", content="你是作家。")
novel = Novel.objects.create(owner=user, title="n")
card = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "Greedy",
        "first_mes": "{{setglobalvar::pile::{{getglobalvar::pile}}" + "x" * 100000 + "}}hi"}}
character = character_create(user=user, novel_id=novel.pk, card=card)
token = fresh_token(user)
print(json.dumps({"token": token, "prompt": prompt.pk, "character": character.pk}))
"""


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def png_bomb(chunks: int = 40, inflated_mib: int = 20) -> bytes:
    """A PNG whose zTXt `chara` chunks each inflate to `inflated_mib` MiB of base64."""

    def chunk(ctype: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + ctype + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(ctype)))

    ihdr = chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
    idat = chunk(b"IDAT", zlib.compress(b"\x00\x00"))
    payload = zlib.compress(b"A" * (inflated_mib * 1024 * 1024), 9)
    bombs = b"".join(chunk(b"zTXt", b"chara\0\0" + payload) for _ in range(chunks))
    return b"\x89PNG\r\n\x1a\n" + ihdr + bombs + idat + chunk(b"IEND", b"")


def attacks(setup: dict) -> dict[str, Callable[[httpx.Client], httpx.Response]]:
    prompt, character = setup["prompt"], setup["character"]
    regex_entries = [{"uid": i, "key": ["/(a|a)*b/"], "content": "x"} for i in range(5)]
    return {
        "regex key /(a|a)*b/ over 26 characters (lorebook dry run)": lambda c: c.post(
            "/api/v1/lorebooks/activate",
            json={"entries": regex_entries, "chat": [{"name": "user", "content": "a" * 26}]},
        ),
        "JSON body of 64 MB (writing)": lambda c: c.post(
            "/api/v1/generation/writing",
            content=b'{"promptId": %d, "userInput": "' % prompt + b"x" * (64 * 1024 * 1024) + b'"}',
            headers={"Content-Type": "application/json"},
        ),
        "1,000 history messages of {{space::999999}} (writing)": lambda c: c.post(
            "/api/v1/generation/writing",
            json={
                "promptId": prompt,
                "history": [{"role": "user", "content": "{{space::999999}}"}] * 1000,
                "maxTokens": 10,
            },
        ),
        "PNG card of 40 zTXt chunks, 20 MB inflated each (card import)": lambda c: c.post(
            "/api/v1/characters/import", files={"file": ("bomb.png", png_bomb(), "image/png")}
        ),
        "{{roll:1000d999999999}} × 2,000 (macro preview)": lambda c: c.post(
            "/api/v1/macros/preview", json={"text": "{{roll:1000d999999999}}" * 2000}
        ),
        "21 chats growing a global variable by 100,000 characters each": lambda c: [
            c.post("/api/v1/chats", json={"characterId": character}) for _ in range(21)
        ][-1],
    }


def health_latency_during(client_url: str, stop: threading.Event, out: list[float]) -> None:
    with httpx.Client(base_url=client_url, timeout=60) as client:
        while not stop.is_set():
            started = time.perf_counter()
            client.get("/healthz")
            out.append(time.perf_counter() - started)
            time.sleep(0.02)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--only", help="run the attacks whose name contains this text")
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="hostile-")
    env = {
        **os.environ,
        "DEBUG": "false",
        "LOG_LEVEL": "ERROR",
        "DJANGO_SETTINGS_MODULE": "writing_service.settings",
        "SECRET_KEY": secrets.token_urlsafe(64),
        "FIELD_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "RATE_LIMIT_USER": "0",
        "RATE_LIMIT_GENERATION": "0",
    }
    env.setdefault("DATABASE_URL", f"sqlite:///{tmp}/hostile.sqlite3")
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    subprocess.run([PY, "manage.py", "demo_setup"], cwd=ROOT, env=env, check=True, capture_output=True)
    out = subprocess.run(
        [PY, "manage.py", "shell", "-c", SETUP], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    setup = json.loads(out.stdout.strip().splitlines()[-1])
    server = subprocess.Popen(
        [
            str(Path(PY).parent / "uvicorn"),
            "writing_service.asgi:application",
            "--port",
            str(args.port),
            "--lifespan",
            "off",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(100):
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        headers = {"Authorization": f"Bearer {setup['token']}"}
        print(f"{'attack':<66} {'status':>6} {'seconds':>8} {'peak RSS +MiB':>14} {'/healthz max ms':>16}")
        with httpx.Client(base_url=url, headers=headers, timeout=args.timeout) as client:
            for name, attack in attacks(setup).items():
                if args.only and args.only not in name:
                    continue
                before = peak_rss_mib(server.pid)
                latencies: list[float] = []
                stop = threading.Event()
                watcher = threading.Thread(target=health_latency_during, args=(url, stop, latencies), daemon=True)
                watcher.start()
                started = time.perf_counter()
                try:
                    status = str(attack(client).status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__[:6]
                elapsed = time.perf_counter() - started
                stop.set()
                watcher.join(args.timeout)
                grown = peak_rss_mib(server.pid) - before
                worst = max(latencies, default=0.0) * 1000
                print(f"{name:<66} {status:>6} {elapsed:8.2f} {grown:14.1f} {worst:16.1f}", flush=True)
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
