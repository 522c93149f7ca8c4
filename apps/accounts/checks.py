from typing import Any

from django.conf import settings
from django.core.checks import Warning, register


@register("security", deploy=True)
def secret_key_check(app_configs: Any, **kwargs: Any) -> list[Warning]:
    if not settings.DEBUG and settings.SECRET_KEY == settings.DEV_SECRET_KEY:
        return [Warning("SECRET_KEY is the development default; set SECRET_KEY in production.", id="accounts.W001")]
    return []
