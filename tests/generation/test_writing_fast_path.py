"""`writing_request_fast`: the writing body validated without DRF's field machinery when every field is
of the plain type it expects. Whatever it accepts, DRF must accept and turn into the same request;
whatever else it leaves to DRF (None)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.generation.api import WritingInputSerializer, writing_request_fast
from tests.body_strategies import any_json, texts
from tests.body_strategies import maybe as maybe_else

TEXTS = texts(" x ", "情节", "\t名\n", "x" * 101)
ANY = any_json(TEXTS)


def maybe(strategy: Any) -> Any:
    return maybe_else(strategy, ANY)


MESSAGE = st.fixed_dictionaries(
    {"role": maybe(st.sampled_from(["user", "assistant", "system", "tool"])), "content": maybe(TEXTS)},
    optional={"name": maybe(TEXTS), "extra": ANY},
)
BODY = st.fixed_dictionaries(
    {"promptId": maybe(st.integers(0, 2**62 + 1))},
    optional={
        "parameters": maybe(st.dictionaries(TEXTS, st.one_of(TEXTS, ANY), max_size=3)),
        "userInput": maybe(TEXTS),
        "modelId": maybe(TEXTS),
        "temperature": maybe(st.floats(-1, 3, allow_nan=False)),
        "maxTokens": maybe(st.integers(0, 1_000_001)),
        "stream": maybe(st.booleans()),
        "history": maybe(st.lists(maybe(MESSAGE), max_size=3)),
        "unknown": ANY,
    },
)


def drf(body: Any) -> Any:
    serializer = WritingInputSerializer(data=body)
    return serializer.to_request() if serializer.is_valid() else None


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODY)
def test_what_the_fast_path_accepts_drf_accepts_the_same_way(body):
    fast = writing_request_fast(body)
    if fast is not None:
        assert drf(body) == fast


def test_the_bodies_clients_send_take_the_fast_path():
    bodies = [
        {"promptId": 7, "userInput": "写一段开头", "modelId": "gpt-4-turbo", "maxTokens": 64},
        {
            "promptId": 7,
            "parameters": {"主角名字": "李明"},
            "temperature": 1,
            "stream": True,
            "history": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "嗯", "name": " 李 "}],
        },
        {"promptId": 7, "maxTokens": None, "modelId": " gpt-4-turbo "},
    ]
    for body in bodies:
        fast = writing_request_fast(body)
        assert fast is not None and fast == drf(body)


def test_anything_else_is_left_to_drf():
    for body in (
        [],
        {"promptId": "7"},
        {"promptId": True},
        {"promptId": 7, "maxTokens": 64.0},
        {"promptId": 7, "stream": "true"},
        {"promptId": 7, "parameters": {"n": 3}},
        {"promptId": 7, "modelId": "  "},
        {"promptId": 7, "userInput": "\ud800"},
        {"promptId": 7, "history": [{"role": "user"}]},
        {"promptId": 7, "history": [{"role": {}, "content": ""}]},  # found by schemathesis: was a 500
        {"promptId": 7, "history": [{"role": ["user"], "content": ""}]},
    ):
        assert writing_request_fast(body) is None
