"""Used by `make run`: make sure a demo user exists and print a fresh bearer token with a curl example."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandParser
from django.utils import timezone

from apps.accounts import services
from apps.accounts.models import ApiToken

DEMO_TOKEN_NAME = "make-run demo"  # noqa: S105 (a label, not a secret)


class Command(BaseCommand):
    help = "Create the demo user if needed, revoke its previous demo token and print a new one."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--username", default="demo")
        parser.add_argument("--password", default="demo-password")
        parser.add_argument("--base-url", default="http://127.0.0.1:8000")

    def handle(self, *args: Any, **options: Any) -> None:
        username = options["username"]
        user = get_user_model().objects.filter(username=username).first()
        if user is None:
            user = services.user_create(username=username, password=options["password"])
            self.stdout.write(f"Created demo user {username!r} (password {options['password']!r}).")
        ApiToken.objects.filter(user=user, name=DEMO_TOKEN_NAME, revoked_at=None).update(revoked_at=timezone.now())
        for hook in _post_setup_hooks():
            hook(user=user, stdout=self.stdout)
        issued = services.token_create(user=user, name=DEMO_TOKEN_NAME)
        base = options["base_url"].rstrip("/")
        self.stdout.write("")
        self.stdout.write(self.style.SUCCESS("Demo bearer token (shown once):"))
        self.stdout.write(f"  {issued.token}")
        self.stdout.write("Try:")
        self.stdout.write(f'  curl -s -H "Authorization: Bearer {issued.token}" {base}/api/v1/auth/me')
        self.stdout.write(f"  {_chat_curl(base, issued.token)}")
        self.stdout.write(f"Playground: {base}/playground/ (sign in as the demo user, or paste the token)")
        self.stdout.write(f"API docs: {base}/api/docs/   Admin: {base}/admin/")
        self.stdout.write("")


DEMO_QUESTION = "Write the opening paragraph of a story about a lighthouse keeper."


def _chat_curl(base: str, token: str) -> str:
    """A generation with the default model through the OpenAI-compatible API (no prompt needed)."""
    body = json.dumps(
        {
            "model": settings.DEFAULT_MODEL_ID,
            "messages": [{"role": "user", "content": DEMO_QUESTION}],
            "max_tokens": 120,
        }
    )
    return (
        f'curl -s {base}/v1/chat/completions -H "Authorization: Bearer {token}" '
        f"-H 'Content-Type: application/json' -d '{body}'"
    )


def _post_setup_hooks() -> list[Any]:
    """Other apps add demo content (a prompt, a model, a balance) through `demo_hooks` modules."""
    from importlib import import_module

    from django.apps import apps

    hooks = []
    for config in apps.get_app_configs():
        if not config.name.startswith("apps."):
            continue
        try:
            module = import_module(f"{config.name}.demo")
        except ModuleNotFoundError:
            continue
        hooks.append(module.demo_setup)
    return hooks
