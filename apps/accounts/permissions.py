"""Permission checks for the seed's permission strings (`generation:writing:generate`, …)."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission

from apps.accounts.models import PERM_ROLEPLAY_GENERATE, PERM_WRITING_GENERATE


def user_has_permission(user: Any, permission: str) -> bool:
    """`permission` is a seed permission string; superusers hold every permission."""
    return bool(user and user.is_authenticated and user.has_perm(f"accounts.{permission}"))


def require_permission(permission: str) -> type[BasePermission]:
    """A DRF permission class requiring an authenticated user holding `permission`."""

    class _HasPermission(BasePermission):
        message = _("You do not have permission to perform this action.")

        def has_permission(self, request: Any, view: Any) -> bool:
            return user_has_permission(request.user, permission)

    _HasPermission.__name__ = f"Has_{permission.replace(':', '_')}"
    return _HasPermission


CanGenerateWriting = require_permission(PERM_WRITING_GENERATE)
CanGenerateRoleplay = require_permission(PERM_ROLEPLAY_GENERATE)
