"""Plain data types shared by the providers, generation and roleplay layers (no Django imports)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "content_filter"]

ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of a conversation as we send it upstream.

    ``name`` is the speaker name for group/example messages (OpenAI's ``name`` field); adapters that
    have no such field fold it into the content when the post-processing step asks for it.
    """

    role: Role
    content: str
    name: str | None = None
