"""`python manage.py providers_quickstart`: create the LLM_* quick-start or the offline mock provider."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apps.audit.services import Actor
from apps.providers.quickstart import providers_ensure


class Command(BaseCommand):
    help = (
        "When no connection exists: create the 'default' connection and models from LLM_BASE_URL / "
        "LLM_API_KEY / LLM_MODELS, or (LLM_BASE_URL unset) the local model (LLM_PROVIDER=local) or the offline "
        "'mock' connection and DEFAULT_MODEL_ID."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        lines = providers_ensure(by=Actor.command("providers_quickstart"))
        for line in lines:
            self.stdout.write(line)
        if not lines:
            self.stdout.write("Providers already configured; nothing to do.")
