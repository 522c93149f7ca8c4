"""Writing generation: prepare (validate against the database, assemble, record, hold) and finish
(settle or release, complete the record). The upstream call in between is async and ORM-free."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.billing import services as billing
from apps.billing.charges import (
    affordable_output_chars,
    compute_charge,
    count_chars,
    extension_request,
    one_char_cost,
    output_cost,
)
from apps.billing.selectors import Consumption, balance_get
from apps.billing.statements import settled
from apps.core.db import Statement, insert_statement, update_statement
from apps.core.errors import ContextExceeded, MaxTokensTooLarge
from apps.generation.assembly import Assembled, BudgetExceeded, assemble, fit_budget
from apps.generation.models import Generation, new_generation_id
from apps.macros.engine import MacroBudget, MacroContext
from apps.macros.limits import checked_expander, request_budget, request_clock
from apps.prompts.selectors import prompt_resolve
from apps.providers.adapters import ChatRequest, Usage
from apps.providers.postprocess import postprocess
from apps.providers.selectors import ModelTarget, model_chain
from apps.providers.tokens import estimate_tokens
from apps.providers.types import ChatMessage

DEFAULT_MAX_TOKENS = 2048


@dataclass(frozen=True, slots=True)
class WritingRequest:
    prompt_id: int
    parameters: dict[str, str]
    user_input: str
    model_id: str
    temperature: float
    max_tokens: int | None
    stream: bool
    history: tuple[ChatMessage, ...]


def pricing_of(target: ModelTarget) -> billing.Pricing:
    return billing.Pricing(
        target.model_id, target.input_ratio, target.output_ratio, target.is_free, target.max_output_tokens
    )


@dataclass(slots=True)
class Prepared:
    """Everything the async part needs; built in one transaction, no ORM access afterwards."""

    generation_id: str
    user_id: int
    targets: list[ModelTarget]
    messages: tuple[ChatMessage, ...]
    max_tokens: int
    temperature: float
    hold_amount: int
    is_member: bool
    history_dropped: int
    prompt_tokens_estimate: int
    hold_covers_worst: bool = True  # else a non-streamed call streams internally, to be cut where funds end
    # the OpenAI-compatible API's request options (writing and roleplay leave them empty)
    stop: tuple[str, ...] = ()
    sampling: Mapping[str, Any] = field(default_factory=dict)
    prompt: str | None = None  # a raw text-completion prompt: sent as it is, `messages` only estimate it
    started: float = field(default_factory=time.perf_counter)
    _requests: dict[str, tuple[ChatRequest, int]] = field(default_factory=dict)

    def request_for(self, target: ModelTarget) -> ChatRequest:
        return self._built(target)[0]

    def input_chars_for(self, target: ModelTarget) -> int:
        return self._built(target)[1]

    def _built(self, target: ModelTarget) -> tuple[ChatRequest, int]:
        cached = self._requests.get(target.model_id)
        if cached is None:
            messages = tuple(postprocess(self.messages, target.post_processing))
            request = ChatRequest(
                messages=messages,
                model=target.upstream_model,
                max_tokens=min(self.max_tokens, target.max_output_tokens),
                temperature=self.temperature,
                stop=self.stop,
                sampling=self.sampling,
                prompt=self.prompt,
            )
            chars = (
                count_chars(self.prompt) if self.prompt is not None else sum(count_chars(m.content) for m in messages)
            )
            cached = self._requests[target.model_id] = (request, chars)
        return cached

    def answer_fields(self) -> dict[str, Any]:
        """Fields the answer (JSON body or final SSE event) carries besides the common ones."""
        return {}

    # -- metered billing (docs/billing.md) ------------------------------------------------------------
    def _terms(self, target: ModelTarget) -> dict[str, Any]:
        return {"output_ratio": target.output_ratio, "is_member": self.is_member, "is_free_model": target.is_free}

    def input_cost_for(self, target: ModelTarget) -> int:
        """The input cost of the call when `target` answers (exact: its messages are known)."""
        return compute_charge(
            input_chars=self.input_chars_for(target),
            output_chars=0,
            input_ratio=target.input_ratio,
            input_free_threshold=settings.BILLING_INPUT_FREE_THRESHOLD,
            **self._terms(target),
        ).input_cost

    def output_allowance(self, target: ModelTarget) -> int | None:
        """How many output characters (reasoning included) the hold pays for when `target` answers;
        None when output is free (a member, a free model) and so not metered."""
        if self.is_member or target.is_free:
            return None
        return affordable_output_chars(
            budget=self.hold_amount - self.input_cost_for(target), output_ratio=target.output_ratio
        )

    def covered_by_hold(self, target: ModelTarget) -> bool:
        """A fallback is used only when the hold placed for the primary model pays its input and at
        least one output character (the output is metered from there, as for the primary)."""
        if target is self.targets[0]:
            return True
        return self.input_cost_for(target) + one_char_cost(**self._terms(target)) <= self.hold_amount


def max_tokens_check(target: ModelTarget, requested: int | None) -> int:
    """The call's ``maxTokens``: the request's when the model can write that much (else
    ``MaxTokensTooLarge``, a 400 on the field), or the default capped by the model."""
    if requested is None:
        return min(DEFAULT_MAX_TOKENS, target.max_output_tokens)
    if requested > target.max_output_tokens:
        raise MaxTokensTooLarge(
            _("maxTokens must be at most %(max)s for model %(model)s.")
            % {"max": target.max_output_tokens, "model": target.model_id},
            limit=target.max_output_tokens,
            model=target.model_id,
            extra={
                "details": {
                    "maxTokens": [
                        _("Ensure this value is less than or equal to %(limit_value)s.")
                        % {"limit_value": target.max_output_tokens}
                    ]
                }
            },
        )
    return requested


def _macro_context(*, user: Any, req: WritingRequest, model_id: str, budget: MacroBudget) -> MacroContext:
    conversation = [*req.history, *([ChatMessage("user", req.user_input)] if req.user_input else [])]
    last_user = next((m.content for m in reversed(conversation) if m.role == "user"), "")
    last_char = next((m.content for m in reversed(conversation) if m.role == "assistant"), "")
    return MacroContext(
        parameters=req.parameters,
        user=user.get_username(),
        model=model_id,
        last_message=conversation[-1].content if conversation else "",
        last_user_message=last_user,
        last_char_message=last_char,
        last_message_id=str(len(conversation) - 1) if conversation else "",
        input=req.user_input,
        now=request_clock(),
        tz=ZoneInfo(settings.BILLING_TIMEZONE),
        seed=f"prompt:{req.prompt_id}",
        budget=budget,
    )


@dataclass(frozen=True, slots=True)
class WritingPlan:
    """A writing request resolved and assembled, before anything is written (`writing_plan`)."""

    prompt_id: int
    targets: list[ModelTarget]
    max_tokens: int
    budget: int  # prompt tokens available: the model's context − maxTokens
    assembled: Assembled
    dropped: tuple[ChatMessage, ...]  # the history messages (expanded) the budget left out, oldest first

    def prepared(self, *, user: Any, req: WritingRequest) -> Prepared:
        """The `Prepared` of this plan, before its hold (no generation id, nothing held yet)."""
        return Prepared(
            generation_id="",
            user_id=user.pk,
            targets=self.targets,
            messages=self.assembled.messages,
            max_tokens=self.max_tokens,
            temperature=req.temperature,
            hold_amount=0,
            is_member=False,
            history_dropped=self.assembled.history_dropped,
            prompt_tokens_estimate=self.assembled.prompt_tokens,
        )


def writing_plan(*, user: Any, req: WritingRequest) -> WritingPlan:
    """Resolve the prompt and the model chain, check ``maxTokens``, assemble and fit the budget.
    Writes nothing: `writing_prepare` and `writing_preview` both start here.

    Raises `ApplicationError` (404/400 prompt, 400 model/maxTokens/budget/macro budget)."""
    resolved = prompt_resolve(user=user, prompt_id=req.prompt_id)
    targets = model_chain(model_id=req.model_id)
    primary = targets[0]
    max_tokens = max_tokens_check(primary, req.max_tokens)

    budget = primary.context_tokens - max_tokens
    # one macro budget for the whole request (contents, references, history, input): 400 once it is spent
    ctx = _macro_context(user=user, req=req, model_id=primary.model_id, budget=request_budget(context_tokens=budget))
    head, history, tail = assemble(
        contents=[(c.role, c.text) for c in resolved.contents],  # type: ignore[misc]
        history=req.history,
        user_input=req.user_input,
        expand=checked_expander(ctx),
    )
    try:
        assembled = fit_budget(head=head, history=history, tail=tail, budget=budget)
    except BudgetExceeded as exc:
        raise ContextExceeded(
            _(
                "The prompt and the input need %(needed)s tokens, more than the %(budget)s tokens available "
                "(context %(context)s − maxTokens %(max)s)."
            )
            % {"needed": exc.needed, "budget": exc.budget, "context": primary.context_tokens, "max": max_tokens},
            needed=exc.needed,
            budget=exc.budget,
            extra={"neededTokens": exc.needed, "budgetTokens": exc.budget},
        ) from None
    return WritingPlan(
        prompt_id=resolved.id,
        targets=targets,
        max_tokens=max_tokens,
        budget=budget,
        assembled=assembled,
        dropped=tuple(history[: assembled.history_dropped]),
    )


def writing_prepare(*, user: Any, req: WritingRequest) -> Prepared:
    """Plan (`writing_plan`), then create the record and place the hold in one transaction.

    Raises `ApplicationError` (404/400 prompt, 400 model/maxTokens/budget, 402 funds) before anything is
    written: an invalid request never touches the wallet.
    """
    return writing_open_plan(user=user, req=req).run()


def writing_open_plan(*, user: Any, req: WritingRequest) -> OpenPlan[Prepared]:
    """`writing_prepare` up to its hold (`OpenPlan`): the plan checked and assembled, nothing written."""
    plan = writing_plan(user=user, req=req)
    return generation_open_plan(
        prepared=plan.prepared(user=user, req=req),
        user=user,
        stream=req.stream,
        mode=Generation.Mode.WRITING,
        prompt_id=plan.prompt_id,
    )


@dataclass(frozen=True, slots=True)
class CostQuote:
    """What a call would cost and what the user has (docs/billing.md's rules, for the primary model)."""

    input_chars: int
    input_cost: int  # exact: the messages are known
    output_cost_per_1000: int  # ⌈1000 / outputRatio⌉; 0 for a member or a free model
    worst_case_cost: int  # input cost + the output cost of maxTokens × BILLING_HOLD_CHARS_PER_TOKEN characters
    required: int  # what must be available for the call to start (input + one output character): else 402
    is_member: bool
    is_free_model: bool
    daily_free_remaining: int
    paid_available: int
    max_output_chars: int | None  # the most output characters the available funds pay; None: output is free

    @property
    def available(self) -> int:
        return self.daily_free_remaining + self.paid_available


@dataclass(frozen=True, slots=True)
class WritingPreview:
    plan: WritingPlan
    model_id: str
    messages: tuple[ChatMessage, ...]  # as sent upstream: after the model's post-processing
    cost: CostQuote


def writing_preview(*, user: Any, req: WritingRequest) -> WritingPreview:
    """What `writing_prepare` would send and charge, without writing anything: the same plan, the
    messages after the primary model's post-processing (`Prepared.request_for`, as the relay sends
    them) and the cost by the same arithmetic as the hold and the charge. No hold, no record."""
    plan = writing_plan(user=user, req=req)
    primary = plan.targets[0]
    balance = balance_get(user=user)
    prepared = plan.prepared(user=user, req=req)
    prepared.is_member = balance.membership.active
    terms = prepared._terms(primary)
    input_cost = prepared.input_cost_for(primary)
    worst_output = output_cost(output_chars=plan.max_tokens * settings.BILLING_HOLD_CHARS_PER_TOKEN, **terms)
    required = input_cost + (one_char_cost(**terms) if worst_output > 0 else 0)
    available = balance.daily_free.remaining + balance.available
    free_output = prepared.is_member or primary.is_free
    cost = CostQuote(
        input_chars=prepared.input_chars_for(primary),
        input_cost=input_cost,
        output_cost_per_1000=output_cost(output_chars=1000, **terms),
        worst_case_cost=input_cost + worst_output,
        required=required,
        is_member=prepared.is_member,
        is_free_model=primary.is_free,
        daily_free_remaining=balance.daily_free.remaining,
        paid_available=balance.available,
        max_output_chars=None
        if free_output
        else affordable_output_chars(budget=available - input_cost, output_ratio=primary.output_ratio),
    )
    return WritingPreview(
        plan=plan, model_id=primary.model_id, messages=prepared.request_for(primary).messages, cost=cost
    )


@dataclass(slots=True)
class OpenPlan[PrepT: Prepared]:
    """A generation ready to be opened: its id chosen, its hold and record to be written together. `run()`
    does it on a database thread; `attempt()` gives the hold as one statement (or None) for a caller that
    runs it on the event loop, then `opened(hold)` — or `run()` when the attempt found no wallet yet."""

    prepared: PrepT
    user: Any
    stream: bool
    mode: str
    record_fields: dict[str, Any]
    generation_id: str = field(default_factory=new_generation_id)

    @property
    def _primary(self) -> ModelTarget:
        return self.prepared.targets[0]

    def _record(self, hold: billing.HoldRecord) -> Statement:
        prepared = self.prepared
        return insert_statement(
            Generation,
            {
                "public_id": self.generation_id,
                "user_id": self.user.pk,
                "mode": self.mode,
                "model_requested": self._primary.model_id,
                "stream": self.stream,
                "temperature": prepared.temperature,
                "max_tokens": prepared.max_tokens,
                "messages_count": len(prepared.messages),
                "history_dropped": prepared.history_dropped,
                "input_chars": prepared.input_chars_for(self._primary),
                "hold_amount": hold.amount,
                **self.record_fields,
            },
            source=hold.source,
        )

    def _hold_terms(self) -> dict[str, Any]:
        return {
            "generation_id": self.generation_id,
            "pricing": pricing_of(self._primary),
            "input_chars": self.prepared.input_chars_for(self._primary),
            "max_tokens": self.prepared.max_tokens,
            "record_statement": self._record,
        }

    def attempt(self) -> billing.HoldAttempt | None:
        """The hold as one statement to run on the event loop's connections (in autocommit)."""
        return billing.hold_attempt(user_id=self.user.pk, autocommit=True, **self._hold_terms())

    def opened(self, hold: billing.HoldResult) -> PrepT:
        prepared = self.prepared
        prepared.generation_id = self.generation_id
        prepared.hold_amount, prepared.is_member = hold.amount, hold.is_member
        prepared.hold_covers_worst = hold.covers_worst
        return prepared

    def run(self) -> PrepT:
        """Place the hold and create the record in one transaction (402 before anything is written): the
        hold is its own transaction (one statement on PostgreSQL), the record written with it."""
        return self.opened(billing.hold_place(user=self.user, **self._hold_terms()))


def generation_open_plan[PrepT: Prepared](
    *, prepared: PrepT, user: Any, stream: bool, mode: str, **record_fields: Any
) -> OpenPlan[PrepT]:
    return OpenPlan(prepared=prepared, user=user, stream=stream, mode=mode, record_fields=record_fields)


def generation_open[PrepT: Prepared](
    *, prepared: PrepT, user: Any, stream: bool, mode: str, **record_fields: Any
) -> PrepT:
    """Place the hold and create the record in one transaction (402 before anything is written)."""
    return generation_open_plan(prepared=prepared, user=user, stream=stream, mode=mode, **record_fields).run()


EXTEND_MIN_CHARS = 1000
"""The smallest extension of a metered hold, in output characters (it doubles the allowance otherwise)."""


def generation_extend(*, prepared: Prepared, target: ModelTarget, output_chars: int) -> int:
    """Grow the hold so that `output_chars` output characters can be paid (asking for more at once,
    `charges.extension_request`). Returns the new allowance in characters — still below `output_chars`
    when the user's funds ran out, unchanged when the hold is no longer active (expired): the relay then
    cuts the output there."""
    terms = prepared._terms(target)
    budget = prepared.hold_amount - prepared.input_cost_for(target)
    needed = output_cost(output_chars=output_chars, **terms)
    ask = extension_request(
        shortfall=max(0, needed - budget),
        output_budget=max(0, budget),
        min_step=output_cost(output_chars=EXTEND_MIN_CHARS, **terms),
    )
    extension = billing.hold_extend(generation_id=prepared.generation_id, amount=max(1, ask))
    if extension is not None:
        prepared.hold_amount = extension.amount
    allowance = prepared.output_allowance(target)
    return output_chars if allowance is None else allowance


@dataclass(slots=True)
class Outcome:
    status: str  # Generation.Status
    target: ModelTarget | None
    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    error_code: str = ""
    error_message: str = ""
    ttft_ms: int | None = None
    attempts: Sequence[Any] = ()
    stopped_by_balance: bool = False
    # a call that ended early for a reason other than the upstream's (its worker was lost) still pays
    # for the text it delivered, like a cancelled one (docs/jobs.md)
    charge_delivered: bool = False

    def pays(self, output_chars: int) -> bool:
        """Whether the call is charged: it succeeded, or it stopped early — cancelled, or its worker was
        lost — after delivering `output_chars` > 0 characters (those are charged, nothing more).
        An upstream failure is never charged (SPEC §9)."""
        if self.status == Generation.Status.SUCCEEDED:
            return True
        stopped_early = self.status == Generation.Status.CANCELLED or self.charge_delivered
        return stopped_early and output_chars > 0


@dataclass(frozen=True, slots=True)
class Finished:
    consumption: dict[str, Any]
    usage: dict[str, int]
    usage_estimated: bool
    duration_ms: int
    model: str


@dataclass(slots=True)
class FinishPlan:
    """A generation's end, decided: what the record says and what the call pays. `run()` settles or
    releases on a database thread; `attempt()` gives a settlement as one statement (None for a release,
    or off PostgreSQL) for a caller that runs it on the event loop, then `finished(consumption)` — or
    `run()` when the statement found the hold no longer active."""

    prepared: Prepared
    outcome: Outcome
    duration_ms: int
    target: ModelTarget
    input_chars: int
    output_chars: int
    usage: Usage
    estimated: bool

    @property
    def pays(self) -> bool:
        return self.outcome.pays(self.output_chars)

    def _record(self, consumption: billing.ConsumptionRecord) -> Statement:
        outcome, usage = self.outcome, self.usage
        return update_statement(
            Generation,
            {
                "status": outcome.status,
                "model_used": self.target.model_id
                if outcome.status != Generation.Status.FAILED or outcome.target
                else "",
                "finish_reason": outcome.finish_reason or "",
                "input_chars": self.input_chars,
                "output_chars": self.output_chars,
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "usage_estimated": self.estimated,
                "total_cost": consumption.total_cost,
                "input_cost": consumption.input_cost,
                "output_cost": consumption.output_cost,
                "used_daily_free": consumption.used_daily_free,
                "used_paid": consumption.used_paid,
                "member_benefit_applied": consumption.member_benefit_applied,
                "stopped_by_balance": outcome.stopped_by_balance,
                "duration_ms": self.duration_ms,
                "ttft_ms": outcome.ttft_ms,
                "error_code": outcome.error_code[:50],
                "error_message": outcome.error_message[:2000],
                "content": outcome.content,
                "reasoning": outcome.reasoning,
                "attempts": [
                    {"model": a.model_id, "error": a.error_code, "message": a.message[:300]} for a in outcome.attempts
                ],
                "finished_at": timezone.now(),
            },
            where="public_id",
            equals=self.prepared.generation_id,
            source=consumption.source,
        )

    def _charge_terms(self) -> dict[str, Any]:
        return {
            "generation_id": self.prepared.generation_id,
            "pricing": pricing_of(self.target),
            "input_chars": self.input_chars,
            "output_chars": self.output_chars,
            "record_statement": self._record,
        }

    def attempt(self) -> Statement | None:
        """The settlement's one statement (read its row with `billing.statements.settled`)."""
        return billing.settle_attempt(**self._charge_terms()) if self.pays else None

    def read(self, row: Sequence[Any] | None) -> Finished | None:
        """The end after the settlement statement answered `row`; None when the hold was not active."""
        consumption = settled(row)
        return None if consumption is None else self.finished(consumption)

    def finished(self, consumption: Consumption) -> Finished:
        usage = self.usage
        return Finished(
            consumption=replace(consumption, stopped_by_balance=self.outcome.stopped_by_balance).as_api(),
            usage={
                "promptTokens": usage.prompt_tokens,
                "completionTokens": usage.completion_tokens,
                "totalTokens": usage.total_tokens,
            },
            usage_estimated=self.estimated,
            duration_ms=self.duration_ms,
            model=self.target.model_id,
        )

    def run(self) -> Finished:
        """Settle (success, content filter, or a cancelled stream that produced text) or release the hold,
        and complete the record. Safe to call twice: billing is idempotent per generation."""
        if self.pays:
            consumption = billing.charge_settle(**self._charge_terms())
        else:
            consumption = Consumption()
            billing.hold_release(generation_id=self.prepared.generation_id, record_statement=self._record)
        return self.finished(consumption)


def generation_finish_plan(*, prepared: Prepared, outcome: Outcome) -> FinishPlan:
    """What the generation's end writes and charges (see `FinishPlan`)."""
    target = outcome.target or prepared.targets[0]
    if outcome.usage is not None:
        usage, estimated = outcome.usage, False
    else:
        usage = Usage.of(
            sum(estimate_tokens(m.content) for m in prepared.request_for(target).messages),
            estimate_tokens(outcome.content) + estimate_tokens(outcome.reasoning),
        )
        estimated = True
    return FinishPlan(
        prepared=prepared,
        outcome=outcome,
        duration_ms=int((time.perf_counter() - prepared.started) * 1000),
        target=target,
        input_chars=prepared.input_chars_for(target),
        output_chars=count_chars(outcome.content) + count_chars(outcome.reasoning),
        usage=usage,
        estimated=estimated,
    )


def generation_finish(*, prepared: Prepared, outcome: Outcome) -> Finished:
    """Settle or release the hold and complete the record (`FinishPlan.run`). Safe to call twice."""
    return generation_finish_plan(prepared=prepared, outcome=outcome).run()


def generation_abandon(*, generation_id: str, status: str, error_code: str = "", error_message: str = "") -> None:
    """End a generation that never called its model (a job cancelled while queued, or that could not
    be queued or run): its hold released, nothing charged, the record completed. Idempotent."""

    def record(consumption: billing.ConsumptionRecord) -> Statement:
        return update_statement(
            Generation,
            {
                "status": status,
                "error_code": error_code[:50],
                "error_message": error_message[:2000],
                "finished_at": timezone.now(),
            },
            where="public_id",
            equals=generation_id,
            source=consumption.source,
        )

    billing.hold_release(generation_id=generation_id, record_statement=record)
