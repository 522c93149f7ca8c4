"""New users join the default role, whichever way they are created (API, admin, createsuperuser)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models.signals import post_migrate, post_save
from django.dispatch import receiver

from apps.accounts.services import role_default_get


@receiver(post_save, sender=get_user_model(), dispatch_uid="accounts.default_role")
def _user_created(sender: Any, instance: Any, created: bool, raw: bool = False, **kwargs: Any) -> None:
    if created and not raw:
        instance.groups.add(role_default_get())


@receiver(post_migrate, dispatch_uid="accounts.ensure_default_role")
def _ensure_default_role(sender: Any, app_config: Any = None, **kwargs: Any) -> None:
    if app_config is not None and app_config.label == "accounts":
        role_default_get()
