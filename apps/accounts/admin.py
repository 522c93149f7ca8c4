"""API tokens in the admin: issued by the API or `create_api_token` only; an operator may rename, change the
expiry, delete (each audited) or revoke them — revocation through the service, so the token stops working
in every process at once, not when the authentication cache expires."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from apps.accounts.models import ApiToken
from apps.accounts.services import token_revoke
from apps.audit.admin import AuditedAdmin, admin_actor


@admin.register(ApiToken)
class ApiTokenAdmin(AuditedAdmin):
    list_display = ("prefix", "name", "user", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "name", "user__username")
    readonly_fields = ("prefix", "digest", "created_at", "last_used_at", "user", "revoked_at")
    fields = ("user", "name", "prefix", "digest", "created_at", "expires_at", "last_used_at", "revoked_at")
    actions = ("revoke",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # tokens are issued by the API or create_api_token only

    @admin.action(description=gettext_lazy("Revoke the selected tokens"), permissions=("change",))
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        tokens = list(queryset.filter(revoked_at=None).select_related("user"))
        for token in tokens:
            token_revoke(token=token, by=admin_actor(request))
        self.message_user(request, _("%(count)d tokens revoked.") % {"count": len(tokens)}, messages.SUCCESS)
