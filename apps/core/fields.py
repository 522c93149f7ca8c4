"""Model fields shared by the apps."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from django import forms
from django.db import models


class JSONTextField(models.TextField):
    """A JSON value stored as compact text, so that the document comes back **exactly** as written, key
    order included (PostgreSQL ``jsonb`` re-orders keys). Used for card and lorebook documents, which
    users export, diff and re-import; nothing queries inside them."""

    if TYPE_CHECKING:  # django-stubs: attribute values are any JSON value, not ``str``
        _pyi_private_set_type: Any
        _pyi_private_get_type: Any

    def from_db_value(self, value: Any, expression: Any, connection: Any) -> Any:
        return None if value is None else json.loads(value)

    def to_python(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def get_prep_value(self, value: Any) -> Any:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    def value_to_string(self, obj: Any) -> str:
        return self.get_prep_value(self.value_from_object(obj)) or ""

    def formfield(self, **kwargs: Any) -> Any:
        return forms.JSONField(**{"required": not self.blank, **kwargs})
