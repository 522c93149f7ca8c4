"""`POST generation/writing/preview`: the messages the real generation sends (captured by the fake
upstream), the cost by the billing rules, what the user has — and nothing sent, held or charged."""

from __future__ import annotations

from typing import Any

import pytest

from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Wallet
from apps.billing.services import membership_extend, wallet_grant
from apps.generation.models import Generation
from apps.prompts.models import Prompt
from tests.fakes.upstream import Reply
from tests.generation.test_writing_e2e import seed_body

pytestmark = pytest.mark.django_db(transaction=True)

PREVIEW = "/api/v1/generation/writing/preview"


@pytest.fixture(autouse=True)
def funds(request: Any, user: Any) -> None:
    if "no_funds" not in request.keywords:
        wallet_grant(user=user, amount=100_000)


def sent_as_previewed(preview: dict[str, Any]) -> list[dict[str, str]]:
    return [{"role": m["role"], "content": m["content"]} for m in preview["messages"]]


def money_rows() -> tuple[int, ...]:
    return (
        Generation.objects.count(),
        Hold.objects.count(),
        Charge.objects.count(),
        LedgerEntry.objects.count(),
        DailyUsage.objects.count(),
    )


def test_the_preview_is_what_the_generation_sends_after_trimming_and_post_processing(
    http, fake_upstream, make_model, writing_prompt, settings
):
    # given: a model whose connection merges messages (strict), an input cost above a low threshold, and
    # a context that leaves room for one of the two history messages (budget 19 tokens: contents 4 + 6,
    # input 3, history 3 + 6 → the older one goes)
    settings.BILLING_INPUT_FREE_THRESHOLD = 10
    make_model(post_processing="strict", context_tokens=119, input_ratio="3", output_ratio="0.7")
    body = seed_body(writing_prompt, maxTokens=100)

    # when
    preview = http.post(PREVIEW, json=body)
    fake_upstream.script(Reply(chunks=["从前"]))
    answer = http.post("/api/v1/generation/writing", json=body)

    # then: the same messages, the same characters, the same input cost
    assert preview.status_code == 200, preview.text
    assert answer.status_code == 200, answer.text
    data, consumption = preview.json(), answer.json()["consumption"]
    sent = fake_upstream.completion_requests[-1].json["messages"]
    assert sent_as_previewed(data) == sent
    assert sent == [
        {"role": "system", "content": "你是一名专业的小说作家。\n\n情节设定：现代都市，主角名为李明。"},
        {"role": "user", "content": "[Start a new chat]"},  # strict: a user message after the system one
        {"role": "assistant", "content": "好的，我可以帮你！你有什么具体想法吗？"},
        {"role": "user", "content": "请帮我写一个故事开头"},
    ]
    assert [(m["chars"], m["tokens"]) for m in data["messages"]] == [(31, 10), (18, 6), (19, 6), (10, 3)]
    assert (data["totalChars"], data["totalTokens"]) == (78, 25)
    assert data["budget"] == {"limit": 19, "used": 19}  # as assembled, before the post-processing
    assert data["historyDropped"] == 1
    assert data["dropped"] == [{"role": "user", "content": "我想写一个科幻故事", "chars": 9, "tokens": 3}]
    assert (data["model"], data["maxTokens"]) == ("gpt-4-turbo", 100)
    record = Generation.objects.get(public_id=answer.json()["generationId"])
    assert record.input_chars == data["cost"]["inputChars"] == 78
    assert consumption["inputCost"] == data["cost"]["inputCost"] == 26  # ⌈78 / 3⌉
    assert data["cost"] == {
        "inputChars": 78,
        "inputCost": 26,
        "outputCostPer1000Chars": 1429,  # ⌈1000 / 0.7⌉
        "worstCaseCost": 26 + 572,  # ⌈100 × 4 / 0.7⌉
        "required": 28,  # the input and one output character (⌈1 / 0.7⌉ = 2)
        "memberBenefit": False,
        "isFreeModel": False,
    }
    assert consumption["outputCost"] == 3  # "从前": ⌈2 / 0.7⌉, the per-1000 rule at 2 characters


def test_a_preview_sends_holds_and_charges_nothing(http, fake_upstream, make_model, writing_prompt, user):
    make_model()
    before = money_rows()

    response = http.post(PREVIEW, json=seed_body(writing_prompt, stream=True))

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")  # `stream` is ignored
    assert fake_upstream.completion_requests == []
    assert money_rows() == before
    wallet = Wallet.objects.get(pk=user.pk)
    assert (wallet.paid_balance, wallet.paid_held) == (100_000, 0)
    assert response.json()["available"] == {
        "dailyFreeRemaining": 2000,
        "paidAvailable": 100_000,
        "total": 102_000,
        "sufficient": True,
        "maxOutputChars": 102_000,  # input below the threshold, ratio 1
    }


@pytest.mark.no_funds
def test_without_funds_the_preview_says_so_where_the_generation_is_a_402(
    http, fake_upstream, make_model, writing_prompt, settings
):
    settings.BILLING_DAILY_FREE_QUOTA = 0
    make_model()

    preview = http.post(PREVIEW, json=seed_body(writing_prompt))
    refused = http.post("/api/v1/generation/writing", json=seed_body(writing_prompt))

    assert preview.status_code == 200
    assert refused.status_code == 402
    assert preview.json()["cost"]["required"] == refused.json()["required"] == 1
    assert preview.json()["available"] == {
        "dailyFreeRemaining": 0,
        "paidAvailable": 0,
        "total": 0,
        "sufficient": False,
        "maxOutputChars": 0,
    }
    assert fake_upstream.completion_requests == []


def test_a_member_sees_free_output(http, make_model, writing_prompt, user):
    make_model(output_ratio="2")
    membership_extend(user=user, days=30)

    cost = http.post(PREVIEW, json=seed_body(writing_prompt)).json()["cost"]

    assert (cost["outputCostPer1000Chars"], cost["memberBenefit"], cost["required"]) == (0, True, 0)
    available = http.post(PREVIEW, json=seed_body(writing_prompt)).json()["available"]
    assert available["maxOutputChars"] is None and available["dailyFreeRemaining"] == 10_000


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"promptId": None}, "promptId"),
        ({"temperature": 3}, "temperature"),
        ({"maxTokens": 0}, "maxTokens"),
        ({"history": [{"role": "robot", "content": "x"}]}, "history.0.role"),
        ({"maxTokens": 5000}, "maxTokens"),  # past the model's 4,096 (a service check, same envelope)
    ],
)
def test_validation_errors_are_those_of_the_generation(http, make_model, writing_prompt, overrides, field):
    make_model()
    body = seed_body(writing_prompt, **overrides)

    preview = http.post(PREVIEW, json=body, headers={"Accept-Language": "en"})
    generation = http.post("/api/v1/generation/writing", json=body, headers={"Accept-Language": "en"})

    assert preview.status_code == generation.status_code == 400
    assert field in preview.json()["details"]
    assert preview.json() == generation.json() | {"details": preview.json()["details"]}
    assert not Generation.objects.exists()


def test_a_prompt_too_long_for_the_context_is_the_same_400(http, make_model, writing_prompt):
    make_model(context_tokens=110)
    body = seed_body(writing_prompt, maxTokens=100, userInput="长" * 100)

    preview = http.post(PREVIEW, json=body)

    assert preview.status_code == 400
    assert preview.json()["budgetTokens"] == 10 and preview.json()["neededTokens"] > 10


def test_missing_prompts_are_404_and_someone_elses_private_prompt_400(
    http, make_model, writing_prompt, other_user, make_client
):
    make_model()
    private = Prompt.objects.create(author=other_user, title="私有")

    assert http.post(PREVIEW, json=seed_body(writing_prompt, promptId=10**9)).status_code == 404
    assert http.post(PREVIEW, json=seed_body(private)).status_code == 400
    assert http.post(PREVIEW, json=seed_body(writing_prompt, modelId="no-such-model")).status_code == 400
    assert http.post(PREVIEW, json=seed_body(writing_prompt), headers={"Authorization": ""}).status_code == 401
    assert not Generation.objects.exists()


def test_the_preview_needs_the_writing_permission(http, make_model, writing_prompt, user):
    from django.contrib.auth.models import Permission

    make_model()
    user.groups.clear()
    user.user_permissions.remove(*Permission.objects.filter(codename__startswith="generation"))

    assert http.post(PREVIEW, json=seed_body(writing_prompt)).status_code == 403
