from django.apps import AppConfig


class ProvidersConfig(AppConfig):
    name = "apps.providers"
    label = "providers"
    verbose_name = "Providers"

    def ready(self) -> None:
        from apps.providers import checks  # noqa: F401 (registers the system check)
