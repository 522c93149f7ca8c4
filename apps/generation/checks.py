"""A generation must end before its billing hold can expire (the sweeper would release the hold under it)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def deadline_below_hold_lifetime(app_configs: Any, **kwargs: Any) -> list[Error]:
    if settings.GENERATION_MAX_SECONDS >= settings.BILLING_HOLD_TTL_SECONDS:
        return [
            Error(
                f"GENERATION_MAX_SECONDS ({settings.GENERATION_MAX_SECONDS}) must be below "
                f"BILLING_HOLD_TTL_SECONDS ({settings.BILLING_HOLD_TTL_SECONDS}).",
                id="generation.E001",
            )
        ]
    return []
