from django.apps import AppConfig


class WorldviewsConfig(AppConfig):
    name = "apps.worldviews"
    label = "worldviews"
    verbose_name = "Worldviews"
