"""Resumable generations on the embedded default (no Redis): jobs run in the server process, their events
in its memory — the same API as with workers (tests/jobs/test_jobs_workers.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from apps.billing.models import Charge, Hold
from apps.generation.models import Generation, GenerationJob
from tests.fakes.upstream import Reply
from tests.generation.jobs_support import create, read_events, wait_for

pytestmark = pytest.mark.django_db(transaction=True)

CHUNKS = [f"第{i}段。" for i in range(20)]


@pytest.fixture(autouse=True)
def _in_process(settings: Any) -> None:
    settings.REDIS_URL = ""


def test_a_job_is_read_to_the_end_with_its_ticket_alone(http, fake_upstream, job_body):
    fake_upstream.script(Reply(chunks=CHUNKS, chunk_delay=0.01))

    created = http.post("/api/v1/generation/jobs", json=job_body())

    assert created.status_code == 202, created.text
    job = created.json()
    assert job["status"] == "queued" and job["jobId"].startswith("job_")
    assert created.headers["Location"] == f"/api/v1/generation/jobs/{job['jobId']}"
    assert "?ticket=" in job["eventsUrl"] and "wst_" not in job["eventsUrl"]
    read = read_events(http, job["eventsUrl"], headers={"Authorization": ""})
    assert read.done and read.text == "".join(CHUNKS)
    assert all(e.id for e in read.events)
    final = read.final
    assert final["status"] == "succeeded" and final["finishReason"] == "stop"
    assert final["consumption"]["totalCost"] > 0 and final["generationId"] == job["generationId"]

    status = http.get(f"/api/v1/generation/jobs/{job['jobId']}").json()
    assert status["status"] == "succeeded" and status["content"] == "".join(CHUNKS)
    assert status["consumption"] == final["consumption"]
    record = Generation.objects.get(public_id=job["generationId"])
    assert record.status == "succeeded" and record.output_chars == len("".join(CHUNKS))
    assert Charge.objects.get().total_cost == final["consumption"]["totalCost"]
    assert GenerationJob.objects.get().payload == {}


def test_a_reader_that_drops_resumes_from_last_event_id_byte_exact(http, fake_upstream, job_body):
    fake_upstream.script(Reply(chunks=CHUNKS, chunk_delay=0.05))
    job = create(http, job_body())
    url = f"/api/v1/generation/jobs/{job['jobId']}/events"

    first = read_events(http, url, limit=5)
    rest = read_events(http, url, headers={"Last-Event-ID": first.events[-1].id})
    whole = read_events(http, url)

    assert [e.data for e in first.events + rest.events] == [e.data for e in whole.events]
    assert [e.id for e in first.events + rest.events] == [e.id for e in whole.events]
    assert first.text + rest.text == "".join(CHUNKS) and rest.done
    # ?after= works the same, and the header wins over it
    after = read_events(http, f"{url}?after={first.events[1].id}", headers={"Last-Event-ID": first.events[-1].id})
    assert [e.data for e in after.events] == [e.data for e in rest.events]
    again = read_events(http, f"{url}?after={first.events[-1].id}")
    assert [e.data for e in again.events] == [e.data for e in rest.events]


def test_two_readers_at_once_get_the_same_events(http, fake_upstream, job_body):
    fake_upstream.script(Reply(chunks=CHUNKS, chunk_delay=0.03))
    job = create(http, job_body())
    reads: list[Any] = []
    threads = [threading.Thread(target=lambda: reads.append(read_events(http, job["eventsUrl"]))) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(reads) == 2 and reads[0].events == reads[1].events and reads[0].done


def test_cancel_mid_stream_charges_the_delivered_text(http, fake_upstream, job_body):
    fake_upstream.script(Reply(chunks=[f"{i:03d}" * 10 for i in range(200)], chunk_delay=0.05))
    job = create(http, job_body())
    first = read_events(http, job["eventsUrl"], limit=3)

    cancelled = http.post(f"/api/v1/generation/jobs/{job['jobId']}/cancel")

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled" and body["finishReason"] is None
    delivered = body["content"]
    assert delivered.startswith(first.text) and 0 < len(delivered) < 6000
    assert body["consumption"]["totalCost"] == Charge.objects.get().total_cost > 0
    record = Generation.objects.get(public_id=job["generationId"])
    assert record.status == "cancelled" and record.output_chars == len(delivered)
    wait_for(lambda: fake_upstream.disconnects)  # the upstream call was stopped
    read = read_events(http, job["eventsUrl"])
    assert read.done and read.text == delivered and read.final["status"] == "cancelled"
    # cancelling again changes nothing
    again = http.post(f"/api/v1/generation/jobs/{job['jobId']}/cancel").json()
    assert again["consumption"] == body["consumption"] and Charge.objects.count() == 1


def test_a_job_cancelled_while_queued_releases_its_hold_and_never_runs(http, fake_upstream, job_body, monkeypatch):
    from apps.generation.jobs import services

    queued: list[str] = []
    monkeypatch.setattr(services, "job_enqueue", queued.append)  # no worker takes it yet
    job = create(http, job_body())
    assert queued == [job["jobId"]] and Hold.objects.get().status == "active"

    cancelled = http.post(f"/api/v1/generation/jobs/{job['jobId']}/cancel").json()

    assert cancelled["status"] == "cancelled" and cancelled["consumption"]["totalCost"] == 0
    assert Hold.objects.get().status == "released" and not Charge.objects.exists()
    assert Generation.objects.get().status == "cancelled"
    read = read_events(http, job["eventsUrl"])
    assert read.done and read.final["status"] == "cancelled" and read.text == ""
    # a worker taking the message later finds nothing to run
    from apps.generation.jobs.runner import runner

    assert runner().submit(job["jobId"]).result(10) is None
    assert not fake_upstream.completion_requests


def test_an_upstream_failure_fails_the_job_and_charges_nothing(http, fake_upstream, job_body):
    fake_upstream.script(Reply(chunks=["partial "] * 3, reset_after=2))
    job = create(http, job_body())

    read = read_events(http, job["eventsUrl"])

    assert read.done and read.final["status"] == "failed"
    assert read.final["error"]["statusCode"] == 502 and read.final["error"]["code"].startswith("upstream_")
    status = http.get(f"/api/v1/generation/jobs/{job['jobId']}").json()
    assert status["status"] == "failed" and status["error"]["code"] == read.final["error"]["code"]
    assert status["consumption"]["totalCost"] == 0 and not Charge.objects.exists()
    assert Hold.objects.get().status == "released"


@pytest.mark.no_funds
def test_402_and_validation_errors_come_before_any_job(http, fake_upstream, job_body, settings):
    settings.BILLING_DAILY_FREE_QUOTA = 0
    refused = http.post("/api/v1/generation/jobs", json=job_body())
    assert refused.status_code == 402, refused.text
    assert refused.json()["statusCode"] == 402

    for body, field in [
        ({k: v for k, v in job_body().items() if k != "mode"}, "mode"),
        (job_body(mode="chat"), "mode"),
        (job_body(promptId="x"), "promptId"),
        (job_body(temperature=9), "temperature"),
    ]:
        response = http.post("/api/v1/generation/jobs", json=body)
        assert response.status_code == 400, response.text
        assert field in response.json()["details"]
    assert http.post("/api/v1/generation/jobs", json=job_body(promptId=999999)).status_code == 404
    assert http.post("/api/v1/generation/jobs", json=[1, 2]).status_code == 400
    assert not GenerationJob.objects.exists() and not Hold.objects.exists() and not Generation.objects.exists()
    assert not fake_upstream.completion_requests


def test_only_the_owner_reads_or_cancels_and_tickets_are_scoped(
    http, fake_upstream, job_body, live_server_url, other_user, settings
):
    import httpx

    from apps.accounts.services import token_create
    from apps.generation.jobs.services import job_ticket

    fake_upstream.script(Reply(chunks=CHUNKS), Reply(chunks=CHUNKS))
    one = create(http, job_body())
    two = create(http, job_body())
    read_events(http, one["eventsUrl"])
    other = {"Authorization": f"Bearer {token_create(user=other_user).token}"}
    with httpx.Client(base_url=live_server_url, timeout=10) as anon:
        for path in ("", "/events"):
            assert anon.get(f"/api/v1/generation/jobs/{one['jobId']}{path}", headers=other).status_code == 404
            assert anon.get(f"/api/v1/generation/jobs/{one['jobId']}{path}").status_code == 401
        assert anon.post(f"/api/v1/generation/jobs/{one['jobId']}/cancel", headers=other).status_code == 404
        assert anon.get("/api/v1/generation/jobs/job_nope/events", headers=other).status_code == 404
        # a ticket reads its own job's events only, and nothing else
        ticket = one["eventsUrl"].split("ticket=")[1]
        assert anon.get(f"/api/v1/generation/jobs/{two['jobId']}/events?ticket={ticket}").status_code == 401
        assert anon.get(f"/api/v1/generation/jobs/{one['jobId']}?ticket={ticket}").status_code == 401
        assert anon.get(f"/api/v1/generation/jobs/{one['jobId']}/events?ticket=forged").status_code == 401
        forged = job_ticket(job_id=one["jobId"], user_id=other_user.pk)  # signed, but not the owner's
        assert anon.get(f"/api/v1/generation/jobs/{one['jobId']}/events?ticket={forged}").status_code == 404
        ok = anon.get(one["eventsUrl"])
        assert ok.status_code == 200 and ok.text.endswith("data: [DONE]\n\n")
        settings.GENERATION_JOB_TICKET_SECONDS = -1  # every ticket has expired
        expired = anon.get(one["eventsUrl"])
        assert expired.status_code == 401 and "eventsUrl" in expired.json()["message"]


def test_bad_event_ids_and_expired_events(http, fake_upstream, job_body):
    from apps.generation.jobs.log import event_log

    fake_upstream.script(Reply(chunks=CHUNKS))
    job = create(http, job_body())
    read_events(http, job["eventsUrl"])
    url = f"/api/v1/generation/jobs/{job['jobId']}/events"
    for bad in ("abc", "1-2-3", "9" * 30 + "-0", "-1"):
        response = http.get(url, headers={"Last-Event-ID": bad})
        assert response.status_code == 400, bad
        assert http.get(url, params={"after": bad}).status_code == 400

    event_log().expire(job["jobId"], 0)

    gone = http.get(url)
    assert gone.status_code == 410 and job["jobId"] in gone.json()["message"]
    kept = http.get(f"/api/v1/generation/jobs/{job['jobId']}").json()
    assert kept["status"] == "succeeded" and kept["content"] == "".join(CHUNKS)


def test_a_roleplay_job_writes_the_turn_into_the_chat(http, fake_upstream, job_body, user):
    from apps.characters.services import character_create
    from apps.generation.models import ChatMessage
    from apps.novels.models import Novel
    from tests.generation.test_roleplay_e2e import CARD

    job_body()  # the model and a balance
    novel = Novel.objects.create(owner=user, title="林")
    character = character_create(user=user, novel_id=novel.pk, card=CARD)
    chat = http.post("/api/v1/chats", json={"characterId": character.pk}).json()
    fake_upstream.script(Reply(chunks=["*Sera ", "nods.*"]))

    job = create(http, {"mode": "roleplay", "chatId": chat["id"], "userInput": "Hello", "maxTokens": 500})
    read = read_events(http, job["eventsUrl"])

    assert read.done and read.text == "*Sera nods.*" and read.final["status"] == "succeeded"
    message = ChatMessage.objects.get(pk=read.final["messageId"])
    assert message.content == "*Sera nods.*" and message.chat_id == chat["id"]
    assert http.get(f"/api/v1/generation/jobs/{job['jobId']}").json()["messageId"] == message.pk
    assert ChatMessage.objects.filter(chat_id=chat["id"], role="user").get().content == "Hello"


def test_a_silent_job_sends_pings_to_its_readers(http, fake_upstream, job_body, monkeypatch):
    from apps.generation.jobs import api

    monkeypatch.setattr(api, "PING_INTERVAL", 0.1)
    fake_upstream.script(Reply(chunks=CHUNKS[:2], latency=1.0))
    job = create(http, job_body())

    read = read_events(http, job["eventsUrl"])

    assert read.done and read.text == "".join(CHUNKS[:2]) and read.pings >= 3


def test_the_error_of_a_failed_job_has_the_status_its_direct_call_would_have():
    from apps.generation.jobs.selectors import UPSTREAM_STATUS, job_error
    from apps.generation.relay import upstream_api_error
    from apps.providers.adapters import UpstreamLoading, UpstreamRateLimited, UpstreamServerError, UpstreamTimeout

    for error in (UpstreamTimeout("t"), UpstreamRateLimited("r"), UpstreamLoading("l"), UpstreamServerError("s")):
        assert UPSTREAM_STATUS[error.code] == upstream_api_error(error).status_code
    assert UPSTREAM_STATUS["upstream_loading"] == 503 and UPSTREAM_STATUS["upstream_timeout"] == 504
    assert job_error("worker_lost")[0] == 503 and job_error("something_else")[0] == 502


def test_the_end_of_a_job_is_published_once(http, fake_upstream, job_body):
    from apps.generation.jobs import services
    from apps.generation.jobs.log import event_log

    fake_upstream.script(Reply(chunks=CHUNKS[:3]))
    job = create(http, job_body())
    read = read_events(http, job["eventsUrl"])
    log = event_log()
    assert log.last(job["jobId"]).done and len(log.entries(job["jobId"])) == len(read.events)

    services._publish_end(job["jobId"], {"content": "", "status": "failed"})  # e.g. a late recovery

    assert len(log.entries(job["jobId"])) == len(read.events)
