"""Helpers of the hostile-input tests: wall time and memory of an attack, and raw HTTP requests.

The live server (`live_server_url`, tests/live.py) runs in this process, so its memory is this
process's: `Measured.rss_peak_mib` is the growth of the resident set's high-water mark during the
attack (`VmHWM`, reset through `/proc/self/clear_refs` first), `Measured.traced_peak_mib` the peak of
Python allocations (tracemalloc) when asked for.

The time bounds of these tests are loose on purpose — a few times the figures measured on an idle
machine, far below the unbounded "before" (docs/benchmarks.md, "Hostile input"): they must hold on a
loaded CI machine. The figures themselves come from `bench/hostile.py`.
"""

from __future__ import annotations

import socket
import threading
import time
import tracemalloc
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_high_water() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Measured:
    seconds: float = 0.0
    rss_peak_mib: float = 0.0
    traced_peak_mib: float = 0.0


@contextmanager
def measure(*, traced: bool = False) -> Iterator[Measured]:
    """Time and memory growth of the block (see the module docstring)."""
    result = Measured()
    if traced:
        tracemalloc.start()
        tracemalloc.reset_peak()
    has_hwm = _reset_high_water()
    before = _status_kib("VmRSS")
    started = time.perf_counter()
    try:
        yield result
    finally:
        result.seconds = time.perf_counter() - started
        after = _status_kib("VmHWM") if has_hwm else _status_kib("VmRSS")
        result.rss_peak_mib = max(0, after - before) / 1024
        if traced:
            result.traced_peak_mib = tracemalloc.get_traced_memory()[1] / (1024 * 1024)
            tracemalloc.stop()


@dataclass
class RawAnswer:
    status: int
    headers: dict[str, str]
    body: bytes
    sent: int  # body bytes the client managed to send before the answer came


def raw_request(url: str, head: str, pieces: Iterable[bytes], *, timeout: float = 30) -> RawAnswer:
    """Send a request line + headers (`head`, without the blank line) and then body `pieces`, reading
    the answer as soon as the server gives one: the server may answer (and close) before the body is
    sent, which an ordinary client reports as a broken pipe."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    sock.sendall(head.encode("latin-1") + b"\r\n\r\n")
    sock.setblocking(False)
    received = bytearray()
    sent = 0
    deadline = time.monotonic() + timeout

    def poll() -> bool:
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return False
        except ConnectionError:
            return True
        if not data:
            return True
        received.extend(data)
        return True

    def send_all() -> None:
        nonlocal sent
        for piece in pieces:
            view = memoryview(piece)
            while view:
                if poll() or time.monotonic() > deadline:
                    return
                try:
                    n = sock.send(view)
                except BlockingIOError:
                    time.sleep(0.001)
                    continue
                except ConnectionError:
                    return
                view = view[n:]
                sent += n

    send_all()
    sock.setblocking(True)
    sock.settimeout(max(0.1, deadline - time.monotonic()))
    try:
        while b"\r\n\r\n" not in received or not _complete(bytes(received)):
            data = sock.recv(65536)
            if not data:
                break
            received.extend(data)
    except (ConnectionError, TimeoutError):
        pass
    finally:
        sock.close()
    head_bytes, _, body = bytes(received).partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines and lines[0].startswith("HTTP/") else 0
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawAnswer(status, headers, body, sent)


def _complete(data: bytes) -> bool:
    head, _, body = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return True


class HealthProbe:
    """`/healthz` polled in a thread while an attack runs; `worst` is the slowest answer (seconds)."""

    def __init__(self, base_url: str, interval: float = 0.02) -> None:
        self.url = base_url + "/healthz"
        self.interval = interval
        self.times: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                try:
                    ok = client.get(self.url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.times.append(time.perf_counter() - started)
                self.failures += not ok
                self._stop.wait(self.interval)

    def __enter__(self) -> HealthProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    @property
    def worst(self) -> float:
        return max(self.times, default=0.0)
