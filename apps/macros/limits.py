"""The macro engine's request-wide inputs on the Django side: one work budget per request, sized from
the model's context and the settings, with the 400 a request gets when it spends it; the capped
variable stores chats and users keep (docs/macros.md, "Safety limits"); and the clock.

The engine itself stays pure: it receives a :class:`MacroBudget` on the context and capped stores as
variable mappings, and never raises.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.core.errors import ApplicationError
from apps.macros.engine import CappedStore, MacroBudget, MacroContext, expand


class MacroBudgetExceeded(ApplicationError):
    """The macros of one request would produce (or work) more than its budget: 400, nothing written."""

    status_code = 400
    default_code = "macro_budget_exceeded"


def now() -> datetime:
    """The macros' clock (``{{time}}``, ``{{date}}``, ``{{idle_duration}}`` …): the one place to replace
    it (tests freeze it here). Read through :func:`request_clock`."""
    return timezone.now()


def request_clock() -> Callable[[], datetime]:
    """:func:`now` read once for a whole request: every expansion of the request — writing mode's
    messages, a roleplay turn's world info and prompt, the lorebook dry run — sees the same instant
    (``MacroContext.now``)."""
    instant = now()
    return lambda: instant


def request_budget(*, context_tokens: int | None = None) -> MacroBudget:
    """The budget of one request: ``MACRO_BUDGET_CHARS_PER_TOKEN`` × the prompt's token budget (the
    model's context less the reply), within ``MACRO_BUDGET_MIN_CHARS`` … ``MACRO_BUDGET_MAX_CHARS``;
    the floor without a model (chat greetings, the preview). ``MACRO_DICE_PER_REQUEST`` dice."""
    floor = int(settings.MACRO_BUDGET_MIN_CHARS)
    chars = floor
    if context_tokens is not None:
        per_token = int(settings.MACRO_BUDGET_CHARS_PER_TOKEN)
        chars = max(floor, min(int(settings.MACRO_BUDGET_MAX_CHARS), context_tokens * per_token))
    return MacroBudget(chars=chars, dice=int(settings.MACRO_DICE_PER_REQUEST))


def budget_check(budget: MacroBudget | None) -> None:
    """Refuse the request (``MacroBudgetExceeded``) when its macros ran out of budget: part of the
    prompt would be missing, and a silently shortened prompt is worse than a clear error."""
    if budget is None or not budget.exhausted:
        return
    raise MacroBudgetExceeded(
        _(
            "The macros of this request produce more than its budget of %(chars)s characters "
            "(or throw more than %(dice)s dice); shorten or remove the repeating macros."
        )
        % {"chars": budget.limit, "dice": settings.MACRO_DICE_PER_REQUEST},
        extra={"code": MacroBudgetExceeded.default_code, "budgetChars": budget.limit},
    )


def checked_expander(ctx: MacroContext) -> Callable[[str], str]:
    """``expand(text, ctx)`` that refuses the request as soon as the context's budget is spent (where
    the caller lets exceptions through; world-info activation swallows them: check after it)."""

    def run(text: str) -> str:
        result = expand(text, ctx)
        budget_check(ctx.budget)
        return result

    return run


def variable_store(data: Mapping[str, Any] | None) -> CappedStore:
    """A chat's or a user's macro variables, capped at ``MACRO_VARIABLES_MAX_CHARS`` (their JSON size)
    and ``MACRO_VARIABLES_MAX_KEYS``: a write past either is refused (the variable keeps its value)."""
    return CappedStore(
        data if isinstance(data, Mapping) else {},
        max_chars=int(settings.MACRO_VARIABLES_MAX_CHARS),
        max_keys=int(settings.MACRO_VARIABLES_MAX_KEYS),
    )


def variables_too_large(data: Mapping[str, Any]) -> str | None:
    """Why ``data`` cannot be stored as a variable store (over a cap), or ``None`` when it fits (a chat's
    variables set through the API are checked against the same caps)."""
    store = variable_store(data)
    if store.size > store.max_chars or len(store) > store.max_keys:
        return _("Variables may take at most %(chars)s characters (as JSON) and %(keys)s keys.") % {
            "chars": store.max_chars,
            "keys": store.max_keys,
        }
    return None
