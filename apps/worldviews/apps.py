from django.apps import AppConfig


class WorldviewsConfig(AppConfig):
    name = "apps.worldviews"
    label = "worldviews"
    verbose_name = "Worldviews"

    def ready(self) -> None:
        from apps.characters.signals import card_received
        from apps.worldviews import selectors
        from apps.worldviews.engine import set_default_limits

        # The engine reads no settings: the services pass the settings' regex limits to each activation;
        # this default covers any other caller (a shell, a script) from the start.
        set_default_limits(selectors.regex_limits())
        card_received.connect(_check_card, dispatch_uid="worldviews.card_regex_keys")


def _check_card(sender: object, *, card: dict, path: str = "", **kwargs: object) -> None:
    """Refuses a card whose embedded book has a regex key that cannot be stored (a 400)."""
    from apps.worldviews.services import card_check_regex

    card_check_regex(card=card, path=path)
