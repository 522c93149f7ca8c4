"""Connection health end to end: uvicorn → the relay → the fake upstream. A failing primary connection's
circuit opens and its calls go straight to the fallback; when every connection is open the API answers
503 with Retry-After (the envelope on /api, OpenAI's shape on /v1); after the cool-down one probe closes
it again. The breaker's clock is the test's (no sleeping)."""

from __future__ import annotations

import time

import pytest

from apps.billing.services import wallet_grant
from apps.generation.models import Generation
from apps.providers.health import breaker
from tests.fakes.upstream import Reply

pytestmark = pytest.mark.django_db(transaction=True)


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(settings):
    settings.CIRCUIT_FAILURE_THRESHOLD = 2
    settings.CIRCUIT_COOLDOWN_SECONDS = 30
    current = breaker()  # the one the live server's relay uses with these settings
    clock = Clock()
    current.clock = clock
    yield clock


@pytest.fixture
def models(make_model, user):
    wallet_grant(user=user, amount=100_000)
    backup = make_model("backup-model", connection_name="backup")
    return make_model("gpt-4-turbo", connection_name="primary", fallbacks=(backup,)), backup


def body(prompt, **overrides):
    return {"promptId": prompt.pk, "userInput": "写一个开头", "maxTokens": 64, **overrides}


def asked(fake_upstream) -> list[str]:
    return [r.json["model"] for r in fake_upstream.completion_requests]


def test_an_open_circuit_sends_calls_to_the_fallback_then_503_then_a_probe_closes_it(
    http, fake_upstream, models, writing_prompt, clock, caplog
):
    primary, _backup = models
    # given: the primary fails twice (threshold 2) — the fallback answers, and the circuit is open
    fake_upstream.default = Reply(chunks=["备用"])
    fake_upstream.script(Reply(status=500), Reply(status=503))
    answer = http.post("/api/v1/generation/writing", json=body(writing_prompt))
    assert answer.status_code == 200 and answer.json()["model"] == "backup-model"
    assert asked(fake_upstream) == ["up-gpt-4-turbo", "up-gpt-4-turbo", "up-backup-model"]
    assert any("circuit opened: connection primary" in r.getMessage() for r in caplog.records)

    # when: open, no request reaches the primary (streamed or not); the record says why
    fake_upstream.requests.clear()
    answer = http.post("/api/v1/generation/writing", json=body(writing_prompt))
    stream = http.post("/api/v1/generation/writing/stream", json=body(writing_prompt))
    assert answer.json()["content"] == "备用" and "备用" in stream.text
    assert asked(fake_upstream) == ["up-backup-model", "up-backup-model"]
    record = Generation.objects.get(public_id=answer.json()["generationId"])
    assert record.attempts == [
        {"model": "gpt-4-turbo", "error": "circuit_open", "message": "connection primary: circuit open, skipped"}
    ]

    # and when the fallback's connection fails too, every circuit is open: a 503 with Retry-After
    fake_upstream.default = Reply(status=500)
    assert http.post("/api/v1/generation/writing", json=body(writing_prompt)).status_code == 502
    clock.now += 10
    fake_upstream.requests.clear()
    refused = http.post("/api/v1/generation/writing", json=body(writing_prompt))
    assert refused.status_code == 503
    assert refused.headers["Retry-After"] == "20"  # both opened at the clock's T, which is now T + 10
    assert refused.json() == {
        "statusCode": 503,
        "message": "该模型的服务商当前连续出错，请稍后重试。",
        "error": "Service Unavailable",
    }
    streamed = http.post("/api/v1/generation/writing/stream", json=body(writing_prompt))
    assert streamed.status_code == 503 and streamed.json()["statusCode"] == 503
    openai = http.post(
        "/v1/chat/completions",
        json={"model": "gpt-4-turbo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16},
    )
    assert openai.status_code == 503 and "Retry-After" in openai.headers
    assert openai.json()["error"]["code"] == "circuit_open"
    assert openai.json()["error"]["type"] == "server_error"
    assert fake_upstream.requests == []  # nothing reached the upstream
    failed = Generation.objects.filter(error_code="circuit_open")
    assert failed.count() == 3 and all(g.status == "failed" for g in failed)

    # then: after the cool-down the next call probes the primary; its answer closes the circuit
    clock.now += 21
    fake_upstream.default = Reply(chunks=["回来了"])
    answer = http.post("/api/v1/generation/writing", json=body(writing_prompt))
    assert answer.status_code == 200 and answer.json()["model"] == "gpt-4-turbo"
    assert asked(fake_upstream) == ["up-gpt-4-turbo"]
    assert breaker().states([primary.connection_id])[primary.connection_id].opened_at == 0
    assert any("circuit closed: connection primary" in r.getMessage() for r in caplog.records)


def test_user_caused_4xx_never_open_the_circuit(http, fake_upstream, models, writing_prompt, clock):
    primary, _backup = models
    fake_upstream.default = Reply.error(400, "prompt is too long: maximum context length exceeded")
    for _ in range(4):
        assert http.post("/api/v1/generation/writing", json=body(writing_prompt)).status_code == 502
    assert asked(fake_upstream) == ["up-gpt-4-turbo"] * 4  # every call went to the primary, no fallback
    assert breaker().states([primary.connection_id])[primary.connection_id].failures == 0


def test_a_client_that_goes_away_is_no_failure(http, fake_upstream, models, writing_prompt, clock):
    primary, _backup = models
    fake_upstream.default = Reply(chunks=["一", "二", "三"] * 100, chunk_delay=0.05)  # 15 s unless cut
    for _ in range(3):
        with http.stream("POST", "/api/v1/generation/writing/stream", json=body(writing_prompt)) as response:
            for line in response.iter_lines():
                if line.startswith("data: "):
                    break  # the first event, then hang up
    deadline = time.monotonic() + 12
    while len(fake_upstream.disconnects) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(fake_upstream.disconnects) == 3
    assert breaker().states([primary.connection_id])[primary.connection_id].failures == 0
