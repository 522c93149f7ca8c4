from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from apps.core.fields import JSONTextField
from apps.novels.models import EntityField, Novel, NovelEntity


class Worldview(NovelEntity):
    novel = models.ForeignKey(Novel, on_delete=models.CASCADE, related_name="worldviews")

    class Meta(NovelEntity.Meta):
        indexes = [models.Index(fields=["novel", "name"])]


class WorldviewField(EntityField):
    worldview = models.ForeignKey(Worldview, on_delete=models.CASCADE, related_name="fields")

    class Meta(EntityField.Meta):
        pass


class Lorebook(models.Model):
    """A SillyTavern world-info book owned by a user.

    Attachment: ``character`` links the book to one of the owner's characters (ST's "character lore");
    ``is_global`` makes it active in all the owner's chats (ST's "global"). Chat and persona
    attachments live with chats. ``st_extra`` keeps the top-level keys of an imported ST world file
    other than ``entries`` (e.g. ``originalData``); ``book_extra`` the book-level keys of an imported
    ``character_book`` / ``lorebook_v3`` other than ``entries``, ``name`` and ``description``
    (``scan_depth``, ``token_budget``, ``recursive_scanning``, ``extensions``, unknown keys) — both are
    written back on export.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="lorebooks")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True, default="")
    character = models.ForeignKey(
        "characters.Character", null=True, blank=True, on_delete=models.SET_NULL, related_name="lorebooks"
    )
    is_global = models.BooleanField(default=False)
    st_extra = JSONTextField(default=dict, blank=True)
    book_extra = JSONTextField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("-updated_at", "-id")
        indexes = [models.Index(fields=["owner", "-updated_at"])]

    def __str__(self) -> str:
        return self.name


class LorebookEntry(models.Model):
    """One world-info entry. ``data`` is the entry in SillyTavern's camelCase shape (every field of
    ``newWorldInfoEntryDefinition`` with its value, plus any unknown keys, ``uid`` included); the
    columns ``uid``, ``order`` and ``disable`` copy it for uniqueness, ordering and the admin."""

    lorebook = models.ForeignKey(Lorebook, on_delete=models.CASCADE, related_name="entries")
    uid = models.PositiveIntegerField()
    order = models.IntegerField(default=100)
    disable = models.BooleanField(default=False)
    data = JSONTextField(default=dict)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("lorebook", "uid")
        constraints = [models.UniqueConstraint(fields=["lorebook", "uid"], name="lorebook_entry_unique_uid")]
        verbose_name_plural = "lorebook entries"

    def __str__(self) -> str:
        comment = self.data.get("comment") if isinstance(self.data, dict) else ""
        return f"{self.uid}: {comment or ''}"[:80]
