from __future__ import annotations

from django.db import models

from apps.novels.models import EntityField, Novel, NovelEntity


class Character(NovelEntity):
    novel = models.ForeignKey(Novel, on_delete=models.CASCADE, related_name="characters")

    class Meta(NovelEntity.Meta):
        indexes = [models.Index(fields=["novel", "name"])]


class CharacterField(EntityField):
    character = models.ForeignKey(Character, on_delete=models.CASCADE, related_name="fields")

    class Meta(EntityField.Meta):
        pass
