from __future__ import annotations

import json

from django.contrib import admin
from django.utils import timezone
from django.utils.html import format_html

from apps.worldviews.models import Lorebook, LorebookEntry, Worldview, WorldviewField


class WorldviewFieldInline(admin.TabularInline):
    model = WorldviewField
    extra = 0
    fields = ("order", "key", "value")


@admin.register(Worldview)
class WorldviewAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "novel", "updated_at")
    list_filter = ("updated_at",)
    search_fields = ("name", "novel__title", "novel__owner__username")
    raw_id_fields = ("novel",)
    inlines = (WorldviewFieldInline,)


def _keys(entry: LorebookEntry) -> str:
    keys = entry.data.get("key") if isinstance(entry.data, dict) else None
    return ", ".join(k for k in keys if isinstance(k, str))[:120] if isinstance(keys, list) else ""


def _text(entry: LorebookEntry, name: str, limit: int = 120) -> str:
    value = entry.data.get(name) if isinstance(entry.data, dict) else ""
    return value[:limit] if isinstance(value, str) else ""


class LorebookEntryInline(admin.TabularInline):
    """Read-friendly summary of the entries; edit an entry on its own page (full ST JSON)."""

    model = LorebookEntry
    extra = 0
    can_delete = True
    show_change_link = True
    fields = ("uid", "comment", "keys", "content_preview", "position", "order", "disable")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:  # type: ignore[no-untyped-def]
        return False

    @admin.display(description="comment")
    def comment(self, obj: LorebookEntry) -> str:
        return _text(obj, "comment")

    @admin.display(description="keys")
    def keys(self, obj: LorebookEntry) -> str:
        return _keys(obj)

    @admin.display(description="content")
    def content_preview(self, obj: LorebookEntry) -> str:
        return _text(obj, "content")

    @admin.display(description="position")
    def position(self, obj: LorebookEntry) -> str:
        return str(obj.data.get("position", "")) if isinstance(obj.data, dict) else ""


@admin.register(Lorebook)
class LorebookAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "character", "is_global", "updated_at")
    list_filter = ("is_global", "updated_at")
    search_fields = ("name", "owner__username", "character__name")
    raw_id_fields = ("owner", "character")
    fields = ("owner", "name", "description", "character", "is_global", "st_extra", "book_extra", "created_at")
    readonly_fields = ("created_at",)
    inlines = (LorebookEntryInline,)


@admin.register(LorebookEntry)
class LorebookEntryAdmin(admin.ModelAdmin):
    """One entry: ``data`` is the SillyTavern entry (camelCase JSON); ``uid``/``order``/``disable`` are
    copied from it on save."""

    list_display = ("id", "lorebook", "uid", "order", "disable")
    search_fields = ("lorebook__name",)
    raw_id_fields = ("lorebook",)
    fields = ("lorebook", "uid", "order", "disable", "data", "pretty")
    readonly_fields = ("uid", "order", "disable", "pretty")

    def has_add_permission(self, request) -> bool:  # type: ignore[no-untyped-def]
        return False  # entries are created through the API or inside a lorebook import

    @admin.display(description="entry (read-only view)")
    def pretty(self, obj: LorebookEntry) -> str:
        return format_html("<pre>{}</pre>", json.dumps(obj.data, ensure_ascii=False, indent=2))

    def save_model(self, request, obj: LorebookEntry, form, change) -> None:  # type: ignore[no-untyped-def]
        from apps.worldviews.engine.entry_schema import entry_coerce

        if isinstance(obj.data, dict):
            data = {"uid": obj.uid, **entry_coerce(obj.data)}
            obj.data = data
            obj.order = int(data.get("order", 100))
            obj.disable = data.get("disable") is True
        super().save_model(request, obj, form, change)
        Lorebook.objects.filter(pk=obj.lorebook_id).update(updated_at=timezone.now())  # invalidates caches

    def delete_model(self, request, obj: LorebookEntry) -> None:  # type: ignore[no-untyped-def]
        super().delete_model(request, obj)
        Lorebook.objects.filter(pk=obj.lorebook_id).update(updated_at=timezone.now())
