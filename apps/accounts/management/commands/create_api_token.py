"""Issue an API token for a user; the token is printed on the last line (for scripts)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.accounts import services
from apps.audit.services import Actor
from apps.billing import services as billing

BY = Actor.command("create_api_token")


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it on the last line of the output."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--create-user", action="store_true", help="Create the user if it does not exist.")
        parser.add_argument("--password", help="Password to set when the user is created.")
        parser.add_argument("--name", default="cli", help="A name for the token.")
        parser.add_argument("--expires-in-days", type=int, default=None)
        parser.add_argument("--member-days", type=int, default=None, help="Start a membership of N days.")
        parser.add_argument("--grant", type=int, default=None, help="Credit N characters to the paid balance.")

    def handle(self, *args: Any, **options: Any) -> None:
        user_model = get_user_model()
        username = options["username"]
        user = user_model.objects.filter(username=username).first()
        if user is None:
            if not options["create_user"]:
                raise CommandError(f"User {username!r} does not exist (use --create-user).")
            user = services.user_create(username=username, password=options["password"])
            self.stdout.write(f"Created user {username}")
        elif options["password"]:
            user.set_password(options["password"])
            user.save(update_fields=["password"])
        for flag in ("member_days", "grant"):
            value = options[flag]
            if value is not None:
                if value <= 0:
                    raise CommandError(f"--{flag.replace('_', '-')} must be a positive integer.")
                self._apply_billing(user, flag, value)
        issued = services.token_create(
            user=user, name=options["name"], expires_in_days=options["expires_in_days"], by=BY
        )
        self.stdout.write(issued.token)

    def _apply_billing(self, user: Any, flag: str, value: int) -> None:
        if flag == "grant":
            billing.wallet_grant(user=user, amount=value, note="create_api_token --grant", by=BY)
            self.stdout.write(f"Granted {value} characters")
        else:
            billing.membership_extend(user=user, days=value, note="create_api_token --member-days", by=BY)
            self.stdout.write(f"Membership extended by {value} days")
