"""`manage.py billing_audit`: prove the billing invariants for every user (`selectors.ledger_audit`, whose
docstring lists them); print the books' totals and each mismatch; exit non-zero on any mismatch."""

from __future__ import annotations

from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.billing import selectors


class Command(BaseCommand):
    help = "Verify wallets, ledger, holds, daily usage and charges; exits 1 on any mismatch."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            type=date.fromisoformat,
            default=None,
            help="Check daily usage only from this day (YYYY-MM-DD); default: every day.",
        )
        parser.add_argument("--max-report", type=int, default=200, help="Print at most this many mismatches.")

    def handle(self, *args: Any, **options: Any) -> None:
        audit = selectors.ledger_audit(since=options["since"])
        totals, found = audit.totals, audit.mismatches
        self.stdout.write(
            f"billing audit: {totals.wallets} wallets, {totals.entries} ledger entries, {totals.charges} charges, "
            f"{totals.active_holds} active holds, {totals.usage_rows} daily usage rows; "
            f"Σ balance {totals.balance}, Σ held {totals.held}"
        )
        if not found:
            self.stdout.write("OK: no mismatches")
            return
        for mismatch in found[: options["max_report"]]:
            self.stdout.write(
                f"MISMATCH [{mismatch.check}] user {mismatch.user_id} ({mismatch.username}): {mismatch.message}"
            )
        if len(found) > options["max_report"]:
            self.stdout.write(f"… and {len(found) - options['max_report']} more")
        users = len({m.user_id for m in found})
        raise CommandError(f"billing audit failed: {len(found)} mismatch(es) for {users} user(s)")
