"""Token estimate by character count (pure; no Django).

SPEC §8 and SillyTavern's ``guesstimate`` estimate tokens as ⌈characters / 3.35⌉. We compute it in
integer arithmetic, ⌈n × 100 / 335⌉, so no float rounding can ever push a value across an integer.

Characters are Unicode **code points** (``len(str)`` in Python), the unit billing counts too (SPEC §9).
SillyTavern counts JavaScript UTF-16 code units, so an astral character (most emoji, rare CJK) counts
2 there and 1 here; BMP text (including common CJK) gives the same numbers.

``estimate_messages_tokens`` is the **sum of the per-message estimates of the contents** — no
per-message overhead (role tokens, separators) and no ``name``: SPEC §8 defines the estimate as
characters / 3.35 and says nothing about overhead, and names that reach the upstream as text are
folded into the content by post-processing before the estimate is taken. Summing per-message ceilings
(rather than taking one ceiling of the total) keeps the estimate additive, so a budget loop can drop a
message by subtracting its own estimate; it exceeds ⌈total / 3.35⌉ by less than one token per message.
"""

from __future__ import annotations

from collections.abc import Sequence

from apps.providers.types import ChatMessage

CHARS_PER_TOKEN_X100 = 335
"""Characters per token × 100 (3.35 characters per token)."""


def estimate_length(chars: int) -> int:
    """⌈chars / 3.35⌉, exactly, for a length already counted; 0 for 0."""
    return -(-chars * 100 // CHARS_PER_TOKEN_X100)


def estimate_tokens(text: str) -> int:
    """⌈code points / 3.35⌉, exactly; 0 for the empty string."""
    return -(-len(text) * 100 // CHARS_PER_TOKEN_X100)


def estimate_messages_tokens(messages: Sequence[ChatMessage]) -> int:
    """Sum of :func:`estimate_tokens` over the messages' contents (no per-message overhead)."""
    return sum(estimate_tokens(message.content) for message in messages)
