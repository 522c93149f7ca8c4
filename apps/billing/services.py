"""Billing writes. Every balance change happens inside a transaction with the wallet row locked and
leaves a ledger entry; free-quota usage changes with the day's usage row locked. Lock order is always
hold → wallet → daily usage, so concurrent settlements cannot deadlock.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, NamedTuple, Protocol

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.audit.services import Actor, audit_record, snapshot
from apps.billing import charges, statements
from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Membership, RedemptionCode, Wallet
from apps.billing.selectors import (
    Consumption,
    billing_day,
    charge_get,
    membership_active,
    plan_quotas,
    tier_quota,
)
from apps.core.db import Expr, Statement
from apps.core.errors import ApplicationError, InsufficientBalance
from apps.core.metrics import HOLDS_EXPIRED, INSUFFICIENT_BALANCE

MEMBER_TIER = "member"


@dataclass(frozen=True, slots=True)
class Pricing:
    """The charge-relevant facts of a model (so billing needs no provider import)."""

    model_id: str
    input_ratio: Decimal
    output_ratio: Decimal
    is_free: bool
    max_output_tokens: int


def _negative_balance() -> ApplicationError:
    return ApplicationError(_("The balance cannot become negative."), status_code=400, code="negative_balance")


def _ledger(
    wallet: Wallet, *, kind: str, amount: int, note: str = "", generation_id: str = "", created_by: Any = None
) -> LedgerEntry:
    """Apply `amount` to the locked wallet and write its ledger entry."""
    new_balance = wallet.paid_balance + amount
    if new_balance < 0:
        raise _negative_balance()
    Wallet.objects.filter(pk=wallet.pk).update(paid_balance=new_balance, updated_at=timezone.now())
    wallet.paid_balance = new_balance
    return LedgerEntry.objects.create(
        user_id=wallet.pk,
        kind=kind,
        amount=amount,
        balance_after=new_balance,
        note=note[:300],
        generation_id=generation_id,
        created_by=created_by,
    )


# --- holds and settlement ----------------------------------------------------------------------
#
# The hot path of every generation: the decisions are here, the statements (a few raw ones, the same
# count and text as before they moved) in `statements.py`. The arithmetic and the rules are exactly
# those of the ORM version they replaced (see docs/billing.md).


@dataclass(frozen=True, slots=True)
class HoldResult:
    amount: int
    is_member: bool
    covers_worst: bool = True  # the hold is the whole worst case (else the output is cut where it ends)


@dataclass(frozen=True, slots=True)
class HoldRecord:
    """What the caller's record stores about a hold: its amount — a value, or (the one-statement hold on
    PostgreSQL) an `Expr` reading the statement's decided row, which the record's `INSERT` then selects
    `FROM source` (no row: the hold was refused, and the record is not written either)."""

    amount: int | Expr
    source: str | None = None


@dataclass(frozen=True, slots=True)
class ConsumptionRecord:
    """What the caller's record stores about a settlement or a release: the consumption's values, or
    (the one-statement settlement on PostgreSQL) `Expr`s reading the statement's settled row, which the
    record's `UPDATE` then reads `FROM source`."""

    total_cost: int | Expr
    input_cost: int | Expr
    output_cost: int | Expr
    used_daily_free: int | Expr
    used_paid: int | Expr
    member_benefit_applied: bool | Expr
    source: str | None = None

    @classmethod
    def of(cls, consumption: Consumption) -> ConsumptionRecord:
        return cls(
            consumption.total_cost,
            consumption.input_cost,
            consumption.output_cost,
            consumption.used_daily_free,
            consumption.used_paid,
            consumption.member_benefit_applied,
        )


# The settled row's columns in the one-statement settlement (`statements.charge_settle_one`).
_SETTLED = ConsumptionRecord(
    total_cost=Expr(f"{statements.SETTLE_SOURCE}.total"),
    input_cost=Expr(f"{statements.SETTLE_SOURCE}.input_c"),
    output_cost=Expr(f"{statements.SETTLE_SOURCE}.output_c"),
    used_daily_free=Expr(f"{statements.SETTLE_SOURCE}.free_used"),
    used_paid=Expr(f"{statements.SETTLE_SOURCE}.paid_used"),
    member_benefit_applied=Expr(f"{statements.SETTLE_SOURCE}.benefit"),
    source=statements.SETTLE_SOURCE,
)
_HOLD_DECIDED = HoldRecord(Expr(f"{statements.HOLD_SOURCE}.amount"), source=statements.HOLD_SOURCE)


class RecordStatement[RecordT](Protocol):
    """The caller's one statement about its own record (the generation's), built from what billing says
    of it (`HoldRecord` of a hold, `ConsumptionRecord` of a settlement or a release). Billing runs it with
    its own writes — in the same statement on PostgreSQL — so the record and the money commit together,
    and billing stays unaware of what the record is."""

    def __call__(self, record: RecordT, /) -> Statement: ...


def _one_statement() -> bool:
    """PostgreSQL runs the hold, its extensions and the settlement as one statement each."""
    return bool(settings.IS_POSTGRES)


_plans_json: tuple[dict[str, int], str] = ({}, "{}")


def _quota_terms() -> statements.QuotaTerms:
    global _plans_json
    quotas = plan_quotas()
    if _plans_json[0] is not quotas:  # the plans were read again (`plan_quotas` keeps them a while)
        _plans_json = (quotas, json.dumps(quotas, sort_keys=True))
    return statements.QuotaTerms(
        default=tier_quota(None), plans=_plans_json[1], other_tiers=settings.BILLING_MEMBER_DAILY_FREE_QUOTA
    )


def _terms(pricing: Pricing, *, is_member: bool) -> dict[str, Any]:
    """The charge arithmetic's terms for this model and user (`charges.hold_amount`, `compute_charge`)."""
    return {
        "input_ratio": pricing.input_ratio,
        "output_ratio": pricing.output_ratio,
        "is_free_model": pricing.is_free,
        "is_member": is_member,
        "input_free_threshold": settings.BILLING_INPUT_FREE_THRESHOLD,
    }


def _insufficient(*, required: int, available: int, input_cost: int, held: int) -> InsufficientBalance:
    """The 402 of a call that cannot pay even its input and one output character: what it needs, what
    is available, and what the user's running calls hold (it comes back when they finish)."""
    INSUFFICIENT_BALANCE.inc()
    values = {"input": input_cost, "required": required, "available": available, "held": held}
    if held:
        message = _(
            "Not enough characters: this request's input costs %(input)s and it needs at least %(required)s "
            "to answer; you have %(available)s available, and %(held)s more are held by your running "
            "generations until they finish."
        )
    else:
        message = _(
            "Not enough characters: this request's input costs %(input)s and it needs at least %(required)s "
            "to answer; you have %(available)s available. Top up or shorten the prompt."
        )
    return InsufficientBalance(
        message % values, required=required, available=available, input_cost=input_cost, held=held
    )


class _Reservation(NamedTuple):
    free_part: int
    paid_part: int
    row_updates: list[Statement]


def _reserve(
    *,
    user_id: int,
    free_available: int,
    amount: int,
    wallet: statements.WalletRow,
    usage: statements.UsageRow,
) -> _Reservation:
    """Take `amount` (≤ what is available) from the day's free quota first, then the paid balance."""
    free_part = min(amount, free_available)
    paid_part = amount - free_part
    reserved = statements.RowChanges(
        paid_held=wallet.paid_held + paid_part if paid_part else None,
        held=usage.held + free_part if free_part else None,
    )
    return _Reservation(
        free_part, paid_part, statements.row_updates(user_id=user_id, usage_id=usage.id, changes=reserved)
    )


def _available(tier: str | None, rows: statements.LockedRows) -> tuple[int, int]:
    """(free, paid) the user can still reserve: today's quota left and the balance, less what holds keep."""
    wallet, usage = rows
    return max(0, tier_quota(tier) - usage.used - usage.held), max(0, wallet.paid_balance - wallet.paid_held)


def hold_place(
    *,
    user: Any,
    generation_id: str,
    pricing: Pricing,
    input_chars: int,
    max_tokens: int,
    record_statement: RecordStatement[HoldRecord] | None = None,
) -> HoldResult:
    """Reserve what the call can pay, free quota first (metered billing, `charges.plan_hold`): the input
    cost plus the worst-case output cost, or as much of it as is left. Not even the input cost and one
    output character ⇒ `InsufficientBalance` (402), nothing written.

    Its own transaction: one statement in autocommit on PostgreSQL (`statements.hold_place_one`), an
    atomic block elsewhere (a savepoint inside a caller's transaction). `record_statement` gives one
    more statement (the generation record) to run with the hold's writes — in the same statement on
    PostgreSQL — and only if the hold is placed.
    """
    attempt = hold_attempt(
        user_id=user.pk,
        generation_id=generation_id,
        pricing=pricing,
        input_chars=input_chars,
        max_tokens=max_tokens,
        record_statement=record_statement,
    )
    if attempt is not None:
        return _hold_place_one(user.pk, attempt)
    now = timezone.now()
    day = billing_day(now)
    with transaction.atomic(), connection.cursor() as cursor:
        # A paid model's hold is not zero (unless its ratios are): lock its rows with the tier read.
        tier, rows = statements.hold_rows(cursor, user.pk, day, now, lock=not pricing.is_free)
        is_member = tier is not None
        input_cost, worst_output, one_char = _hold_terms(pricing, input_chars, max_tokens, is_member=is_member)
        free_part = paid_part = 0
        writes: list[Statement] = []
        plan = charges.HoldPlan(amount=0, required=0, covers_worst=True)
        if input_cost + worst_output > 0:
            rows = rows or statements.wallet_usage_locked(cursor, user.pk, day)
            free_available, paid_available = _available(tier, rows)
            plan = charges.plan_hold(
                input_cost=input_cost,
                worst_output_cost=worst_output,
                one_char_cost=one_char,
                available=free_available + paid_available,
            )
            if plan.refused:
                raise _insufficient(
                    required=plan.required,
                    available=free_available + paid_available,
                    input_cost=input_cost,
                    held=rows.wallet.paid_held + rows.usage.held,
                )
            free_part, paid_part, writes = _reserve(
                user_id=user.pk, free_available=free_available, amount=plan.amount, wallet=rows.wallet, usage=rows.usage
            )
        writes.append(
            statements.hold_insert(
                generation_id=generation_id,
                user_id=user.pk,
                model_id=pricing.model_id,
                day=day,
                amount=plan.amount,
                free_part=free_part,
                paid_part=paid_part,
                is_member=is_member,
                created_at=now,
                expires_at=now + timedelta(seconds=settings.BILLING_HOLD_TTL_SECONDS),
            )
        )
        if record_statement is not None:
            writes.append(record_statement(HoldRecord(plan.amount)))
        statements.write(cursor, writes)
    return HoldResult(amount=plan.amount, is_member=is_member, covers_worst=plan.covers_worst)


def _hold_terms(pricing: Pricing, input_chars: int, max_tokens: int, *, is_member: bool) -> tuple[int, int, int]:
    """(input cost, worst-case output cost, one output character's cost) for this user and model."""
    terms = _terms(pricing, is_member=is_member)
    input_cost = charges.compute_charge(input_chars=input_chars, output_chars=0, **terms).input_cost
    worst = charges.hold_amount(
        input_chars=input_chars,
        max_tokens=max_tokens,
        hold_chars_per_token=settings.BILLING_HOLD_CHARS_PER_TOKEN,
        **terms,
    )
    one_char = charges.one_char_cost(
        output_ratio=pricing.output_ratio, is_member=is_member, is_free_model=pricing.is_free
    )
    return input_cost, worst - input_cost, one_char


class HoldAttempt(NamedTuple):
    """`hold_place` as its one statement (PostgreSQL, a paid model), for a caller that runs statements
    itself (`apps.core.db_async`): `read(row)` turns the statement's answer into the hold — None when the
    user's wallet or day's usage row does not exist yet (nothing written: `hold_place` creates them) —
    or raises `InsufficientBalance` (nothing written)."""

    statement: Statement
    read: Callable[[Sequence[Any] | None], HoldResult | None]
    day: date  # the billing day it reserves in


def hold_attempt(
    *,
    user_id: int,
    generation_id: str,
    pricing: Pricing,
    input_chars: int,
    max_tokens: int,
    record_statement: RecordStatement[HoldRecord] | None = None,
    autocommit: bool = False,
) -> HoldAttempt | None:
    """The one-statement form of `hold_place` (same arguments); None where there is none (not PostgreSQL,
    or a free model: nothing to reserve). The non-member terms go in; the statement applies the
    member's rule (output free) itself when it finds an active membership. `autocommit`: the statement
    will run in autocommit on the event loop's connections (`apps.core.db_async`), outside any
    transaction of Django's connection."""
    if not _one_statement() or pricing.is_free:
        return None
    now = timezone.now()
    day = billing_day(now)
    input_cost, worst_output, one_char = _hold_terms(pricing, input_chars, max_tokens, is_member=False)
    statement = statements.hold_place_sql(
        user_id=user_id,
        day=day,
        at=now,
        quotas=_quota_terms(),
        input_cost=input_cost,
        worst_output_cost=worst_output,
        one_char_cost=one_char,
        generation_id=generation_id,
        model_id=pricing.model_id,
        expires_at=now + timedelta(seconds=settings.BILLING_HOLD_TTL_SECONDS),
        record=record_statement(_HOLD_DECIDED) if record_statement is not None else None,
        async_commit=statements.async_commit(autocommit=autocommit),  # here: the first-use path adds a savepoint
    )

    def read(row: Sequence[Any] | None) -> HoldResult | None:
        outcome = statements.hold_outcome(row)
        if outcome is None:
            return None
        if outcome.amount is None:
            charged_output = outcome.tier is None and worst_output > 0  # a member's output is free
            raise _insufficient(
                required=input_cost + (one_char if charged_output else 0),
                available=outcome.free_available + outcome.paid_available,
                input_cost=input_cost,
                held=outcome.held,
            )
        return HoldResult(amount=outcome.amount, is_member=outcome.tier is not None, covers_worst=outcome.covers_worst)

    return HoldAttempt(statement, read, day)


def _hold_place_one(user_id: int, attempt: HoldAttempt) -> HoldResult:
    """`hold_place` on PostgreSQL: its one statement, after creating the user's rows on first use."""
    with connection.cursor() as cursor:
        cursor.execute(*attempt.statement)
        result = attempt.read(cursor.fetchone())
        if result is None:  # first use of the wallet or of the day: create the rows in a transaction
            with transaction.atomic():  # that a 402 rolls back (it writes nothing, not even empty rows)
                statements.rows_create(user_id, attempt.day)
                cursor.execute(*attempt.statement)
                result = attempt.read(cursor.fetchone())
    if result is None:  # pragma: no cover - the rows were just created
        raise RuntimeError(f"no wallet or usage row for user {user_id}")
    return result


@dataclass(frozen=True, slots=True)
class Extension:
    """A hold after `hold_extend`: its whole amount now, and how much this extension added (0: nothing
    more could be held)."""

    amount: int
    granted: int


def hold_extend(*, generation_id: str, amount: int) -> Extension | None:
    """Reserve up to `amount` more for a running generation, free quota (of the hold's day) first, and
    push back the hold's expiry. Grants what is available, possibly 0. None when the hold is no longer
    active (settled, released or expired) or reserved nothing (output not metered): the caller must stop.
    One statement in autocommit on PostgreSQL."""
    if amount <= 0:
        raise ValueError(f"amount must be > 0, got {amount}")
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.BILLING_HOLD_TTL_SECONDS)
    if _one_statement():
        with connection.cursor() as cursor:
            grown = statements.hold_extend_one(
                cursor,
                generation_id=generation_id,
                amount=amount,
                quotas=_quota_terms(),
                now=now,
                expires_at=expires_at,
            )
        return None if grown is None else Extension(amount=grown.amount, granted=grown.granted)
    with transaction.atomic(), connection.cursor() as cursor:
        hold = statements.hold_locked(cursor, generation_id, with_tier=True)
        if hold is None or hold.amount == 0:  # not active, or nothing metered (its rows are not locked)
            return None
        rows = statements.LockedRows(hold.wallet, hold.usage)
        free_available, paid_available = _available(hold.tier, rows)
        granted = min(amount, free_available + paid_available)
        free_part, paid_part, writes = _reserve(
            user_id=hold.user_id, free_available=free_available, amount=granted, wallet=hold.wallet, usage=hold.usage
        )
        writes.append(
            statements.hold_grow(
                hold,
                amount=hold.amount + granted,
                free_part=hold.free_part + free_part,
                paid_part=hold.paid_part + paid_part,
                expires_at=expires_at,
            )
        )
        statements.write(cursor, writes)
    return Extension(amount=hold.amount + granted, granted=granted)


def _unreserved(hold: statements.LockedHold) -> statements.RowChanges:
    """The hold's reservation given back: the wallet's and the usage row's new held columns."""
    return statements.RowChanges(
        paid_held=hold.wallet.paid_held - hold.paid_part if hold.paid_part else None,
        held=hold.usage.held - hold.free_part if hold.free_part else None,
    )


def _settlement(hold: statements.LockedHold, charge: charges.Charge) -> Consumption:
    """The charge as the hold settles it: never more than the hold, free quota first.

    The hold's own free part stays usable even if the day's quota shrank since (membership ended, plan
    edited): so the paid part never exceeds the hold's paid part, and settling can never dip into funds
    reserved by other holds. The quota is the one of the user's membership as it is now (read under the
    locks, in the locking statement).
    """
    input_cost, output_cost = charge.input_cost, charge.output_cost
    if input_cost + output_cost > hold.amount:  # output beyond the per-token bound: the hold caps it
        input_cost = min(input_cost, hold.amount)
        output_cost = hold.amount - input_cost
    total = input_cost + output_cost
    free_used = 0
    if total > 0:
        held_by_others = hold.usage.held - hold.free_part
        free_used = min(total, max(0, tier_quota(hold.tier) - hold.usage.used - held_by_others, hold.free_part))
    return Consumption(total, input_cost, output_cost, free_used, total - free_used, charge.member_benefit_applied)


def settle_attempt(
    *,
    generation_id: str,
    pricing: Pricing,
    input_chars: int,
    output_chars: int,
    record_statement: RecordStatement[ConsumptionRecord] | None = None,
) -> Statement | None:
    """The one statement of `charge_settle` (same arguments) on PostgreSQL, for a caller that runs
    statements itself: `statements.settled(row)` reads its answer — None when the hold was not active
    (nothing written: `charge_settle` then finds what happened to it). None elsewhere."""
    if not _one_statement():
        return None
    non_member = charges.compute_charge(
        input_chars=input_chars, output_chars=output_chars, **_terms(pricing, is_member=False)
    )
    return statements.charge_settle_sql(
        generation_id=generation_id,
        quotas=_quota_terms(),
        input_cost=non_member.input_cost,
        output_cost=non_member.output_cost,
        is_free_model=pricing.is_free,
        model_id=pricing.model_id,
        input_chars=input_chars,
        output_chars=output_chars,
        note=f"generation {generation_id} ({pricing.model_id})"[:300],
        now=timezone.now(),
        record=record_statement(_SETTLED) if record_statement is not None else None,
    )


def charge_settle(
    *,
    generation_id: str,
    pricing: Pricing,
    input_chars: int,
    output_chars: int,
    record_statement: RecordStatement[ConsumptionRecord] | None = None,
) -> Consumption:
    """Replace the hold by the real charge (never more than the hold). Idempotent: a generation that
    was already settled or released returns its existing charge (or nothing) and changes nothing.
    `record_statement` gives one more statement for the charge (the generation record's), run with the
    writes, settled now or before. One statement in autocommit on PostgreSQL."""
    statement = settle_attempt(
        generation_id=generation_id,
        pricing=pricing,
        input_chars=input_chars,
        output_chars=output_chars,
        record_statement=record_statement,
    )
    if statement is not None:
        with connection.cursor() as cursor:
            cursor.execute(*statement)
            consumption = statements.settled(cursor.fetchone())
            if consumption is None:  # settled or released before: its charge (or nothing)
                consumption = _settle_expired(
                    generation_id=generation_id, pricing=pricing, input_chars=input_chars, output_chars=output_chars
                ) or charge_get(generation_id=generation_id)
                if record_statement is not None:
                    cursor.execute(*record_statement(ConsumptionRecord.of(consumption)))
        return consumption
    with transaction.atomic(), connection.cursor() as cursor:
        hold = statements.hold_locked(cursor, generation_id, with_tier=True)
        if hold is None:
            consumption = _settle_expired(
                generation_id=generation_id, pricing=pricing, input_chars=input_chars, output_chars=output_chars
            ) or charge_get(generation_id=generation_id)
            if record_statement is not None:
                cursor.execute(*record_statement(ConsumptionRecord.of(consumption)))
            return consumption
        charge = charges.compute_charge(
            input_chars=input_chars, output_chars=output_chars, **_terms(pricing, is_member=hold.is_member)
        )
        consumption = _settlement(hold, charge)
        now = timezone.now()
        changes = _unreserved(hold)
        writes: list[Statement] = []
        if consumption.used_daily_free:
            changes = changes._replace(used=hold.usage.used + consumption.used_daily_free)
        if consumption.used_paid:
            balance = hold.wallet.paid_balance - consumption.used_paid
            if balance < 0:
                raise _negative_balance()
            changes = changes._replace(paid_balance=balance, updated_at=now)
            note = f"generation {generation_id} ({pricing.model_id})"[:300]
            writes.append(
                statements.ledger_charge_insert(
                    hold, amount=-consumption.used_paid, balance_after=balance, note=note, now=now
                )
            )
        writes.append(
            statements.charge_insert(
                hold,
                consumption,
                model_id=pricing.model_id,
                input_chars=input_chars,
                output_chars=output_chars,
                now=now,
            )
        )
        writes.append(statements.hold_close(hold, Hold.Status.SETTLED.value, now))
        if record_statement is not None:
            writes.append(record_statement(ConsumptionRecord.of(consumption)))
        statements.write(
            cursor, [*statements.row_updates(user_id=hold.user_id, usage_id=hold.usage.id, changes=changes), *writes]
        )
    return consumption


def _settle_expired(*, generation_id: str, pricing: Pricing, input_chars: int, output_chars: int) -> Consumption | None:
    """Charge a generation whose hold the sweeper expired before it finished (a stalled process: the
    total deadline keeps live calls below the hold's lifetime): delivered text is not free. Charged now,
    free quota of the hold's day first, never more than is available (never negative). None when the hold
    is not an expired one without a charge."""
    with transaction.atomic():
        hold = Hold.objects.select_for_update().filter(generation_id=generation_id).first()
        if (
            hold is None
            or hold.status != Hold.Status.EXPIRED
            or Charge.objects.filter(generation_id=generation_id).exists()
        ):
            return None
        wallet = statements.wallet_locked(hold.user_id)  # hold → wallet → usage, the one lock order
        usage = statements.usage_locked(hold.user_id, hold.day)
        charge = charges.compute_charge(
            input_chars=input_chars, output_chars=output_chars, **_terms(pricing, is_member=hold.is_member)
        )
        membership = membership_active(user=hold.user_id)
        free_available, paid_available = _available(
            membership.tier if membership else None,
            statements.LockedRows(
                statements.WalletRow(wallet.paid_balance, wallet.paid_held),
                statements.UsageRow(usage.pk, usage.used, usage.held),
            ),
        )
        total = min(charge.total_cost, free_available + paid_available)
        input_cost = min(charge.input_cost, total)
        free_used = min(total, free_available)
        consumption = Consumption(
            total, input_cost, total - input_cost, free_used, total - free_used, charge.member_benefit_applied
        )
        if free_used:
            DailyUsage.objects.filter(pk=usage.pk).update(used=usage.used + free_used)
        if consumption.used_paid:
            note = f"generation {generation_id} ({pricing.model_id}), after its hold expired"
            _ledger(
                wallet,
                kind=LedgerEntry.Kind.CHARGE,
                amount=-consumption.used_paid,
                note=note,
                generation_id=generation_id,
            )
        Charge.objects.create(
            generation_id=generation_id,
            user_id=hold.user_id,
            model_id=pricing.model_id,
            day=hold.day,
            input_chars=input_chars,
            output_chars=output_chars,
            input_cost=consumption.input_cost,
            output_cost=consumption.output_cost,
            total_cost=consumption.total_cost,
            used_daily_free=consumption.used_daily_free,
            used_paid=consumption.used_paid,
            member_benefit_applied=consumption.member_benefit_applied,
        )
    return consumption


def hold_release(
    *,
    generation_id: str,
    status: str = Hold.Status.RELEASED,
    record_statement: RecordStatement[ConsumptionRecord] | None = None,
) -> bool:
    """Give the reservation back without charging (upstream failure). False if it was not active.
    `record_statement` gives one more statement (the generation record's) for the release's consumption
    (nothing charged), run with the writes, active or not."""
    with transaction.atomic(), connection.cursor() as cursor:
        hold = statements.hold_locked(cursor, generation_id, with_tier=False)
        if hold is None:
            if record_statement is not None:
                cursor.execute(*record_statement(ConsumptionRecord.of(Consumption())))
            return False
        writes = [
            *statements.row_updates(user_id=hold.user_id, usage_id=hold.usage.id, changes=_unreserved(hold)),
            statements.hold_close(hold, str(status), timezone.now()),
        ]
        if record_statement is not None:
            writes.append(record_statement(ConsumptionRecord.of(Consumption())))
        statements.write(cursor, writes)
    return True


def holds_expire(*, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Release holds past their expiry (left by a crashed process); returns their generation ids."""
    now = now or timezone.now()
    ids = list(
        Hold.objects.filter(status=Hold.Status.ACTIVE, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("generation_id", flat=True)[:limit]
    )
    expired = [gid for gid in ids if hold_release(generation_id=gid, status=Hold.Status.EXPIRED)]
    HOLDS_EXPIRED.inc(len(expired))
    return expired


# --- balance changes by operators and users ----------------------------------------------------


def _wallet_audit(*, by: Actor, action: str, user: Any, entry: LedgerEntry, note: str) -> None:
    audit_record(
        by=by,
        action=action,
        target_type="billing.wallet",
        target_id=user.pk,
        target_repr=str(user),
        before={"paid_balance": entry.balance_after - entry.amount},
        after={"paid_balance": entry.balance_after, "ledger_entry": entry.pk},
        note=f"{entry.amount:+d} {note}".strip(),
    )


def wallet_grant(
    *,
    user: Any,
    amount: int,
    note: str = "",
    kind: str = LedgerEntry.Kind.GRANT,
    created_by: Any = None,
    by: Actor | None = None,
) -> LedgerEntry:
    """Credit the paid balance (an operator's grant): a ledger entry and an audit entry (`wallet.grant`),
    by `by` (default: `created_by`, through a service call)."""
    if amount <= 0:
        raise ValueError("a grant must be positive")
    by = by or Actor(created_by, "service")
    with transaction.atomic():
        wallet = statements.wallet_locked(user.pk)
        entry = _ledger(wallet, kind=kind, amount=amount, note=note, created_by=created_by or by.user)
        _wallet_audit(by=by, action="wallet.grant", user=user, entry=entry, note=note)
        return entry


def wallet_adjust(*, user: Any, amount: int, note: str, created_by: Any = None, by: Actor | None = None) -> LedgerEntry:
    """A signed correction by an operator; it cannot take the balance below zero or below what is held.
    Audited (`wallet.adjust`) like a grant."""
    if amount == 0:
        raise ValueError("an adjustment cannot be zero")
    by = by or Actor(created_by, "service")
    with transaction.atomic():
        wallet = statements.wallet_locked(user.pk)
        if wallet.paid_balance + amount < wallet.paid_held:
            raise _negative_balance()
        entry = _ledger(
            wallet, kind=LedgerEntry.Kind.ADJUST, amount=amount, note=note, created_by=created_by or by.user
        )
        _wallet_audit(by=by, action="wallet.adjust", user=user, entry=entry, note=note)
        return entry


def membership_extend(
    *, user: Any, days: int, tier: str = MEMBER_TIER, note: str = "", by: Actor | None = None
) -> Membership:
    """Add `days` after the last membership's end (current or already queued), or from now. An operator's
    extension (`by` given) is audited (`membership.extend`); a redeemed code's is in the ledger's note."""
    if days <= 0:
        raise ValueError("days must be positive")
    now = timezone.now()
    with transaction.atomic():
        statements.wallet_locked(user.pk)  # serialises concurrent extensions of one user
        # Not `membership_active`: a second extension creates a period starting in the future, and a
        # third must start after that one, not overlap it.
        last = Membership.objects.filter(user=user, ends_at__gt=now).order_by("-ends_at").first()
        start = last.ends_at if last else now
        membership = Membership.objects.create(
            user=user, tier=tier, starts_at=start, ends_at=start + timedelta(days=days), note=note[:300]
        )
        if by is not None:
            audit_record(
                by=by,
                action="membership.extend",
                target_type="billing.membership",
                target_id=membership.pk,
                target_repr=f"{user}: {membership}",
                after=snapshot(membership),
                note=f"+{days} days {note}".strip(),
            )
        return membership


def codes_create(
    *,
    count: int,
    amount: int = 0,
    member_days: int = 0,
    batch: str = "",
    expires_at: datetime | None = None,
    by: Actor | None = None,
) -> list[RedemptionCode]:
    """`count` new redemption codes (random, unguessable). Audited (`redemptioncode.create`: the batch's
    terms and row ids, never the codes)."""
    if count <= 0 or count > 10_000:
        raise ValueError("count must be between 1 and 10000")
    if amount <= 0 and member_days <= 0:
        raise ValueError("a code must credit characters or membership days")
    codes = [
        RedemptionCode(
            code=secrets.token_urlsafe(12).replace("-", "x").replace("_", "y").upper(),
            amount=amount,
            member_days=member_days,
            batch=batch,
            expires_at=expires_at,
        )
        for _ in range(count)
    ]
    with transaction.atomic():
        created = RedemptionCode.objects.bulk_create(codes)
        ids = sorted(code.pk for code in created if code.pk is not None)
        audit_record(
            by=by or Actor(None, "service"),
            action="redemptioncode.create",
            target_type="billing.redemptioncode",
            target_id=batch,
            target_repr=batch or f"{count} codes",
            after={
                "count": count,
                "amount": amount,
                "member_days": member_days,
                "batch": batch,
                "expires_at": expires_at,
                "ids": [ids[0], ids[-1]] if ids else [],
            },
        )
    return created


def code_redeem(*, user: Any, code: str) -> RedemptionCode:
    """Redeem a code once; concurrent redemptions of one code: exactly one wins (guarded update)."""
    now = timezone.now()
    with transaction.atomic():
        record = RedemptionCode.objects.filter(code=code.strip()).first()
        if record is None or (record.expires_at is not None and record.expires_at <= now):
            raise ApplicationError(_("This code does not exist or has expired."), status_code=400, code="invalid_code")
        won = RedemptionCode.objects.filter(pk=record.pk, redeemed_at__isnull=True).update(
            redeemed_by=user, redeemed_at=now
        )
        if not won:
            raise ApplicationError(_("This code has already been used."), status_code=400, code="code_used")
        if record.amount:
            _ledger(
                statements.wallet_locked(user.pk),
                kind=LedgerEntry.Kind.REDEEM,
                amount=record.amount,
                note=f"code {record}",
            )
        if record.member_days:
            membership_extend(user=user, days=record.member_days, note=f"code {record}")
        record.redeemed_by, record.redeemed_at = user, now
    return record
