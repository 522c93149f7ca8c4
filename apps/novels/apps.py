from django.apps import AppConfig


class NovelsConfig(AppConfig):
    name = "apps.novels"
    label = "novels"
    verbose_name = "Novels"
