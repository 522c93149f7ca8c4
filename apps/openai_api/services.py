"""One call of the OpenAI-compatible API: the client's messages (or prompt) as they are — no macros, no
trimming — through the model's connection (post-processing, provider translation) and billed exactly
like writing mode (metered hold, settlement, record of mode `chat`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from django.utils.translation import gettext as _

from apps.billing.selectors import available_get
from apps.core.errors import ApplicationError, ContextExceeded, InvalidInput
from apps.generation.models import Generation
from apps.generation.services import (
    Finished,
    OpenPlan,
    Outcome,
    Prepared,
    generation_finish,
    generation_open_plan,
    max_tokens_check,
)
from apps.providers.selectors import ModelTarget, model_chain
from apps.providers.tokens import estimate_tokens
from apps.providers.types import ChatMessage

TEXT_COMPLETION_KINDS = frozenset({"openai_text", "mock"})


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A validated `/v1/chat/completions` or `/v1/completions` body (`prompt` set for the latter)."""

    model_id: str
    messages: tuple[ChatMessage, ...]
    max_tokens: int | None
    temperature: float
    stream: bool
    include_usage: bool
    stop: tuple[str, ...] = ()
    sampling: Mapping[str, Any] = field(default_factory=dict)
    prompt: str | None = None


@dataclass(slots=True)
class ChatPrepared(Prepared):
    include_usage: bool = False
    text_completion: bool = False
    balance_remaining: int | None = None  # characters the user can still spend, after the hold / the charge


def model_not_found(model_id: str) -> ApplicationError:
    return ApplicationError(
        _("The model %(model)s does not exist or you do not have access to it.") % {"model": model_id},
        status_code=404,
        code="model_not_found",
        extra={"param": "model"},
    )


def _targets(call: ChatCall) -> list[ModelTarget]:
    try:
        targets = model_chain(model_id=call.model_id)
    except ApplicationError as exc:
        if exc.code == "invalid_model":
            raise model_not_found(call.model_id) from None
        raise
    if call.prompt is None:
        return targets
    usable = [t for t in targets if t.config.kind in TEXT_COMPLETION_KINDS]
    if not usable or usable[0] is not targets[0]:
        raise InvalidInput({"model": [_("This model does not do text completion; use /v1/chat/completions.")]})
    return usable


def chat_prepare(*, user: Any, call: ChatCall) -> ChatPrepared:
    """Check the model and the budget, then place the hold and create the record (as writing mode). The
    client's messages are sent as given: a conversation longer than the context is refused, not trimmed."""
    prepared = chat_open_plan(user=user, call=call).run()
    if call.stream:  # the stream's headers say what is left once the call's hold is placed
        prepared.balance_remaining = available_get(user_id=user.pk)
    return prepared


def chat_open_plan(*, user: Any, call: ChatCall) -> OpenPlan[ChatPrepared]:
    """`chat_prepare` up to its hold (`OpenPlan`): checked, nothing written."""
    targets = _targets(call)
    primary = targets[0]
    prompt_tokens = (
        estimate_tokens(call.prompt)
        if call.prompt is not None
        else sum(estimate_tokens(m.content) for m in call.messages)
    )
    room = primary.context_tokens - prompt_tokens
    if call.max_tokens is None:
        max_tokens = min(primary.max_output_tokens, room)
    else:
        max_tokens = max_tokens_check(primary, call.max_tokens)
    if max_tokens < 1 or prompt_tokens + max_tokens > primary.context_tokens:
        budget = primary.context_tokens - max(1, max_tokens)
        raise ContextExceeded(
            _(
                "This model's context is %(context)s tokens; the messages need about %(needed)s and max_tokens "
                "asks for %(max)s. Shorten the messages or lower max_tokens."
            )
            % {"context": primary.context_tokens, "needed": prompt_tokens, "max": max(1, max_tokens)},
            needed=prompt_tokens,
            budget=budget,
            extra={"param": "messages" if call.prompt is None else "prompt"},
        )
    prepared = ChatPrepared(
        generation_id="",
        user_id=user.pk,
        targets=targets,
        messages=call.messages,
        max_tokens=max_tokens,
        temperature=call.temperature,
        hold_amount=0,
        is_member=False,
        history_dropped=0,
        prompt_tokens_estimate=prompt_tokens,
        stop=call.stop,
        sampling=dict(call.sampling),
        prompt=call.prompt,
        include_usage=call.include_usage,
        text_completion=call.prompt is not None,
    )
    return generation_open_plan(prepared=prepared, user=user, stream=call.stream, mode=Generation.Mode.CHAT)


def chat_finish(*, prepared: ChatPrepared, outcome: Outcome) -> Finished:
    """Writing mode's `generation_finish`, then what the user has left (for `X-Balance-Remaining`)."""
    finished = generation_finish(prepared=prepared, outcome=outcome)
    prepared.balance_remaining = available_get(user_id=prepared.user_id)
    return finished
