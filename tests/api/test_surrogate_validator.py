"""The installed surrogate check (`apps.core.api.validators`) answers exactly as DRF's own walk — same
first offending character, message and code — and a long text no longer costs a Python loop."""

from __future__ import annotations

import pytest
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from apps.core.api.validators import _refuse_surrogates


def drf_walk(value: object) -> None:
    """DRF 3.x's implementation, as the reference."""
    validator = ProhibitSurrogateCharactersValidator()
    for ch in (c for c in str(value) if 0xD800 <= ord(c) <= 0xDFFF):
        raise ValidationError(validator.message.format(code_point=ord(ch)), code=validator.code)


CASES = ["", "plain", "中文 😀 text", "\ud800", "a\udfffb", "x" * 1000 + "\udc00" + "\ud800", 12345, "😀\ud83d"]


@pytest.mark.parametrize("value", CASES)
def test_same_answer_as_drf(value):
    def outcome(check):
        try:
            check(value)
        except ValidationError as exc:
            return exc.detail, exc.get_codes()
        return None

    assert ProhibitSurrogateCharactersValidator.__call__ is _refuse_surrogates  # installed at start-up
    assert outcome(ProhibitSurrogateCharactersValidator()) == outcome(drf_walk)


def test_a_serializer_field_refuses_a_lone_surrogate():
    field = serializers.CharField()
    with pytest.raises(ValidationError) as info:
        field.run_validation("ok\udbffok")
    assert info.value.get_codes() == ["surrogate_characters_not_allowed"]
    assert "U+DBFF" in str(info.value.detail[0])
