from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

MAX_SCALAR_CHARS = 200_000


def char_value(value: Any, *, max_length: int, trim: bool = False, allow_blank: bool = True) -> str | None:
    """A text as DRF's `CharField(max_length=…, trim_whitespace=trim, allow_blank=…)` validates it, for
    request bodies checked without DRF's field machinery: the text, or None for anything the field would
    refuse or convert (not a `str`, too long, a NUL, a lone surrogate, blank where not allowed)."""
    if type(value) is not str:
        return None
    if trim:
        value = value.strip()
    if not value:
        return "" if allow_blank else None
    if len(value) > max_length or "\x00" in value:
        return None
    if not value.isascii():
        try:
            value.encode()  # a lone surrogate cannot be encoded: DRF refuses it
        except UnicodeEncodeError:
            return None
    return value


class ScalarToString(serializers.Field):
    """A template parameter value: strings as they are; numbers and booleans as their JSON text."""

    default_error_messages = {"invalid": _("Must be a string, a number or a boolean.")}

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, bool):
            return "true" if data else "false"
        if isinstance(data, int | float | str):
            text = str(data)
            if len(text) <= MAX_SCALAR_CHARS:
                return text
        self.fail("invalid")
        return ""

    def to_representation(self, value: Any) -> str:
        return str(value)


class WholeSerializer(serializers.Serializer):
    """A nested object that is validated whole even inside a PATCH.

    DRF propagates `partial` from the root to nested serializers, so under PATCH an item of a nested
    list (a field `{key, value}`, a prompt content) would silently lose its required keys and defaults.
    A nested item replaces the stored one whole, so it must be complete.
    """

    def to_internal_value(self, data: Any) -> Any:
        attrs = super().to_internal_value(data)
        if getattr(self.root, "partial", False):
            missing = {
                name: [field.error_messages["required"]]
                for name, field in self.fields.items()
                if field.required and not field.read_only and field.source not in attrs
            }
            if missing:
                raise serializers.ValidationError(missing)
            for field in self.fields.values():
                if field.source not in attrs and not field.read_only and field.default is not serializers.empty:
                    # not field.get_default(): under `partial` it raises SkipField, dropping the item
                    default = field.default
                    attrs[field.source] = default() if callable(default) else default
        return attrs
