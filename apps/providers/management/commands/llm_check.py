"""`python manage.py llm_check MODEL_ID [--stream] [--prompt TEXT]`: send a test message to a model."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.providers.diagnostics import DEFAULT_MAX_TOKENS, DEFAULT_PROMPT, DEFAULT_TIMEOUT, run_check, usage_text
from apps.providers.models import AIModel


class Command(BaseCommand):
    help = "Send a short chat to MODEL_ID's upstream; print the reply, latency and usage (exit 1 on failure)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("model_id", help="the public model id (AIModel.model_id)")
        parser.add_argument("--stream", action="store_true", help="stream the answer (shows time to first token)")
        parser.add_argument("--prompt", default=DEFAULT_PROMPT, help=f"the user message (default {DEFAULT_PROMPT!r})")
        parser.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS, help="max_tokens of the request")
        parser.add_argument(
            "--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds allowed for the whole answer (default 60)"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        model = AIModel.objects.select_related("connection").filter(model_id=options["model_id"]).first()
        if model is None:
            known = ", ".join(AIModel.objects.values_list("model_id", flat=True)[:20]) or "none"
            raise CommandError(f"unknown model {options['model_id']!r} (known: {known})")
        if options["max_tokens"] < 1:
            raise CommandError("--max-tokens must be ≥ 1")
        if options["timeout"] <= 0:
            raise CommandError("--timeout must be > 0")
        connection = model.connection
        state = "" if model.enabled and connection.enabled else " [disabled]"
        self.stdout.write(
            f"model {model.model_id}{state} → {connection.name} ({connection.kind}) upstream {model.upstream_model!r}"
        )
        result = run_check(
            model,
            stream=options["stream"],
            prompt=options["prompt"],
            max_tokens=options["max_tokens"],
            time_limit=options["timeout"],
        )
        if not result.ok:
            raise CommandError(f"FAILED after {result.latency_ms} ms: {result.error}", returncode=1)
        if result.reasoning:
            self.stdout.write(f"reasoning: {result.reasoning}")
        self.stdout.write(f"reply: {result.reply}")
        self.stdout.write(f"latency: {result.latency_ms} ms")
        if result.first_token_ms is not None:
            self.stdout.write(f"first token: {result.first_token_ms} ms")
        self.stdout.write(f"finish reason: {result.finish_reason}")
        self.stdout.write(usage_text(result.usage))
        self.stdout.write(self.style.SUCCESS("OK"))
