"""Metered billing end to end (SPEC §9, docs/billing.md): uvicorn → Django → fake upstream over real
sockets. A call is refused only when not even its input and one output character can be paid; the
output is metered as it is relayed and stops at exactly the last affordable character, with the
upstream request cancelled; the charge is exactly what was delivered."""

from __future__ import annotations

import time
from io import StringIO

import httpx
import orjson
import pytest
from django.core.management import call_command
from django.test import override_settings

from apps.accounts.models import ApiToken
from apps.accounts.services import token_create
from apps.billing import services as billing
from apps.billing.models import Charge, Hold, LedgerEntry, Wallet
from apps.generation.models import Generation
from apps.prompts.models import Prompt
from tests.fakes.upstream import Reply
from tests.generation.conftest import sse_events

pytestmark = pytest.mark.django_db(transaction=True)

BODY = {"parameters": {"主角名字": "李明", "故事背景": "现代都市"}, "userInput": "写吧", "modelId": "gpt-4-turbo"}
LONG = [f"{i % 10}" * 50 for i in range(40)]  # 2,000 characters in 40 events


def body(prompt, **overrides):
    return {**BODY, "promptId": prompt.pk, **overrides}


def wait_for_disconnect(fake_upstream, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not fake_upstream.disconnects and time.monotonic() < deadline:
        time.sleep(0.02)
    return list(fake_upstream.disconnects)


@pytest.fixture
def ratio_4_model(make_model):
    """Output ratio 4: 400 characters cost 100."""
    return make_model(output_ratio="4")


@pytest.fixture
def hundred_free(settings):
    settings.BILLING_DAILY_FREE_QUOTA = 100


def assert_audit_clean():
    out = StringIO()
    call_command("billing_audit", stdout=out)
    assert "OK: no mismatches" in out.getvalue(), out.getvalue()


@pytest.mark.usefixtures("hundred_free")
def test_json_answer_stops_at_exactly_the_affordable_length_then_402(
    http, fake_upstream, ratio_4_model, writing_prompt
):
    fake_upstream.script(Reply(chunks=LONG, chunk_delay=0.01))

    response = http.post("/api/v1/generation/writing", json=body(writing_prompt, maxTokens=4000))

    assert response.status_code == 200, response.text
    answer = response.json()
    assert len(answer["content"]) == 400 and answer["content"] == "".join(LONG)[:400]
    assert answer["finishReason"] == "length"
    assert answer["consumption"] == {
        "totalCost": 100,
        "inputCost": 0,
        "outputCost": 100,
        "usedDailyFree": 100,
        "usedPaid": 0,
        "memberBenefitApplied": False,
        "stoppedByBalance": True,
    }
    # the upstream request was cancelled at the cut, long before its 40 events
    [disconnect] = wait_for_disconnect(fake_upstream)
    assert disconnect.events_sent < 40
    record = Generation.objects.get()
    assert (record.status, record.finish_reason, record.output_chars, record.stopped_by_balance) == (
        "succeeded",
        "length",
        400,
        True,
    )
    assert Charge.objects.get().total_cost == 100 and Hold.objects.get().status == "settled"

    refused = http.post("/api/v1/generation/writing", json=body(writing_prompt, maxTokens=4000))
    assert refused.status_code == 402
    assert refused.json()["available"] == 0 and refused.json()["required"] == 1
    assert Generation.objects.count() == 1
    assert_audit_clean()


@pytest.mark.usefixtures("hundred_free")
def test_stream_stops_at_exactly_the_affordable_length(
    live_server_url, token, fake_upstream, ratio_4_model, writing_prompt
):
    fake_upstream.script(Reply(chunks=LONG, chunk_delay=0.01))
    headers = {"Authorization": f"Bearer {token}"}

    with httpx.Client(base_url=live_server_url, headers=headers, timeout=20) as client:
        response = client.post("/api/v1/generation/writing/stream", json=body(writing_prompt, maxTokens=4000))

    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    deltas = [orjson.loads(e) for e in events[:-2]]
    assert "".join(d["content"] for d in deltas) == "".join(LONG)[:400]
    final = orjson.loads(events[-2])
    assert final["finishReason"] == "length"
    assert final["consumption"]["stoppedByBalance"] is True and final["consumption"]["totalCost"] == 100
    assert wait_for_disconnect(fake_upstream)[0].events_sent < 40
    assert Generation.objects.get().stopped_by_balance is True


def test_a_reply_longer_than_the_estimate_is_charged_exactly(http, fake_upstream, make_model, writing_prompt, user):
    make_model()
    billing.wallet_grant(user=user, amount=100_000)
    # maxTokens 10 holds 40 output characters; the upstream ignores it and writes 2,000
    fake_upstream.script(Reply(chunks=LONG), Reply(chunks=LONG))

    for path in ("/api/v1/generation/writing", "/api/v1/generation/writing/stream"):
        response = http.post(path, json=body(writing_prompt, maxTokens=10))
        assert response.status_code == 200, response.text

    for record in Generation.objects.all():
        assert (record.output_chars, record.output_cost, record.stopped_by_balance) == (2000, 2000, False)
        assert Charge.objects.get(generation_id=record.public_id).output_cost == 2000
    assert Wallet.objects.get(pk=user.pk).paid_balance == 100_000 - (2 * 2000 - 2000)  # 2,000 free a day
    assert sum(e.amount for e in LedgerEntry.objects.filter(kind="charge")) == -2000
    assert_audit_clean()


@override_settings(BILLING_MEMBER_DAILY_FREE_QUOTA=0)
def test_a_member_with_enough_for_the_input_gets_the_whole_reply(http, fake_upstream, make_model, writing_prompt, user):
    make_model()
    billing.membership_extend(user=user, days=30)
    fake_upstream.script(Reply(chunks=LONG))

    response = http.post("/api/v1/generation/writing", json=body(writing_prompt, maxTokens=100))

    assert response.status_code == 200, response.text
    answer = response.json()
    assert len(answer["content"]) == 2000 and answer["finishReason"] == "stop"
    assert answer["consumption"]["totalCost"] == 0 and answer["consumption"]["memberBenefitApplied"] is True


@override_settings(LLM_BASE_URL="", DEFAULT_MODEL_ID="gpt-4-turbo")
def test_a_fresh_demo_user_runs_the_seed_example_with_the_default_max_tokens(live_server_url):
    call_command("demo_setup", stdout=StringIO())
    demo_prompt = Prompt.objects.get(author__username="demo")
    assert ApiToken.objects.filter(user__username="demo", revoked_at=None).exists()
    issued = token_create(user=demo_prompt.author)  # the printed one is shown once: a second token
    seed = {
        "promptId": demo_prompt.pk,
        "parameters": {"主角名字": "李明", "故事背景": "现代都市", "其他补充": "科幻元素"},
        "userInput": "请帮我写一个故事开头",
        "temperature": 0.7,
        "history": [
            {"role": "user", "content": "我想写一个科幻故事"},
            {"role": "assistant", "content": "好的，我可以帮你！你有什么具体想法吗？"},
        ],
    }

    with httpx.Client(base_url=live_server_url, headers={"Authorization": f"Bearer {issued.token}"}) as client:
        response = client.post("/api/v1/generation/writing", json=seed)

    assert response.status_code == 200, response.text
    assert response.json()["content"]
    assert Hold.objects.get().status == "settled"
