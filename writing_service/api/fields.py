from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework import serializers

MAX_SCALAR_CHARS = 200_000


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
