"""Connection health settings must make sense: a negative threshold or a cool-down of no time would turn
the breaker into something nobody configured."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def circuit_settings(app_configs: Any, **kwargs: Any) -> list[Error]:
    errors = []
    if settings.CIRCUIT_FAILURE_THRESHOLD < 0:
        errors.append(
            Error(
                f"CIRCUIT_FAILURE_THRESHOLD ({settings.CIRCUIT_FAILURE_THRESHOLD}) must be 0 (off) or more.",
                id="providers.E001",
            )
        )
    if settings.CIRCUIT_COOLDOWN_SECONDS <= 0:
        errors.append(
            Error(
                f"CIRCUIT_COOLDOWN_SECONDS ({settings.CIRCUIT_COOLDOWN_SECONDS}) must be above 0.",
                id="providers.E002",
            )
        )
    return errors
