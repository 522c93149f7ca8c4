from __future__ import annotations

import base64
import json

from django.contrib import admin
from django.utils.html import format_html

from apps.characters.models import Character, CharacterField


class CharacterFieldInline(admin.TabularInline):
    model = CharacterField
    extra = 0
    fields = ("order", "key", "value")


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "novel", "spec", "source_format", "updated_at")
    list_filter = ("spec", "source_format", "updated_at")
    search_fields = ("name", "novel__title", "novel__owner__username")
    raw_id_fields = ("novel",)
    inlines = (CharacterFieldInline,)
    fields = (
        "novel",
        "name",
        "spec",
        "source_format",
        "fields_from_card",
        "avatar_preview",
        "card",
        "card_original_pretty",
        "created_at",
    )
    readonly_fields = ("avatar_preview", "card_original_pretty", "created_at")

    @admin.display(description="avatar")
    def avatar_preview(self, obj: Character) -> str:
        if not obj.pk or not obj.has_avatar or obj.avatar is None:
            return "—"
        data = base64.b64encode(bytes(obj.avatar)).decode("ascii")
        return format_html('<img src="data:image/png;base64,{}" style="max-width:160px;max-height:160px">', data)

    @admin.display(description="original card (as imported)")
    def card_original_pretty(self, obj: Character) -> str:
        if not obj.card_original:
            return "—"
        text = json.dumps(obj.card_original, ensure_ascii=False, indent=2)
        return format_html('<pre style="max-height:30em;overflow:auto">{}</pre>', text)
