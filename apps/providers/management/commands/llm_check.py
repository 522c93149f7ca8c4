"""`python manage.py llm_check MODEL_ID [--stream] [--prompt TEXT] [--reset-circuit]`: report the health of the
model's connection (its circuit) and send it a test message (which bypasses the circuit)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from apps.audit.services import Actor
from apps.providers.diagnostics import DEFAULT_MAX_TOKENS, DEFAULT_PROMPT, DEFAULT_TIMEOUT, run_check, usage_text
from apps.providers.models import AIModel
from apps.providers.selectors import ConnectionHealth, connections_health
from apps.providers.services import connection_circuit_reset


def health_text(health: ConnectionHealth) -> str:
    """One line: the circuit's state, its consecutive failures, since when, and where it stands."""
    since = f" since {health.since:%Y-%m-%d %H:%M:%S} UTC" if health.since else ""
    if health.status == "closed":
        text = f"healthy ({health.failures} consecutive failures)" if health.failures else "healthy"
    elif health.status == "open":
        text = (
            f"OPEN{since}, {health.failures} consecutive failures; calls go to the fallbacks; "
            f"next probe in {max(1, round(health.retry_in))} s"
        )
    else:
        probing = "a probe call is in flight" if health.retry_in else "the next call probes"
        text = f"HALF-OPEN{since}, {health.failures} consecutive failures; {probing}"
    scope = "" if health.shared else " [this process's view: without REDIS_URL each process keeps its own]"
    return text + scope


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
        parser.add_argument(
            "--reset-circuit",
            action="store_true",
            help="when the test call succeeds, close the connection's circuit (audited)",
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
        health = connections_health(connection_ids=[connection.pk])[connection.pk]
        self.stdout.write(f"circuit: {health_text(health)}")
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
        if options["reset_circuit"] and not health.healthy:
            connection_circuit_reset(connection=connection, by=Actor.command("llm_check"))
            self.stdout.write("circuit: reset (healthy)")
        self.stdout.write(self.style.SUCCESS("OK"))
