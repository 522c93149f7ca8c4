from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Self

from django.conf import settings
from django.db import models
from django.utils import timezone


class Novel(models.Model):
    """A novel project: the owner of characters and worldviews."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="novels")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-updated_at", "-id")
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.title


class NovelEntity(models.Model):
    """Something that lives in a novel and is described by ordered key/value fields."""

    novel = models.ForeignKey(Novel, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    if TYPE_CHECKING:  # django-stubs gives abstract models no manager; every concrete subclass has one
        objects: ClassVar[models.Manager[Self]]

    class Meta:
        abstract = True
        ordering = ("-updated_at", "-id")

    def __str__(self) -> str:
        return self.name


class EntityField(models.Model):
    """One `key: value` line of a character card or worldview, in its order."""

    order = models.PositiveIntegerField(default=0)
    key = models.CharField(max_length=200)
    value = models.TextField(blank=True, default="")

    if TYPE_CHECKING:  # django-stubs gives abstract models no manager; every concrete subclass has one
        objects: ClassVar[models.Manager[Self]]

    class Meta:
        abstract = True
        ordering = ("order", "id")

    def __str__(self) -> str:
        return f"{self.key}: {self.value[:40]}"
