"""Generation admin: records are read-only (they mirror billing); roleplay data is browsable."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from apps.generation.models import Chat, ChatMessage, Generation, GlobalVariables, Persona


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Generation)
class GenerationAdmin(ReadOnlyAdmin):
    list_display = ("public_id", "user", "mode", "status", "model_requested", "model_used", "total_cost", "created_at")
    list_filter = ("mode", "status")
    search_fields = ("public_id", "user__username")
    date_hierarchy = "created_at"


@admin.register(Persona)
class PersonaAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "owner", "description_position", "is_default")
    search_fields = ("name", "owner__username")
    raw_id_fields = ("owner",)


class ChatMessageInline(admin.TabularInline):
    model = ChatMessage
    fields = ("role", "name", "swipes", "swipe_id", "hidden", "generation_id", "created_at")
    readonly_fields = ("generation_id", "created_at")
    extra = 0


@admin.register(Chat)
class ChatAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "character", "persona", "updated_at")
    search_fields = ("owner__username", "character__name")
    raw_id_fields = ("owner", "character", "persona")
    filter_horizontal = ("lorebooks",)
    inlines = (ChatMessageInline,)


@admin.register(GlobalVariables)
class GlobalVariablesAdmin(admin.ModelAdmin):
    list_display = ("user", "updated_at")
    search_fields = ("user__username",)
    raw_id_fields = ("user",)
