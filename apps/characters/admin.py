from django.contrib import admin

from apps.characters.models import Character, CharacterField


class CharacterFieldInline(admin.TabularInline):
    model = CharacterField
    extra = 0
    fields = ("order", "key", "value")


@admin.register(Character)
class CharacterAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "novel", "updated_at")
    list_filter = ("updated_at",)
    search_fields = ("name", "novel__title", "novel__owner__username")
    raw_id_fields = ("novel",)
    inlines = (CharacterFieldInline,)
