"""Resumable generations on real workers: Redis streams, a real Celery worker process (the thread pool,
one event loop for its jobs), the live server as the web side, the fake upstream over real sockets.
Faults are real too: a worker killed with SIGKILL in the middle of a stream, Redis going away."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from apps.billing.charges import compute_charge
from apps.billing.models import Charge, Hold
from apps.generation.jobs import services
from apps.generation.models import Generation, GenerationJob
from apps.providers.models import Connection
from tests.fakes.upstream import Reply
from tests.generation.jobs_support import create, read_events, wait_for

REDIS_URL = os.environ.get("REDIS_URL", "")
pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(not REDIS_URL, reason="needs REDIS_URL (a real Redis for the streams and the broker)"),
    pytest.mark.django_db(transaction=True),
]
ROOT = Path(__file__).resolve().parents[2]
CHUNKS = [f"第{i:02d}段。" for i in range(30)]


def database_url() -> str:
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        return f"postgres://{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    return f"sqlite:///{db['NAME']}"


class Worker:
    """`celery worker` as `make worker` runs it, on the test database, in its own process group."""

    def __init__(self, log: Path) -> None:
        env = {
            **os.environ,
            "DATABASE_URL": database_url(),
            "REDIS_URL": REDIS_URL,
            "ALLOW_INSECURE_SECRETS": "true",
            "DJANGO_SETTINGS_MODULE": "writing_service.settings",
            "GENERATION_JOB_HEARTBEAT_SECONDS": "0.5",
        }
        self.log = log
        self.proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "writing_service", "worker"),
                *("--pool", "threads", "--concurrency", "64", "--queues", "generation,housekeeping"),
                *("--without-heartbeat", "--without-mingle", "--without-gossip", "--loglevel", "INFO"),
                *("--hostname", f"test-{uuid.uuid4().hex[:8]}@%h"),
            ],
            cwd=ROOT,
            env=env,
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the celery worker did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[Any]:
    workers: list[Worker] = []

    def _start() -> Worker:
        worker = Worker(tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    try:
        yield _start
    finally:
        for worker in workers:
            worker.stop()


@pytest.fixture(autouse=True)
def _clean_broker() -> None:
    """No message of an earlier test (a killed worker's) reaches this test's worker."""
    import redis

    redis.Redis.from_url(REDIS_URL).flushdb()


def assert_audit_clean() -> None:
    out = StringIO()
    call_command("billing_audit", stdout=out)
    assert "OK: no mismatches" in out.getvalue(), out.getvalue()


def output_cost(chars: int) -> int:
    return compute_charge(
        input_chars=0,
        output_chars=chars,
        input_ratio=1,
        output_ratio=1,
        is_member=False,
        is_free_model=False,
        input_free_threshold=settings.BILLING_INPUT_FREE_THRESHOLD,
    ).output_cost


def test_a_worker_runs_a_job_read_to_the_end_and_resumed_by_two_readers(http, fake_upstream, job_body, start_worker):
    worker = start_worker()
    fake_upstream.script(Reply(chunks=CHUNKS, chunk_delay=0.03))
    job = create(http, job_body())
    url = f"/api/v1/generation/jobs/{job['jobId']}/events"

    first = read_events(http, job["eventsUrl"], limit=6)
    reads: list[Any] = []
    readers = [
        threading.Thread(
            target=lambda: reads.append(read_events(http, url, headers={"Last-Event-ID": first.events[-1].id}))
        )
        for _ in range(2)
    ]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join(30)
    whole = read_events(http, url)

    assert len(reads) == 2 and reads[0].events == reads[1].events
    assert [(e.id, e.data) for e in first.events + reads[0].events] == [(e.id, e.data) for e in whole.events]
    assert whole.text == "".join(CHUNKS) and whole.final["status"] == "succeeded"
    assert all(e.id.count("-") == 1 for e in whole.events)  # Redis stream ids
    status = http.get(f"/api/v1/generation/jobs/{job['jobId']}").json()
    assert status["status"] == "succeeded" and status["content"] == "".join(CHUNKS)
    record = GenerationJob.objects.select_related("generation").get()
    assert record.attempts == 1 and record.worker and record.worker != services.worker_name()
    assert (
        Charge.objects.get().total_cost == status["consumption"]["totalCost"] == whole.final["consumption"]["totalCost"]
    )
    assert_audit_clean()
    worker.stop()  # a warm shutdown leaves nothing of the job loop pending
    assert worker.proc.returncode == 0 and "Task was destroyed" not in worker.log.read_text()


def test_cancel_reaches_the_worker_and_charges_what_was_delivered(http, fake_upstream, job_body, start_worker):
    start_worker()
    fake_upstream.script(Reply(chunks=[f"{i:04d}" * 5 for i in range(400)], chunk_delay=0.05))
    job = create(http, job_body())
    read_events(http, job["eventsUrl"], limit=4)

    body = http.post(f"/api/v1/generation/jobs/{job['jobId']}/cancel").json()

    assert body["status"] == "cancelled", body
    delivered = len(body["content"])
    assert 0 < delivered < 2000
    assert body["consumption"]["totalCost"] == Charge.objects.get().total_cost
    assert Generation.objects.get().output_chars == delivered
    wait_for(lambda: fake_upstream.disconnects)
    read = read_events(http, job["eventsUrl"])
    assert read.done and len(read.text) == delivered
    assert_audit_clean()


def test_a_worker_killed_mid_stream_fails_the_job_and_charges_the_delivered_text_once(
    http, fake_upstream, job_body, start_worker
):
    worker = start_worker()
    fake_upstream.script(Reply(chunks=[f"{i:04d}" * 5 for i in range(400)], chunk_delay=0.05))
    job = create(http, job_body())
    seen = read_events(http, job["eventsUrl"], limit=8)

    worker.kill()  # SIGKILL: no cleanup of any kind in the worker
    wait_for(lambda: fake_upstream.disconnects)  # its upstream socket died with it
    assert GenerationJob.objects.get().status == "running" and Hold.objects.get().status == "active"
    later = timezone.now() + timedelta(seconds=settings.GENERATION_JOB_STALE_SECONDS + 1)

    assert services.jobs_reap(now=later) == {"failed": 1, "requeued": 0}

    rest = read_events(
        http, f"/api/v1/generation/jobs/{job['jobId']}/events", headers={"Last-Event-ID": seen.events[-1].id}
    )
    delivered = seen.text + rest.text
    assert rest.done and rest.final["status"] == "failed" and rest.final["error"]["code"] == "worker_lost"
    record = GenerationJob.objects.select_related("generation").get()
    assert (record.status, record.error_code) == ("failed", "worker_lost")
    assert record.generation.output_chars == len(delivered) > 0
    charge = Charge.objects.get()
    assert charge.total_cost == output_cost(len(delivered)) + charge.input_cost
    assert Hold.objects.get().status == "settled"
    # a second sweep, or the message delivered again to a new worker, charges nothing more
    assert services.jobs_reap(now=later) == {"failed": 0, "requeued": 0}
    assert services.job_start(job_id=job["jobId"], worker="another") is None
    status = http.get(f"/api/v1/generation/jobs/{job['jobId']}").json()
    assert status["content"] == delivered and status["consumption"]["totalCost"] == charge.total_cost
    assert Charge.objects.count() == 1
    assert_audit_clean()


def test_a_job_whose_worker_died_before_any_output_runs_once_more(http, fake_upstream, job_body, start_worker):
    worker = start_worker()
    fake_upstream.script(Reply(chunks=CHUNKS, latency=30), Reply(chunks=CHUNKS))  # the first call never answers
    job = create(http, job_body())
    wait_for(lambda: GenerationJob.objects.filter(status="running").exists())
    wait_for(lambda: fake_upstream.completion_requests)
    worker.kill()
    later = timezone.now() + timedelta(seconds=settings.GENERATION_JOB_STALE_SECONDS + 1)

    assert services.jobs_reap(now=later) == {"failed": 0, "requeued": 1}
    start_worker()

    read = read_events(http, job["eventsUrl"])
    assert read.done and read.text == "".join(CHUNKS) and read.final["status"] == "succeeded"
    record = GenerationJob.objects.get()
    assert record.attempts == 2 and record.status == "succeeded"
    assert Charge.objects.count() == 1
    assert_audit_clean()


def test_one_worker_carries_many_jobs_at_once(http, fake_upstream, job_body, start_worker, user):
    from apps.billing.services import wallet_grant

    wallet_grant(user=user, amount=1_000_000)
    Connection.objects.update(max_concurrency=30)  # ten jobs wait for a slot of the busy connection
    start_worker()
    fake_upstream.script(*[Reply(chunks=CHUNKS, chunk_delay=0.1) for _ in range(40)])
    jobs = [create(http, job_body()) for _ in range(40)]

    wait_for(lambda: GenerationJob.objects.filter(status="running").count() >= 30, timeout=30)
    wait_for(lambda: GenerationJob.objects.filter(status="succeeded").count() == 40, timeout=60)
    assert len({r.worker for r in GenerationJob.objects.all()}) == 1
    texts = {read_events(http, job["eventsUrl"]).text for job in jobs}
    assert texts == {"".join(CHUNKS)}
    assert Charge.objects.count() == 40
    assert_audit_clean()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_redis_down_refuses_new_jobs_with_503_and_the_direct_endpoints_keep_working(
    http, fake_upstream, job_body, settings
):
    port = _free_port()
    redis_server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"redis://127.0.0.1:{port}/0"
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).returncode == 0)
        settings.REDIS_URL = url
        settings.CELERY_BROKER_URL = url
        settings.CACHES = {  # the shared cache goes down with it (rate limits, permissions)
            "default": {"BACKEND": "apps.core.cache.SharedRedisCache", "LOCATION": url, "KEY_PREFIX": "ws"}
        }
    finally:
        redis_server.kill()
        redis_server.wait(5)

    refused = http.post("/api/v1/generation/jobs", json=job_body())

    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "5" and refused.json()["statusCode"] == 503
    assert not GenerationJob.objects.exists() and not Hold.objects.exists()
    fake_upstream.script(Reply(chunks=CHUNKS))
    direct = http.post("/api/v1/generation/writing", json={k: v for k, v in job_body().items() if k != "mode"})
    assert direct.status_code == 200, direct.text
    assert direct.json()["content"] == "".join(CHUNKS)
