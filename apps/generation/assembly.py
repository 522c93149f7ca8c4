"""Message assembly and the token budget for writing mode (pure: no Django imports).

Order (seed API 21): prompt contents by `order` (references already rendered) → `history` →
`userInput` as a final user message (omitted when empty). Macros are expanded in every message with
one shared context, in that order, so `{{setvar}}` in the prompt is visible to later messages.
Messages that expand to nothing are left out.

Budget: tokens ≈ ⌈characters / 3.35⌉ per message; the budget is `contextTokens − maxTokens`. The
oldest history messages are dropped first; prompt contents and user input are never dropped; if they
alone do not fit, `BudgetExceeded` carries both numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from apps.providers.tokens import estimate_tokens
from apps.providers.types import ChatMessage, Role


class BudgetExceeded(Exception):
    def __init__(self, needed: int, budget: int) -> None:
        super().__init__(f"needs {needed} tokens, budget {budget}")
        self.needed = needed
        self.budget = budget


@dataclass(frozen=True, slots=True)
class Assembled:
    messages: tuple[ChatMessage, ...]
    history_dropped: int
    prompt_tokens: int  # estimated tokens of `messages`


def assemble(
    *,
    contents: Sequence[tuple[Role, str]],
    history: Sequence[ChatMessage],
    user_input: str,
    expand: Callable[[str], str],
) -> tuple[list[ChatMessage], list[ChatMessage], list[ChatMessage]]:
    """Expand macros and return (head: prompt contents, history, tail: user input) without empty ones."""
    head = [ChatMessage(role, text) for role, raw in contents if (text := expand(raw))]
    middle = [ChatMessage(m.role, text, m.name) for m in history if (text := expand(m.content))]
    tail = [ChatMessage("user", text)] if user_input and (text := expand(user_input)) else []
    return head, middle, tail


def fit_budget(
    *, head: Sequence[ChatMessage], history: Sequence[ChatMessage], tail: Sequence[ChatMessage], budget: int
) -> Assembled:
    """Drop the oldest history until everything fits in `budget` tokens."""
    fixed = sum(estimate_tokens(m.content) for m in head) + sum(estimate_tokens(m.content) for m in tail)
    if fixed > budget:
        raise BudgetExceeded(fixed, budget)
    costs = [estimate_tokens(m.content) for m in history]
    total = fixed + sum(costs)
    dropped = 0
    while total > budget:
        total -= costs[dropped]
        dropped += 1
    return Assembled(tuple([*head, *history[dropped:], *tail]), dropped, total)
