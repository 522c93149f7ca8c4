from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Prompt(models.Model):
    """A reusable prompt template: ordered contents (text or references to cards/worldviews)."""

    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="prompts")
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    is_public = models.BooleanField(default=False, db_index=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-updated_at", "-id")
        indexes = [models.Index(fields=["author", "-updated_at"])]

    def __str__(self) -> str:
        return self.title


class PromptContent(models.Model):
    class Type(models.TextChoices):
        TEXT = "text", "text"
        CHARACTER = "character", "character"
        WORLDVIEW = "worldview", "worldview"

    class Role(models.TextChoices):
        SYSTEM = "system", "system"
        USER = "user", "user"
        ASSISTANT = "assistant", "assistant"

    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="contents")
    order = models.IntegerField()
    type = models.CharField(max_length=16, choices=Type.choices, default=Type.TEXT)
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.SYSTEM)
    content = models.TextField(blank=True, default="")
    # A plain id, not a foreign key: deleting a novel must not touch prompts that referenced its
    # cards; such references are skipped when the prompt is resolved.
    reference_id = models.BigIntegerField(null=True, blank=True)
    name = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ("order", "id")
        constraints = [models.UniqueConstraint(fields=["prompt", "order"], name="prompt_content_unique_order")]

    def __str__(self) -> str:
        return f"#{self.order} {self.type}"
