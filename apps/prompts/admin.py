from django.contrib import admin

from apps.prompts.models import Prompt, PromptContent


class PromptContentInline(admin.TabularInline):
    model = PromptContent
    extra = 0
    fields = ("order", "type", "role", "content", "reference_id", "name")


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "author", "is_public", "updated_at")
    list_filter = ("is_public", "updated_at")
    search_fields = ("title", "description", "author__username")
    raw_id_fields = ("author",)
    inlines = (PromptContentInline,)
