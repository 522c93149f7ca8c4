"""Multi-process mode with real processes: two uvicorn servers and a short-lived worker process write to
one PROMETHEUS_MULTIPROC_DIR; a scrape of either server adds them all up. Then what happens when a
process goes (its counters stay while others run; its live gauges go), and the start-up pruning."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from apps.core import metrics
from tests.metrics.scrape import Samples, parse, value

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fleet_env(tmp_path: Path) -> dict[str, str]:
    """The environment of the processes: their own SQLite database (migrated) and metrics directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "METRICS_TOKEN")}
    env.update(
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        ENV_FILE=str(tmp_path / "no.env"),
        DEBUG="false",
        ALLOW_INSECURE_SECRETS="true",
        LOG_LEVEL="WARNING",
    )
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True, timeout=120)
    return env


class Server:
    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "writing_service.asgi:application", "--host", "127.0.0.1",
             "--port", str(self.port), "--lifespan", "off", "--log-level", "warning"],
            cwd=ROOT,
            env=env,
        )  # fmt: skip

    def wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.1)
        raise RuntimeError("uvicorn did not start")

    def get(self, path: str) -> int:
        return httpx.get(f"{self.url}{path}", timeout=10).status_code

    def scrape(self) -> Samples:
        response = httpx.get(f"{self.url}/metrics", timeout=10)
        assert response.status_code == 200
        return parse(response.text)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


@pytest.fixture
def two_servers(fleet_env: dict[str, str]) -> Iterator[tuple[Server, Server]]:
    servers = (Server(fleet_env), Server(fleet_env))
    try:
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


WORKER = """
import django
django.setup()
from apps.core import metrics
assert metrics.MULTIPROCESS
metrics.HOLDS_EXPIRED.inc(3)        # what a Celery worker's sweep counts
metrics.SSE_STREAMS_OPEN.inc(2)     # a live gauge: gone with the process
"""


def test_two_servers_and_a_worker_add_up(two_servers: tuple[Server, Server], fleet_env: dict[str, str]) -> None:
    a, b = two_servers
    # given: known traffic to each server
    assert [a.get("/readyz") for _ in range(3)] == [200] * 3
    assert [b.get("/readyz") for _ in range(5)] == [200] * 5
    assert b.get("/no-such-page") == 404
    # and a worker process that counts and exits
    subprocess.run(
        [sys.executable, "-c", WORKER],
        cwd=ROOT,
        env={**fleet_env, "DJANGO_SETTINGS_MODULE": "writing_service.settings"},
        check=True,
        timeout=60,
    )
    # when either server is scraped
    for server in (a, b):
        samples = server.scrape()
        # then it answers for the whole fleet
        assert value(samples, "http_requests_total", route="/readyz", method="GET", status="200") == 8
        assert value(samples, "http_request_duration_seconds_count", route="/readyz", method="GET") == 8
        assert value(samples, "http_requests_total", route="(unmatched)", method="GET", status="404") == 1
        assert value(samples, "billing_holds_expired_total") == 3
        assert value(samples, "sse_streams_open") == 0  # the worker is gone: its streams too
        assert value(samples, "billing_holds_open") == 0  # read from the database
    # when one server stops
    b.stop()
    samples = a.scrape()
    # then its counts stay in the sums while the fleet runs (no false counter reset)
    assert value(samples, "http_requests_total", route="/readyz", method="GET", status="200") == 8
    assert value(samples, "billing_holds_expired_total") == 3
    directory = Path(fleet_env["PROMETHEUS_MULTIPROC_DIR"])
    assert not list(directory.glob(f"gauge_live*_{b.proc.pid}.db"))
    assert list(directory.glob(f"counter_{b.proc.pid}.db"))


# --- start-up pruning, on files made by hand ------------------------------------------------------------


@pytest.fixture
def multiproc_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "prom"
    directory.mkdir()
    monkeypatch.setenv(metrics.MULTIPROC_DIR_ENV, str(directory))
    monkeypatch.setattr(metrics, "MULTIPROCESS", True)
    return directory


def files(directory: Path, *pids: int) -> None:
    for pid in pids:
        for prefix in ("counter", "histogram", "gauge_livesum"):
            (directory / f"{prefix}_{pid}.db").write_bytes(b"")


def names(directory: Path) -> set[str]:
    return {p.name for p in directory.iterdir()}


def test_start_up_with_nothing_else_running_drops_every_file_of_gone_processes(multiproc_dir: Path) -> None:
    files(multiproc_dir, 101, 102)
    dead = metrics.multiproc_prune(at_start=True, alive=lambda pid: False)
    assert sorted(dead) == [101, 102]
    assert names(multiproc_dir) == set()


def test_a_scrape_drops_only_the_live_gauges_of_gone_processes(multiproc_dir: Path) -> None:
    files(multiproc_dir, 101, 102)
    assert sorted(metrics.multiproc_prune(alive=lambda pid: False)) == [101, 102]
    assert names(multiproc_dir) == {"counter_101.db", "histogram_101.db", "counter_102.db", "histogram_102.db"}


def test_start_up_beside_a_running_process_keeps_the_gone_ones_counters(multiproc_dir: Path) -> None:
    files(multiproc_dir, 101, 102)
    dead = metrics.multiproc_prune(at_start=True, alive=lambda pid: pid == 102)
    assert dead == [101]
    assert names(multiproc_dir) == {
        "counter_101.db",
        "histogram_101.db",
        "counter_102.db",
        "histogram_102.db",
        "gauge_livesum_102.db",
    }


def test_this_process_files_are_never_pruned(multiproc_dir: Path) -> None:
    me = os.getpid()
    files(multiproc_dir, me)
    assert metrics.multiproc_prune(at_start=True, alive=lambda pid: False) == []
    assert len(names(multiproc_dir)) == 3


def test_start_makes_the_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "a" / "b"
    monkeypatch.setenv(metrics.MULTIPROC_DIR_ENV, str(directory))
    monkeypatch.setattr(metrics, "MULTIPROCESS", True)
    metrics.multiproc_start()
    assert directory.is_dir()


def test_a_process_that_exits_drops_its_live_gauges(multiproc_dir: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    files(multiproc_dir, 4242)
    metrics.process_exit()
    assert names(multiproc_dir) == {"counter_4242.db", "histogram_4242.db"}
