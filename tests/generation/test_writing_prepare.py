"""`writing_prepare` and `max_tokens_check` as services (no HTTP): what is assembled, what is written,
and that every refusal writes nothing. The end-to-end tests cover the same paths through the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.utils import translation

from apps.billing.models import Hold
from apps.billing.services import wallet_grant
from apps.core.errors import ApplicationError, ContextExceeded, MaxTokensTooLarge, NotFound
from apps.generation.models import Generation
from apps.generation.services import DEFAULT_MAX_TOKENS, WritingRequest, max_tokens_check, writing_prepare
from apps.macros import limits
from apps.prompts.models import Prompt, PromptContent
from apps.providers.selectors import model_chain
from apps.providers.types import ChatMessage

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _chinese():
    """Messages are asserted in the default language, whatever an earlier test left active."""
    with translation.override("zh-hans"):
        yield


def request(prompt: Prompt, **overrides: Any) -> WritingRequest:
    values: dict[str, Any] = {
        "prompt_id": prompt.pk,
        "parameters": {"主角名字": "李明", "故事背景": "现代都市"},
        "user_input": "请写开头",
        "model_id": "gpt-4-turbo",
        "temperature": 0.5,
        "max_tokens": 100,
        "stream": False,
        "history": (),
    }
    values.update(overrides)
    return WritingRequest(**values)


@pytest.fixture
def funded(user: Any) -> Any:
    wallet_grant(user=user, amount=100_000)
    return user


def nothing_written() -> bool:
    return not Generation.objects.exists() and not Hold.objects.exists()


def test_assembles_places_the_hold_and_creates_the_pending_record(funded, make_model, writing_prompt):
    make_model(max_output_tokens=4096)
    history = (ChatMessage("user", "上一轮"), ChatMessage("assistant", "好的"))

    prepared = writing_prepare(user=funded, req=request(writing_prompt, history=history))

    assert prepared.messages == (
        ChatMessage("system", "你是一名专业的小说作家。"),
        ChatMessage("system", "情节设定：现代都市，主角名为李明。"),
        ChatMessage("user", "上一轮"),
        ChatMessage("assistant", "好的"),
        ChatMessage("user", "请写开头"),
    )
    input_chars = sum(len(m.content) for m in prepared.messages)
    record = Generation.objects.get(public_id=prepared.generation_id)
    assert (record.status, record.mode, record.prompt_id, record.user_id) == (
        Generation.Status.PENDING,
        Generation.Mode.WRITING,
        writing_prompt.pk,
        funded.pk,
    )
    assert (record.input_chars, record.max_tokens, record.messages_count) == (input_chars, 100, 5)
    hold = Hold.objects.get(generation_id=prepared.generation_id)
    assert hold.amount == prepared.hold_amount == record.hold_amount > 0
    assert (prepared.max_tokens, prepared.temperature, prepared.history_dropped) == (100, 0.5, 0)
    assert prepared.answer_fields() == {}


def test_macros_share_one_context_in_prompt_order(funded, make_model, user):
    make_model()
    prompt = Prompt.objects.create(author=user, title="变量")
    PromptContent.objects.create(prompt=prompt, order=1, type="text", role="system", content="{{setvar::tone::冷峻}}")
    PromptContent.objects.create(prompt=prompt, order=2, type="text", role="system", content="语气：{{getvar::tone}}")

    prepared = writing_prepare(user=funded, req=request(prompt, user_input="{{user}}：{{getvar::tone}}"))

    # the first content expands to nothing and is left out
    assert prepared.messages == (ChatMessage("system", "语气：冷峻"), ChatMessage("user", "alice：冷峻"))


def test_every_message_reads_the_request_clock_once(funded, make_model, user, monkeypatch):
    make_model()
    readings = iter([datetime(2026, 1, 5, 7, 45, tzinfo=UTC), datetime(2026, 1, 5, 7, 46, tzinfo=UTC)])
    monkeypatch.setattr(limits, "now", lambda: next(readings))
    prompt = Prompt.objects.create(author=user, title="时间")
    PromptContent.objects.create(prompt=prompt, order=1, type="text", role="system", content="{{isotime}}")

    prepared = writing_prepare(user=funded, req=request(prompt, user_input="{{isotime}} {{isodate}}"))

    # one reading (Asia/Shanghai) for the whole request, whichever message expands it
    assert prepared.messages == (ChatMessage("system", "15:45"), ChatMessage("user", "15:45 2026-01-05"))


def test_default_max_tokens_is_capped_by_the_model(funded, make_model, writing_prompt):
    make_model(max_output_tokens=512)

    prepared = writing_prepare(user=funded, req=request(writing_prompt, max_tokens=None))

    assert prepared.max_tokens == 512


def test_history_is_dropped_oldest_first_to_fit(funded, make_model, writing_prompt):
    make_model(context_tokens=160, max_output_tokens=100)
    # budget 60 tokens: the contents and the input take 12, the oldest message alone 60
    history = (ChatMessage("user", "旧" * 200), ChatMessage("assistant", "中" * 30), ChatMessage("user", "新"))

    prepared = writing_prepare(user=funded, req=request(writing_prompt, history=history))

    assert prepared.history_dropped == 1
    assert [m.content for m in prepared.messages][2:] == ["中" * 30, "新", "请写开头"]


def test_refusals_write_nothing(funded, make_model, writing_prompt, other_user):
    make_model(context_tokens=100, max_output_tokens=90)
    private = Prompt.objects.create(author=other_user, title="私有")

    with pytest.raises(MaxTokensTooLarge) as too_many:
        writing_prepare(user=funded, req=request(writing_prompt, max_tokens=91))
    with pytest.raises(ContextExceeded) as too_long:
        writing_prepare(user=funded, req=request(writing_prompt, max_tokens=90, user_input="长" * 200))
    with pytest.raises(NotFound):
        writing_prepare(user=funded, req=request(writing_prompt, prompt_id=10**9))
    with pytest.raises(ApplicationError) as forbidden:
        writing_prepare(user=funded, req=request(private))

    assert (too_many.value.limit, too_many.value.model) == (90, "gpt-4-turbo")
    assert too_many.value.extra == {"details": {"maxTokens": ["请确保该值小于或者等于 90。"]}}  # default zh-hans
    assert too_long.value.budget == 10 and too_long.value.needed > 10
    assert too_long.value.extra == {"neededTokens": too_long.value.needed, "budgetTokens": 10}
    assert forbidden.value.status_code == 400
    assert nothing_written()


@pytest.mark.no_funds
def test_insufficient_funds_is_402_and_writes_nothing(user, make_model, writing_prompt, settings):
    settings.BILLING_DAILY_FREE_QUOTA = 0
    make_model()

    with pytest.raises(ApplicationError) as raised:
        writing_prepare(user=user, req=request(writing_prompt))

    assert raised.value.status_code == 402
    assert nothing_written()


@pytest.mark.parametrize(
    ("requested", "limit", "expected"),
    [
        (None, 4096, DEFAULT_MAX_TOKENS),
        (None, 100, 100),
        (1, 100, 1),
        (100, 100, 100),
        (101, 100, MaxTokensTooLarge),
    ],
)
def test_max_tokens_check(make_model, requested, limit, expected):
    make_model(max_output_tokens=limit)
    target = model_chain(model_id="gpt-4-turbo")[0]

    if isinstance(expected, int):
        assert max_tokens_check(target, requested) == expected
    else:
        with pytest.raises(expected):
            max_tokens_check(target, requested)
