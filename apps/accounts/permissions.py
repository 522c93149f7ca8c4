"""Permission checks for the seed's permission strings (`generation:writing:generate`, …)."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission

from apps.accounts.models import (
    PERM_CHAT_GENERATE,
    PERM_ROLEPLAY_GENERATE,
    PERM_WRITING_GENERATE,
)
from apps.accounts.services import generation_permissions_held

PERMISSIONS_CACHE_SECONDS = 60


def user_has_permission(user: Any, permission: str) -> bool:
    """`permission` is a seed permission string; superusers hold every permission.

    A user authenticated by an API token from the shared cache carries the generation permissions
    cached with the token (`token_authenticate`: as old as TOKEN_CACHE_SECONDS at most). Otherwise they
    are cached for PERMISSIONS_CACHE_SECONDS (two queries saved per generation call). Either way an
    operator's change of roles takes effect within that time.
    """
    if not (user and user.is_authenticated):
        return False
    held = getattr(user, "generation_permissions", None)
    if held is None:
        key = f"genperms:{user.pk}"
        held = cache.get(key)
        if held is None:
            held = generation_permissions_held(user)
            cache.set(key, held, PERMISSIONS_CACHE_SECONDS)
    return permission in held


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
CanGenerateChat = require_permission(PERM_CHAT_GENERATE)
