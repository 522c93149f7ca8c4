from django.contrib import admin

from apps.novels.models import Novel


@admin.register(Novel)
class NovelAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "owner", "created_at", "updated_at")
    list_filter = ("created_at",)
    search_fields = ("title", "owner__username")
    raw_id_fields = ("owner",)
