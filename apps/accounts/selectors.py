from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from apps.accounts.models import GENERATION_PERMISSIONS, ApiToken


def token_list(*, user: AbstractBaseUser) -> QuerySet[ApiToken]:
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")


def user_permission_strings(*, user: AbstractBaseUser) -> list[str]:
    """The seed permission strings the user holds (direct, through roles, or as superuser)."""
    return [codename for codename, _name in GENERATION_PERMISSIONS if user.has_perm(f"accounts.{codename}")]
