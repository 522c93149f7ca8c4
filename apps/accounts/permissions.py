"""Permission checks for the seed's permission strings (`generation:writing:generate`, …)."""

from __future__ import annotations

from typing import Any

from django.core.cache import cache
from django.utils.translation import gettext_lazy as _
from rest_framework.permissions import BasePermission

from apps.accounts.models import (
    GENERATION_PERMISSIONS,
    PERM_CHAT_GENERATE,
    PERM_ROLEPLAY_GENERATE,
    PERM_WRITING_GENERATE,
    ApiToken,
)

PERMISSIONS_CACHE_SECONDS = 60


def permission_cache_key(*, user_id: int | None = None, token_prefix: str | None = None) -> str:
    """Where `user_has_permission` caches a user's generation permissions: per API token when the request
    came with one (its prefix is known before the user is: the key can be prefetched with the token's
    own, `apps.core.cache.prefetched`), else per user. A token belongs to one user for its whole life."""
    return f"genperms:t:{token_prefix}" if token_prefix else f"genperms:{user_id}"


def user_has_permission(user: Any, permission: str, *, token_prefix: str | None = None) -> bool:
    """`permission` is a seed permission string; superusers hold every permission.

    The user's generation permissions are cached for PERMISSIONS_CACHE_SECONDS (two queries saved per
    generation call); an operator's change of roles takes effect within that time. `token_prefix`: the
    API token the request authenticated with (the entry is then that token's).
    """
    if not (user and user.is_authenticated):
        return False
    key = permission_cache_key(user_id=user.pk, token_prefix=token_prefix)
    held = cache.get(key)
    if held is None:
        held = [code for code, _name in GENERATION_PERMISSIONS if user.has_perm(f"accounts.{code}")]
        cache.set(key, held, PERMISSIONS_CACHE_SECONDS)
    return permission in held


def require_permission(permission: str) -> type[BasePermission]:
    """A DRF permission class requiring an authenticated user holding `permission`."""

    class _HasPermission(BasePermission):
        message = _("You do not have permission to perform this action.")

        def has_permission(self, request: Any, view: Any) -> bool:
            token = request.auth
            prefix = token.prefix if isinstance(token, ApiToken) else None
            return user_has_permission(request.user, permission, token_prefix=prefix)

    _HasPermission.__name__ = f"Has_{permission.replace(':', '_')}"
    return _HasPermission


CanGenerateWriting = require_permission(PERM_WRITING_GENERATE)
CanGenerateRoleplay = require_permission(PERM_ROLEPLAY_GENERATE)
CanGenerateChat = require_permission(PERM_CHAT_GENERATE)
