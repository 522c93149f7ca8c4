from __future__ import annotations

from typing import TYPE_CHECKING

from django.db.models import QuerySet

from apps.accounts.models import GENERATION_PERMISSIONS, ApiToken

if TYPE_CHECKING:
    from django.contrib.auth.models import User


def token_list(*, user: User) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


def user_permission_strings(*, user: User) -> list[str]:
    """The seed permission strings the user holds (direct, through roles, or as superuser)."""
    return [codename for codename, _name in GENERATION_PERMISSIONS if user.has_perm(f"accounts.{codename}")]
