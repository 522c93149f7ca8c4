"""The OpenAI-compatible API with the real `openai` SDK as the client (uvicorn → Django → fake upstream
over real sockets): models, chat completions (sync, async, streamed with usage), reasoning, the SDK's
own exception classes, records and billing."""

from __future__ import annotations

import asyncio
import time

import httpx
import openai
import orjson
import pytest

from apps.accounts.services import token_create
from apps.billing.models import Charge, Hold
from apps.billing.services import membership_extend, wallet_grant
from apps.generation.models import Generation
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

MESSAGES = [
    {"role": "system", "content": "你是一名专业的小说作家。"},
    {"role": "developer", "content": "情节设定：现代都市，主角名为李明。"},
    {"role": "user", "content": [{"type": "text", "text": "请写"}, {"type": "text", "text": "开头"}]},
]


@pytest.fixture(autouse=True)
def funds(request, user):
    if "no_funds" not in request.keywords:
        wallet_grant(user=user, amount=100_000)


# --- models ---------------------------------------------------------------------------------------


def test_models_list_and_retrieve(client, make_model):
    make_model("gpt-4-turbo", context_tokens=8192, max_output_tokens=4096, output_ratio="2")
    make_model("deepseek/chat", is_free=True)

    models = client.models.list()

    assert [m.id for m in models.data] == ["deepseek/chat", "gpt-4-turbo"]
    gpt = models.data[1]
    assert (gpt.object, gpt.owned_by) == ("model", "writing-service") and gpt.created > 0
    assert gpt.model_extra["context_length"] == 8192 and gpt.model_extra["output_ratio"] == 2.0
    assert client.models.retrieve("deepseek/chat").model_extra["is_free"] is True  # an id with a slash
    with pytest.raises(openai.NotFoundError) as missing:
        client.models.retrieve("nope")
    assert missing.value.code == "model_not_found"


# --- chat completions -----------------------------------------------------------------------------


def test_chat_completion_answers_bills_and_records(client, fake_upstream, make_model, user):
    make_model()
    fake_upstream.script(Reply(chunks=["在繁华的都市中，", "李明醒来。"], usage=(30, 9)))

    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4-turbo", messages=MESSAGES, max_tokens=100, temperature=0.5, top_p=0.9, seed=7
    )
    completion = raw.parse()

    assert completion.choices[0].message.content == "在繁华的都市中，李明醒来。"
    assert completion.choices[0].finish_reason == "stop" and completion.object == "chat.completion"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (30, 9)
    consumption = completion.usage.model_extra["consumption"]
    assert consumption == {
        "totalCost": 13,
        "inputCost": 0,
        "outputCost": 13,
        "usedDailyFree": 13,
        "usedPaid": 0,
        "memberBenefitApplied": False,
        "stoppedByBalance": False,
    }
    assert raw.headers["X-Consumption-Total"] == "13"
    assert raw.headers["X-Balance-Remaining"] == str(100_000 + 2000 - 13)
    # the client's messages, as they are: developer is a system message, text parts joined
    sent = fake_upstream.completion_requests[-1].json
    assert sent["messages"] == [
        {"role": "system", "content": "你是一名专业的小说作家。"},
        {"role": "system", "content": "情节设定：现代都市，主角名为李明。"},
        {"role": "user", "content": "请写\n开头"},
    ]
    assert (sent["max_tokens"], sent["temperature"]) == (100, 0.5)
    record = Generation.objects.get(public_id=completion.id)
    assert (record.mode, record.status, record.output_chars, record.total_cost) == ("chat", "succeeded", 13, 13)


@pytest.mark.parametrize(
    ("input_ratio", "output_ratio", "member", "input_cost", "output_cost"),
    [
        ("1.5", "0.5", False, 6_686, 10),  # ⌈10 029 / 1.5⌉, ⌈5 / 0.5⌉
        ("1", "1", True, 10_029, 0),  # a member: the output is free, the long input is not
        ("2", "3", False, 5_015, 2),  # ⌈10 029 / 2⌉, ⌈5 / 3⌉
    ],
)
def test_the_same_text_costs_the_same_as_writing_mode(
    client,
    http,
    fake_upstream,
    make_model,
    writing_prompt,
    user,
    input_ratio,
    output_ratio,
    member,
    input_cost,
    output_cost,
):
    make_model(input_ratio=input_ratio, output_ratio=output_ratio)
    if member:
        membership_extend(user=user, days=30)
    long_input = "长" * 10_000  # above the input threshold: the input is charged too
    fake_upstream.script(Reply(chunks=["一二三四五"]), Reply(chunks=["一二三四五"]))

    chat = client.chat.completions.create(
        model="gpt-4-turbo",
        messages=[
            {"role": "system", "content": "你是一名专业的小说作家。"},
            {"role": "system", "content": "情节设定：现代都市，主角名为李明。"},
            {"role": "user", "content": long_input},
        ],
        max_tokens=50,
    )
    writing = http.post(
        "/api/v1/generation/writing",
        json={
            "promptId": writing_prompt.pk,
            "parameters": {"主角名字": "李明", "故事背景": "现代都市"},
            "userInput": long_input,
            "maxTokens": 50,
        },
    ).json()

    v1 = chat.usage.model_extra["consumption"]
    for consumption in (v1, writing["consumption"]):
        assert (consumption["inputCost"], consumption["outputCost"]) == (input_cost, output_cost)
        assert consumption["totalCost"] == input_cost + output_cost
        assert consumption["memberBenefitApplied"] is member
    # free quota first: the first call took what the day's quota covers, the second call the rest
    quota = 10_000 if member else 2000
    assert v1["usedDailyFree"] == min(quota, input_cost + output_cost)
    assert writing["consumption"]["usedDailyFree"] == min(quota - v1["usedDailyFree"], input_cost + output_cost)


def test_streaming_with_usage(client, fake_upstream, make_model):
    make_model()
    fake_upstream.script(Reply(chunks=["甲", "乙", "丙"], reasoning=["想", "一想"]))

    stream = client.chat.completions.create(
        model="gpt-4-turbo", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    assert chunks[0].choices[0].delta.role == "assistant"
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    reasoning = "".join((d.model_extra or {}).get("reasoning_content") or "" for d in deltas)
    content = "".join(d.content or "" for d in deltas)
    assert (reasoning, content) == ("想一想", "甲乙丙")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == 5
    assert usage.model_extra["consumption"]["totalCost"] == 6  # reasoning is billed as output
    assert len({c.id for c in chunks}) == 1 and Generation.objects.get().public_id == chunks[0].id


def test_async_client(live_server_url, token, fake_upstream, make_model):
    make_model()
    fake_upstream.script(Reply(chunks=["异步"]))

    async def call():
        async with openai.AsyncOpenAI(base_url=f"{live_server_url}/v1", api_key=token, max_retries=0) as sdk:
            return await sdk.chat.completions.create(model="gpt-4-turbo", messages=MESSAGES)

    assert asyncio.run(call()).choices[0].message.content == "异步"


def test_a_token_limited_to_v1_and_an_x_api_key(live_server_url, user, fake_upstream, make_model):
    make_model()
    issued = token_create(user=user, scope="openai")
    headers = {"x-api-key": issued.token}
    with httpx.Client(base_url=live_server_url, headers=headers) as raw:
        assert raw.get("/v1/models").status_code == 200
        response = raw.post("/v1/chat/completions", json={"model": "gpt-4-turbo", "messages": MESSAGES})
        assert response.status_code == 200, response.text
        assert raw.get("/api/v1/generations", headers={"Authorization": f"Bearer {issued.token}"}).status_code == 401


# --- errors in OpenAI's shape, as the SDK's exception classes --------------------------------------


def test_errors_are_the_sdks_exception_classes(live_server_url, client, make_model, settings):
    make_model()
    stranger = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key="wst_wrong", max_retries=0)
    with stranger, pytest.raises(openai.AuthenticationError) as unauthenticated:
        stranger.models.list()
    assert unauthenticated.value.body["type"] == "invalid_request_error"
    assert unauthenticated.value.code == "invalid_api_key"

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="gpt-5-ultra", messages=MESSAGES)
    assert (missing.value.code, missing.value.param) == ("model_not_found", "model")

    with pytest.raises(openai.BadRequestError) as several:
        client.chat.completions.create(model="gpt-4-turbo", messages=MESSAGES, n=2)
    assert several.value.param == "n" and several.value.body["type"] == "invalid_request_error"

    with pytest.raises(openai.BadRequestError) as too_hot:
        client.chat.completions.create(model="gpt-4-turbo", messages=MESSAGES, temperature=3)
    assert too_hot.value.param == "temperature"

    with pytest.raises(openai.BadRequestError) as role:
        client.chat.completions.create(model="gpt-4-turbo", messages=[{"role": "narrator", "content": "x"}])
    assert role.value.param == "messages.0.role"

    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model="gpt-4-turbo", messages=MESSAGES, max_tokens=5000)
    assert too_long.value.param == "max_tokens"


@pytest.mark.no_funds
def test_no_funds_is_a_402_insufficient_quota(client, make_model, settings, fake_upstream):
    settings.BILLING_DAILY_FREE_QUOTA = 0
    make_model()

    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(model="gpt-4-turbo", messages=MESSAGES)

    assert refused.value.status_code == 402
    assert refused.value.body["type"] == "insufficient_quota" and refused.value.code == "insufficient_quota"
    assert not Generation.objects.exists() and not fake_upstream.completion_requests


def test_rate_limits_are_429_with_retry_after(client, make_model, settings):
    make_model()
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "2/min"},
    }
    client.models.list()
    client.models.list()
    with pytest.raises(openai.RateLimitError) as limited:
        client.models.list()
    assert limited.value.response.headers["Retry-After"].isdigit()
    assert limited.value.code == "rate_limit_exceeded"


def test_unknown_routes_are_openai_shaped_404s(live_server_url, token):
    response = httpx.get(f"{live_server_url}/v1/embeddings", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_failure_after_the_stream_started_is_an_error_event(live_server_url, token, fake_upstream, make_model):
    make_model()
    fake_upstream.script(Reply(chunks=["半", "句", "话"], reset_after=2))
    body = {"model": "gpt-4-turbo", "messages": MESSAGES, "stream": True}

    with httpx.Client(base_url=live_server_url, headers={"Authorization": f"Bearer {token}"}, timeout=20) as raw:
        events = sse_events(raw.post("/v1/chat/completions", json=body).text)

    assert events[-1] == "[DONE]"
    error = orjson.loads(events[-2])["error"]
    assert error["type"] == "api_error" and error["message"]
    assert "".join(orjson.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-2]) == "半句"
    record = Generation.objects.get()
    assert record.status == "failed" and not Charge.objects.filter(total_cost__gt=0).exists()


def test_a_client_that_hangs_up_stops_the_upstream_and_pays_for_what_it_got(
    live_server_url, token, fake_upstream, make_model
):
    make_model()
    fake_upstream.script(Reply(chunks=[f"片{i}" for i in range(200)], chunk_delay=0.05))
    body = {"model": "gpt-4-turbo", "messages": MESSAGES, "stream": True}
    headers = {"Authorization": f"Bearer {token}"}

    with (
        httpx.Client(base_url=live_server_url, headers=headers) as raw,
        raw.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        received = 0
        for line in response.iter_lines():
            if '"content":"片' in line:
                received += 1
            if received == 3:
                break

    deadline = time.monotonic() + 5
    while (
        not fake_upstream.disconnects or Generation.objects.get().status == "pending"
    ) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert fake_upstream.disconnects and fake_upstream.disconnects[0].events_sent < 100
    record = Generation.objects.get()
    assert record.status == "cancelled" and record.content.startswith("片0片1片2")
    assert Charge.objects.get().output_chars == len(record.content)
    assert Hold.objects.get().status == "settled"


def test_a_member_pays_no_output_and_free_models_nothing(client, fake_upstream, make_model, user):
    make_model()
    make_model("free-model", is_free=True)
    membership_extend(user=user, days=30)
    fake_upstream.script(Reply(chunks=["会员"]), Reply(chunks=["免费"]))

    member = client.chat.completions.create(model="gpt-4-turbo", messages=MESSAGES)
    free = client.chat.completions.create(model="free-model", messages=MESSAGES)

    assert member.usage.model_extra["consumption"]["memberBenefitApplied"] is True
    assert member.usage.model_extra["consumption"]["totalCost"] == 0
    assert free.usage.model_extra["consumption"]["totalCost"] == 0
