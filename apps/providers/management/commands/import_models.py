"""`python manage.py import_models FILE.toml [--dry-run]` — see apps/providers/importer.py and docs/providers.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.services import Actor
from apps.providers.importer import ImportFailed, import_models


class Command(BaseCommand):
    help = (
        "Upsert provider connections (by name) and models (by model_id) from a TOML file, all or nothing. "
        "API keys are read from the environment variables named by api_key_env."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("file", help="the TOML file ([[connections]] and [[models]] tables)")
        parser.add_argument("--dry-run", action="store_true", help="validate and print the plan without writing")

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(options["file"])
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise CommandError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{path}: cannot read the file ({type(exc).__name__}: {exc})") from None
        try:
            report = import_models(
                text, filename=str(path), dry_run=options["dry_run"], by=Actor.command("import_models")
            )
        except ImportFailed as exc:
            count = len(exc.problems)
            noun = "error" if count == 1 else "errors"
            raise CommandError(f"{count} {noun}; nothing was imported:\n" + "\n".join(exc.problems)) from None
        for line in report.lines()[:-1]:
            self.stdout.write(line)
        self.stdout.write(self.style.SUCCESS(report.lines()[-1]))
