from django.apps import AppConfig


class CoreConfig(AppConfig):
    """Shared plumbing (no models); `ready` installs the API's faster validators."""

    name = "apps.core"
    label = "core"
    verbose_name = "Core"

    def ready(self) -> None:
        from apps.core.api import validators

        validators.install()
