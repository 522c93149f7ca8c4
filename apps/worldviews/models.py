from __future__ import annotations

from django.db import models

from apps.novels.models import EntityField, Novel, NovelEntity


class Worldview(NovelEntity):
    novel = models.ForeignKey(Novel, on_delete=models.CASCADE, related_name="worldviews")

    class Meta(NovelEntity.Meta):
        indexes = [models.Index(fields=["novel", "name"])]


class WorldviewField(EntityField):
    worldview = models.ForeignKey(Worldview, on_delete=models.CASCADE, related_name="fields")

    class Meta(EntityField.Meta):
        pass
