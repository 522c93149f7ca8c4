"""API 21 end to end: uvicorn → Django → fake upstream over real sockets."""

from __future__ import annotations

import time

import httpx
import orjson
import pytest

from apps.billing.models import Charge, Hold, LedgerEntry, Wallet
from apps.billing.services import wallet_grant
from apps.generation.models import Generation
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

SEED_BODY = {
    "promptId": None,
    "parameters": {"主角名字": "李明", "故事背景": "现代都市", "其他补充": "科幻元素"},
    "userInput": "请帮我写一个故事开头",
    "modelId": "gpt-4-turbo",
    "temperature": 0.7,
    "maxTokens": 2048,
    "stream": False,
    "history": [
        {"role": "user", "content": "我想写一个科幻故事"},
        {"role": "assistant", "content": "好的，我可以帮你！你有什么具体想法吗？"},
    ],
}


@pytest.fixture(autouse=True)
def funds(request, user):
    """Enough paid balance for the seed's maxTokens 2048 hold (2048 × 4 characters), unless a test
    is about running out of it."""
    if "no_funds" not in request.keywords:
        wallet_grant(user=user, amount=100_000)


def seed_body(prompt, **overrides):
    return {**SEED_BODY, "promptId": prompt.pk, **overrides}


def test_non_stream_answers_the_seed_shape_and_upstream_sees_assembled_messages(
    http, fake_upstream, make_model, writing_prompt, settings
):
    settings.BILLING_DAILY_FREE_QUOTA = 100
    make_model()
    fake_upstream.script(Reply(chunks=["在繁华的都市中，", "程序员李明突然发现……"], usage=(512, 256)))
    response = http.post("/api/v1/generation/writing", json=seed_body(writing_prompt))
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"content", "generationId", "model", "usage", "finishReason", "duration", "consumption"}
    assert body["content"] == "在繁华的都市中，程序员李明突然发现……"
    assert body["generationId"].startswith("gen_")
    assert body["model"] == "gpt-4-turbo"
    assert body["usage"] == {"promptTokens": 512, "completionTokens": 256, "totalTokens": 768}
    assert body["finishReason"] == "stop"
    assert isinstance(body["duration"], int) and body["duration"] >= 0
    # 19 output characters, input below the free threshold, the free quota covers it
    assert body["consumption"] == {
        "totalCost": 19,
        "inputCost": 0,
        "outputCost": 19,
        "usedDailyFree": 19,
        "usedPaid": 0,
        "memberBenefitApplied": False,
        "stoppedByBalance": False,
    }
    sent = fake_upstream.completion_requests[-1].json
    assert sent["model"] == "up-gpt-4-turbo" and sent["stream"] is False
    assert sent["max_tokens"] == 2048 and sent["temperature"] == 0.7
    assert sent["messages"] == [
        {"role": "system", "content": "你是一名专业的小说作家。"},
        {"role": "system", "content": "情节设定：现代都市，主角名为李明。"},
        {"role": "user", "content": "我想写一个科幻故事"},
        {"role": "assistant", "content": "好的，我可以帮你！你有什么具体想法吗？"},
        {"role": "user", "content": "请帮我写一个故事开头"},
    ]
    record = Generation.objects.get(public_id=body["generationId"])
    assert record.status == "succeeded" and record.model_used == "gpt-4-turbo"
    assert record.output_chars == 19 and record.content == body["content"]
    assert Charge.objects.get(generation_id=record.public_id).total_cost == 19


def test_stream_relays_each_delta_then_final_event_then_done(http, fake_upstream, make_model, writing_prompt):
    make_model()
    fake_upstream.script(Reply(chunks=["在", "繁华", "的", "都市"], chunk_delay=0.01))
    with http.stream("POST", "/api/v1/generation/writing/stream", json=seed_body(writing_prompt)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        text = response.read().decode()
    events = sse_events(text)
    assert events[:4] == ['{"content":"在"}', '{"content":"繁华"}', '{"content":"的"}', '{"content":"都市"}']
    final = orjson.loads(events[4])
    assert final["content"] == "" and final["finishReason"] == "stop" and final["model"] == "gpt-4-turbo"
    assert final["generationId"].startswith("gen_")
    assert set(final) == {"content", "finishReason", "generationId", "model", "usage", "duration", "consumption"}
    assert final["consumption"]["totalCost"] == 6
    assert events[5] == "[DONE]" and len(events) == 6
    assert fake_upstream.completion_requests[-1].json["stream"] is True


def test_stream_flag_on_the_json_path_streams(http, fake_upstream, make_model, writing_prompt):
    make_model()
    response = http.post("/api/v1/generation/writing", json=seed_body(writing_prompt, stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    assert sse_events(response.text)[-1] == "[DONE]"


def test_deltas_are_relayed_as_they_arrive(http, fake_upstream, make_model, writing_prompt):
    make_model()
    fake_upstream.script(Reply(chunks=["first", "second"], chunk_delay=0.6))
    arrivals = []
    with http.stream("POST", "/api/v1/generation/writing/stream", json=seed_body(writing_prompt)) as response:
        started = time.monotonic()
        for line in response.iter_lines():
            if line.startswith('data: {"content":"first'):
                arrivals.append(time.monotonic() - started)
            if line.startswith('data: {"content":"second'):
                arrivals.append(time.monotonic() - started)
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] > 0.4  # the first was not held back until the second


def test_reasoning_is_relayed_separately_and_billed(http, fake_upstream, make_model, writing_prompt):
    make_model()
    fake_upstream.script(Reply(chunks=["答"], reasoning=["想一想"]))
    events = sse_events(http.post("/api/v1/generation/writing/stream", json=seed_body(writing_prompt)).text)
    assert orjson.loads(events[0]) == {"content": "", "reasoning": "想一想"}
    assert orjson.loads(events[1]) == {"content": "答"}
    assert orjson.loads(events[2])["consumption"]["outputCost"] == 4


def test_fallback_model_answers_after_primary_fails_before_first_token(http, fake_upstream, make_model, writing_prompt):
    backup = make_model("backup-model")
    make_model("gpt-4-turbo", fallbacks=(backup,))
    fake_upstream.script(Reply(status=500), Reply(status=503), Reply(chunks=["备用"]))
    body = http.post("/api/v1/generation/writing", json=seed_body(writing_prompt)).json()
    assert body["model"] == "backup-model" and body["content"] == "备用"
    assert [r.json["model"] for r in fake_upstream.completion_requests] == [
        "up-gpt-4-turbo",
        "up-gpt-4-turbo",
        "up-backup-model",
    ]
    record = Generation.objects.get(public_id=body["generationId"])
    assert record.model_requested == "gpt-4-turbo" and record.model_used == "backup-model"
    assert [a["model"] for a in record.attempts] == ["gpt-4-turbo", "gpt-4-turbo"]


@pytest.mark.parametrize(
    ("reply", "status", "retry_after"),
    [
        (Reply(status=500), 502, None),
        (Reply(status=429, headers={"Retry-After": "1"}), 429, "1"),
        (Reply(status=401), 502, None),
        (Reply(hang=True), 504, None),
    ],
)
def test_final_upstream_failure_is_a_json_error_and_nothing_is_charged(
    http, fake_upstream, make_model, writing_prompt, user, reply, status, retry_after
):
    make_model(read_timeout=0.5)
    fake_upstream.default = reply
    for path in ("/api/v1/generation/writing", "/api/v1/generation/writing/stream"):
        response = http.post(path, json=seed_body(writing_prompt))
        assert response.status_code == status, response.text
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["statusCode"] == status and body["message"]
        assert "sk-test-secret" not in response.text
        if retry_after:
            assert response.headers["retry-after"] == retry_after
    assert Charge.objects.count() == 0
    assert set(Hold.objects.values_list("status", flat=True)) == {"released"}
    wallet = Wallet.objects.get(pk=user.pk)
    assert (wallet.paid_balance, wallet.paid_held) == (100_000, 0)
    assert set(Generation.objects.values_list("status", flat=True)) == {"failed"}


def test_failure_after_first_token_is_an_error_event_then_done(http, fake_upstream, make_model, writing_prompt):
    make_model()
    fake_upstream.script(Reply(chunks=["一", "二", "三"], reset_after=2))
    response = http.post("/api/v1/generation/writing/stream", json=seed_body(writing_prompt))
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[:2] == ['{"content":"一"}', '{"content":"二"}']
    error = orjson.loads(events[2])
    assert error["content"] == "" and error["error"]["statusCode"] == 502 and error["error"]["error"] == "Bad Gateway"
    assert events[3] == "[DONE]"
    record = Generation.objects.get()
    assert record.status == "failed" and record.content == "一二"
    assert Charge.objects.count() == 0


def test_client_disconnect_stops_upstream_and_records_cancelled(
    live_server_url, token, fake_upstream, make_model, writing_prompt
):
    make_model()
    fake_upstream.script(Reply(chunks=[f"片段{i}" for i in range(200)], chunk_delay=0.05))
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=live_server_url, headers=headers) as client,
        client.stream("POST", "/api/v1/generation/writing/stream", json=seed_body(writing_prompt)) as response,
    ):
        received = 0
        for line in response.iter_lines():
            if line.startswith('data: {"content":"片段'):
                received += 1
            if received == 3:
                break
    # the upstream saw the client go away promptly, long before its 200 chunks
    deadline = time.monotonic() + 5
    while not fake_upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_upstream.disconnects and fake_upstream.disconnects[0].events_sent < 100
    deadline = time.monotonic() + 5
    while Generation.objects.get().status == "pending" and time.monotonic() < deadline:
        time.sleep(0.02)
    record = Generation.objects.get()
    assert record.status == "cancelled"
    assert record.content.startswith("片段0片段1片段2")
    charge = Charge.objects.get(generation_id=record.public_id)
    assert charge.output_chars == len(record.content) and charge.total_cost == len(record.content)
    assert Hold.objects.get().status == "settled"


def test_validation_errors_touch_nothing(http, fake_upstream, make_model, writing_prompt):
    make_model()
    cases = [
        ({}, "promptId"),
        ({"promptId": writing_prompt.pk, "temperature": 2.5}, "temperature"),
        ({"promptId": writing_prompt.pk, "maxTokens": 0}, "maxTokens"),
        ({"promptId": writing_prompt.pk, "maxTokens": 5000}, "maxTokens"),
        ({"promptId": writing_prompt.pk, "history": [{"role": "robot", "content": "x"}]}, "history.0.role"),
        ({"promptId": writing_prompt.pk, "history": [{"role": "user"}]}, "history.0.content"),
        ({"promptId": writing_prompt.pk, "modelId": "nope"}, "modelId"),
        ({"promptId": writing_prompt.pk, "parameters": {"a": {"b": 1}}}, "parameters.a"),
    ]
    for body, field in cases:
        response = http.post("/api/v1/generation/writing", json=body)
        assert response.status_code == 400, (body, response.text)
        assert field in response.json()["details"], (body, response.json())
    assert Generation.objects.count() == 0 and Hold.objects.count() == 0 and not fake_upstream.completion_requests


def test_errors_raised_in_the_database_step_speak_the_requests_language(http, make_model, writing_prompt):
    """The step runs on another thread: the request's language must follow it there."""
    make_model()
    body = {"promptId": writing_prompt.pk, "maxTokens": 5000}
    english = http.post("/api/v1/generation/writing", json=body, headers={"Accept-Language": "en"}).json()
    chinese = http.post("/api/v1/generation/writing", json=body).json()
    assert english["message"] == "maxTokens must be at most 4096 for model gpt-4-turbo."
    assert chinese["message"] != english["message"] and "4096" in chinese["message"]


def test_prompt_errors_are_the_seeds_exact_messages(http, other_user, make_model, fake_upstream):
    from apps.prompts.models import Prompt

    make_model()
    private = Prompt.objects.create(author=other_user, title="别人的")
    assert http.post("/api/v1/generation/writing", json={"promptId": private.pk}).json() == {
        "statusCode": 400,
        "message": "无权使用此提示词",
        "error": "Bad Request",
    }
    assert http.post("/api/v1/generation/writing", json={"promptId": 999999}).json() == {
        "statusCode": 404,
        "message": "提示词 ID=999999 不存在",
        "error": "Not Found",
    }
    assert Generation.objects.count() == 0


def test_without_permission_403(http, user, writing_prompt, make_model):
    make_model()
    user.groups.clear()
    response = http.post("/api/v1/generation/writing", json={"promptId": writing_prompt.pk})
    assert response.status_code == 403 and response.json()["statusCode"] == 403
    stream = http.post(
        "/api/v1/generation/writing/stream",
        json={"promptId": writing_prompt.pk},
        headers={"Accept": "text/event-stream"},
    )
    assert stream.status_code == 403 and stream.headers["content-type"] == "application/json"
    assert Generation.objects.count() == 0


def test_unauthenticated_401(live_server_url, writing_prompt):
    response = httpx.post(f"{live_server_url}/api/v1/generation/writing", json={"promptId": writing_prompt.pk})
    assert response.status_code == 401 and response.json()["statusCode"] == 401


def test_history_is_trimmed_oldest_first_to_fit_the_budget(http, fake_upstream, make_model, writing_prompt):
    # budget = 300 - 100 = 200 tokens; each history message of 335 characters is 100 tokens
    make_model(context_tokens=300, max_output_tokens=100)
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": str(i) * 335} for i in range(4)]
    response = http.post(
        "/api/v1/generation/writing",
        json={"promptId": writing_prompt.pk, "history": history, "maxTokens": 100, "userInput": "续写"},
    )
    assert response.status_code == 200, response.text
    sent = [m["content"] for m in fake_upstream.completion_requests[-1].json["messages"]]
    assert sent[:2] == [
        "你是一名专业的小说作家。",
        "情节设定：{{故事背景}}，主角名为{{主角名字}}。",
    ]  # unknown: verbatim
    assert sent[2:] == ["3" * 335, "续写"]
    record = Generation.objects.get()
    assert record.history_dropped == 3


def test_prompt_too_large_for_context_is_400_with_both_numbers(http, fake_upstream, make_model, writing_prompt):
    make_model(context_tokens=120, max_output_tokens=100)
    response = http.post(
        "/api/v1/generation/writing", json={"promptId": writing_prompt.pk, "maxTokens": 100, "userInput": "字" * 100}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["budgetTokens"] == 20 and body["neededTokens"] == 43  # 4 + 9 + 30 (⌈chars / 3.35⌉ each)
    assert "43" in body["message"] and "20" in body["message"]
    assert Generation.objects.count() == 0 and not fake_upstream.completion_requests


def test_generation_records_are_listed_for_their_owner_only(
    http, fake_upstream, make_model, writing_prompt, make_client, other_user
):
    make_model()
    gid = http.post("/api/v1/generation/writing", json=seed_body(writing_prompt)).json()["generationId"]
    listing = http.get("/api/v1/generations").json()
    assert listing["total"] == 1 and listing["items"][0]["generationId"] == gid
    assert listing["items"][0]["status"] == "succeeded"
    detail = http.get(f"/api/v1/generations/{gid}").json()
    assert detail["content"] == "Hello, world!" and detail["model"] == "gpt-4-turbo"
    other = make_client(other_user)
    assert other.get(f"/api/v1/generations/{gid}").status_code == 404
    assert other.get("/api/v1/generations").json()["total"] == 0


@pytest.mark.no_funds
def test_paid_balance_pays_after_daily_free_quota(http, fake_upstream, make_model, writing_prompt, user, settings):
    settings.BILLING_DAILY_FREE_QUOTA = 5
    make_model()
    wallet_grant(user=user, amount=100)
    fake_upstream.script(Reply(chunks=["一二三四五六七八"]))
    body = http.post("/api/v1/generation/writing", json=seed_body(writing_prompt, maxTokens=10)).json()
    assert body["consumption"] == {
        "totalCost": 8,
        "inputCost": 0,
        "outputCost": 8,
        "usedDailyFree": 5,
        "usedPaid": 3,
        "memberBenefitApplied": False,
        "stoppedByBalance": False,
    }
    assert Wallet.objects.get(pk=user.pk).paid_balance == 97
    entry = LedgerEntry.objects.filter(kind="charge").get()
    assert entry.amount == -3 and entry.balance_after == 97 and entry.generation_id == body["generationId"]


def test_the_stream_endpoint_records_a_streamed_generation(http, fake_upstream, make_model, writing_prompt):
    make_model()
    response = http.post("/api/v1/generation/writing/stream", json=seed_body(writing_prompt, stream=False))
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    assert Generation.objects.get().stream is True  # was recorded from the body's `stream` (false)
