from django.apps import AppConfig


class WorldviewsConfig(AppConfig):
    name = "apps.worldviews"
    label = "worldviews"
    verbose_name = "Worldviews"

    def ready(self) -> None:
        from apps.worldviews import selectors
        from apps.worldviews.engine import set_default_limits

        # The engine reads no settings: its default regex limits (used by callers that pass none, such
        # as the roleplay turn) are the settings' from the start.
        set_default_limits(selectors.regex_limits())
