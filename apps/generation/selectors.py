"""Reads for generation records and the roleplay mode's personas, chats, messages and global variables.

Every ``*_get_owned`` answers the caller's row or None: someone else's looks missing, and the caller
picks 404 (a path parameter) or 400 (a body field). Lists are ordered querysets the views paginate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db.models import BooleanField, Count, ExpressionWrapper, Q, QuerySet

from apps.generation.calls import final_call_outcome, is_failure
from apps.generation.models import Chat, ChatMessage, Generation, GlobalVariables, Persona
from apps.providers.selectors import model_connection_names

# ------------------------------------------------------------------------------------- generations


def generation_list(*, user: Any, mode: str | None = None, status: str | None = None) -> QuerySet[Generation]:
    """The caller's generation records, newest first, without the (large) texts."""
    qs = Generation.objects.filter(user=user)
    if mode is not None:
        qs = qs.filter(mode=mode)
    if status is not None:
        qs = qs.filter(status=status)
    return qs.defer("content", "reasoning").order_by("-created_at", "-id")


@dataclass(slots=True)
class ConnectionCalls:
    """The upstream calls made through one connection, by outcome (`calls.py`: ok, cancelled, error codes)."""

    connection: str
    outcomes: dict[str, int] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return sum(self.outcomes.values())

    @property
    def failures(self) -> int:
        return sum(n for outcome, n in self.outcomes.items() if is_failure(outcome))

    @property
    def error_rate(self) -> float | None:
        """Failures / (failures + successes); cancelled calls count as neither. None without either."""
        decided = self.failures + self.outcomes.get("ok", 0)
        return self.failures / decided if decided else None


UNKNOWN_CONNECTION = "(unknown)"


def upstream_calls_by_connection(*, since: datetime, until: datetime) -> list[ConnectionCalls]:
    """The upstream calls of the generations created in [since, until), counted per connection as
    `upstream_calls_total` counts them (`apps.generation.calls`), the most calls first. A model is
    credited to its connection in the catalogue now (a deleted model: `(unknown)`).

    One aggregate for the calls the generations ended on, and a pass over the records that logged failed
    attempts (retries, fallbacks: the few that had trouble)."""
    records = Generation.objects.filter(created_at__gte=since, created_at__lt=until).exclude(model_used="")
    connection_of = model_connection_names()
    found: dict[str, ConnectionCalls] = {}

    def add(model: str, outcome: str, n: int) -> None:
        name = connection_of.get(model, UNKNOWN_CONNECTION)
        outcomes = found.setdefault(name, ConnectionCalls(name)).outcomes
        outcomes[outcome] = outcomes.get(outcome, 0) + n

    ended = (
        records.annotate(first_text=ExpressionWrapper(Q(ttft_ms__isnull=False), output_field=BooleanField()))
        .values("model_used", "status", "error_code", "first_text")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in ended:
        final = final_call_outcome(status=row["status"], error_code=row["error_code"], first_text=row["first_text"])
        if final is not None:
            add(row["model_used"], final, row["n"])
    for attempts in records.exclude(attempts=[]).values_list("attempts", flat=True).iterator():
        for attempt in attempts:
            add(str(attempt.get("model", "")), str(attempt.get("error", "")), 1)
    return sorted(found.values(), key=lambda c: (-c.calls, c.connection))


def generation_get_owned(*, user: Any, public_id: str) -> Generation | None:
    return Generation.objects.filter(public_id=public_id, user=user).first()


# ---------------------------------------------------------------------------------------- personas


def persona_list(*, user: Any) -> QuerySet[Persona]:
    return Persona.objects.filter(owner=user).order_by("id")


def persona_get_owned(*, user: Any, pk: int) -> Persona | None:
    return Persona.objects.filter(pk=pk, owner=user).first()


def persona_default(*, user: Any) -> Persona | None:
    """The persona a new chat takes when none is named."""
    return Persona.objects.filter(owner=user, is_default=True).first()


# ------------------------------------------------------------------------------------------- chats


def chat_list(*, user: Any) -> QuerySet[Chat]:
    """The caller's chats, most recently active first (their lorebook ids prefetched)."""
    return Chat.objects.filter(owner=user).prefetch_related("lorebooks").order_by("-updated_at", "-id")


def chat_get_owned(*, user: Any, pk: int) -> Chat | None:
    return Chat.objects.filter(pk=pk, owner=user).select_related("persona").first()


def message_list(*, chat: Chat) -> QuerySet[ChatMessage]:
    return ChatMessage.objects.filter(chat=chat).order_by("id")


def message_get_owned(*, user: Any, chat_id: int, pk: int) -> ChatMessage | None:
    return ChatMessage.objects.filter(pk=pk, chat_id=chat_id, chat__owner=user).first()


def global_variables(*, user: Any) -> dict[str, Any]:
    """The user's global macro variables (a fresh dict: the caller may change it)."""
    row = GlobalVariables.objects.filter(user_id=user.pk).values_list("variables", flat=True).first()
    return dict(row) if isinstance(row, dict) else {}
