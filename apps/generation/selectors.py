"""Reads for generation records and the roleplay mode's personas, chats, messages and global variables.

Every ``*_get_owned`` answers the caller's row or None: someone else's looks missing, and the caller
picks 404 (a path parameter) or 400 (a body field). Lists are ordered querysets the views paginate.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from apps.generation.models import Chat, ChatMessage, Generation, GlobalVariables, Persona

# ------------------------------------------------------------------------------------- generations


def generation_list(*, user: Any, mode: str | None = None, status: str | None = None) -> QuerySet[Generation]:
    """The caller's generation records, newest first, without the (large) texts."""
    qs = Generation.objects.filter(user=user)
    if mode is not None:
        qs = qs.filter(mode=mode)
    if status is not None:
        qs = qs.filter(status=status)
    return qs.defer("content", "reasoning").order_by("-created_at", "-id")


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
