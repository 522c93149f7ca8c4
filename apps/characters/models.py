from __future__ import annotations

from typing import ClassVar

from django.db import models

from apps.core.fields import JSONTextField
from apps.novels.models import EntityField, Novel, NovelEntity


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
