from django.contrib import admin

from apps.worldviews.models import Worldview, WorldviewField


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
