from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar

from django import forms
from django.db import models

from apps.novels.models import EntityField, Novel, NovelEntity


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


class CharacterManager(models.Manager["Character"]):
    """Large columns (the avatar bytes, the verbatim original card) are loaded only when read:
    lists, the prompt resolver and the REST object never need them."""

    def get_queryset(self) -> models.QuerySet[Character]:
        return super().get_queryset().defer("avatar", "card_original")


class Character(NovelEntity):
    """A character of a novel: writing mode's ordered key/value card, plus an optional SillyTavern card.

    ``card`` is the normalised V3 document (``{}`` when the character has none); ``card_original`` the
    imported JSON verbatim (merged back on export so unknown keys and ``extensions`` survive);
    ``avatar`` the PNG without card chunks (stored in the database: app processes keep no local files).
    ``fields_from_card`` says the ``fields`` rows mirror ``card_fields(card)`` and follow card edits.
    """

    class Spec(models.TextChoices):
        NONE = "", "none"
        V1 = "v1", "V1"
        V2 = "v2", "V2"
        V3 = "v3", "V3"

    class SourceFormat(models.TextChoices):
        NONE = "", "none"
        API = "api", "API"
        JSON = "json", "JSON"
        PNG = "png", "PNG"
        APNG = "apng", "APNG"
        CHARX = "charx", "CHARX"

    novel = models.ForeignKey(Novel, on_delete=models.CASCADE, related_name="characters")
    card = JSONTextField(default=dict, blank=True)
    card_original = JSONTextField(default=dict, blank=True)
    avatar = models.BinaryField(null=True, blank=True, editable=False)
    avatar_sha256 = models.CharField(max_length=64, blank=True, default="")
    spec = models.CharField(max_length=2, choices=Spec.choices, blank=True, default="")
    source_format = models.CharField(max_length=8, choices=SourceFormat.choices, blank=True, default="")
    fields_from_card = models.BooleanField(default=False)

    objects: ClassVar[CharacterManager] = CharacterManager()

    class Meta(NovelEntity.Meta):
        indexes = [models.Index(fields=["novel", "name"])]

    @property
    def has_card(self) -> bool:
        return bool(self.card)

    @property
    def has_avatar(self) -> bool:
        return bool(self.avatar_sha256)


class CharacterField(EntityField):
    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="fields")

    class Meta(EntityField.Meta):
        pass
