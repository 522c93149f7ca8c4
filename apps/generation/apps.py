from django.apps import AppConfig


class GenerationConfig(AppConfig):
    name = "apps.generation"
    label = "generation"
    verbose_name = "Generation"

    def ready(self) -> None:
        from apps.generation import checks  # noqa: F401 (registers the system check)
        from apps.generation.jobs import runner  # noqa: F401 (registers the process's job runner with the services)
