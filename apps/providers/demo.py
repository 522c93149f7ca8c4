"""`demo_setup` hook (called by apps/accounts' demo_setup command): make sure a model exists."""

from __future__ import annotations

from typing import Any

from django.conf import settings

from apps.audit.services import Actor
from apps.providers.models import AIModel, Connection
from apps.providers.quickstart import providers_ensure


def demo_setup(*, user: Any, stdout: Any) -> None:
    lines = providers_ensure(by=Actor.command("demo_setup"))
    for line in lines:
        stdout.write(f"Providers: {line}")
    if not lines:
        stdout.write(
            f"Providers: {Connection.objects.count()} connection(s), "
            f"{AIModel.objects.filter(enabled=True).count()} enabled model(s) already configured."
        )
    if not AIModel.objects.filter(model_id=settings.DEFAULT_MODEL_ID, enabled=True).exists():
        stdout.write(
            f"Providers: warning: DEFAULT_MODEL_ID={settings.DEFAULT_MODEL_ID!r} is not an enabled model; "
            "requests without modelId will fail."
        )
