"""`chat_request_fast`: the `/v1/chat/completions` body validated without DRF's field machinery when it
holds only the common fields, each of its plain type. Whatever it accepts (or refuses in `_messages`),
DRF must accept (or refuse) the same way; anything else it leaves to DRF (None)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from apps.openai_api.api import ChatCompletionSerializer, chat_request_fast
from tests.body_strategies import any_json, texts
from tests.body_strategies import maybe as maybe_else

TEXTS = texts(" m ", "模型", "\tgpt\n", "x" * 201)
ANY = any_json(TEXTS)


def maybe(strategy: Any) -> Any:
    return maybe_else(strategy, ANY)


PART = st.fixed_dictionaries({"type": maybe(st.sampled_from(["text", "image_url"])), "text": maybe(TEXTS)})
MESSAGE = st.fixed_dictionaries(
    {
        "role": maybe(st.sampled_from(["system", "developer", "user", "assistant", "tool", "function", "robot"])),
        "content": maybe(st.one_of(TEXTS, st.lists(maybe(PART), max_size=2))),
    },
    optional={"name": maybe(TEXTS), "extra": ANY},
)
BODY = st.fixed_dictionaries(
    {"model": maybe(TEXTS), "messages": maybe(st.lists(maybe(MESSAGE), max_size=3))},
    optional={
        "stream": maybe(st.booleans()),
        "stream_options": maybe(st.one_of(st.none(), st.fixed_dictionaries({}, optional={"include_usage": ANY}))),
        "max_tokens": maybe(st.one_of(st.none(), st.integers(0, 1_000_001))),
        "temperature": maybe(st.one_of(st.none(), st.floats(-1, 3, allow_nan=False), st.integers(-1, 3))),
        "top_p": ANY,
        "unknown": ANY,
    },
)


def outcome(make: Any) -> Any:
    try:
        return ("call", make())
    except serializers.ValidationError as exc:
        return ("refused", exc.detail)


def drf(body: Any) -> Any:
    serializer = ChatCompletionSerializer(data=body)
    return serializer.to_request() if serializer.is_valid() else None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODY)
def test_what_the_fast_path_accepts_or_refuses_drf_does_the_same_way(body):
    fast = outcome(lambda: chat_request_fast(body))
    if fast != ("call", None):
        assert outcome(lambda: drf(body)) == fast


def test_the_bodies_clients_send_take_the_fast_path():
    messages = [{"role": "system", "content": "You are a writer."}, {"role": "user", "content": "写一段开头"}]
    bodies = [
        {"model": "gpt-4-turbo", "messages": messages, "max_tokens": 64, "temperature": 0.7},
        {"model": " gpt-4-turbo ", "messages": messages, "stream": True, "stream_options": {"include_usage": True}},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], "temperature": 1},
        {"model": "m", "messages": messages, "max_tokens": None, "temperature": None, "stream_options": None},
    ]
    for body in bodies:
        fast = chat_request_fast(body)
        assert fast is not None and fast == drf(body)


def test_anything_else_is_left_to_drf():
    messages = [{"role": "user", "content": "hi"}]
    for body in (
        [],
        {"model": "m"},
        {"model": "m", "messages": None},
        {"model": "  ", "messages": messages},
        {"model": 7, "messages": messages},
        {"model": "m", "messages": messages, "stream": "true"},
        {"model": "m", "messages": messages, "max_tokens": 64.0},
        {"model": "m", "messages": messages, "max_tokens": True},
        {"model": "m", "messages": messages, "temperature": "0.5"},
        {"model": "m", "messages": messages, "stream_options": {"include_usage": "yes"}},
        {"model": "m", "messages": messages, "top_p": 0.9},  # any other field: DRF's
        {"model": "m", "messages": messages, "n": 1},
    ):
        assert chat_request_fast(body) is None, body


def test_a_message_the_fast_path_refuses_is_refused_as_after_drf():
    body = {"model": "m", "messages": [{"role": {}, "content": "hi"}]}
    assert outcome(lambda: chat_request_fast(body)) == outcome(lambda: drf(body))
    assert outcome(lambda: chat_request_fast(body))[0] == "refused"
