from django.contrib import admin

from apps.accounts.models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "user", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("prefix", "digest", "created_at", "last_used_at", "user")
    fields = ("user", "name", "prefix", "digest", "created_at", "expires_at", "last_used_at", "revoked_at")

    def has_add_permission(self, request):  # tokens are issued by the API or create_api_token only
        return False
