"""Billing writes. Every balance change happens inside a transaction with the wallet row locked and
leaves a ledger entry; free-quota usage changes with the day's usage row locked. Lock order is always
hold → wallet → daily usage, so concurrent settlements cannot deadlock.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.billing import charges
from apps.billing.models import DailyUsage, Hold, LedgerEntry, Membership, RedemptionCode, Wallet
from apps.billing.selectors import Consumption, billing_day, charge_get, tier_quota
from apps.core.db import Statement
from apps.core.errors import ApplicationError

MEMBER_TIER = "member"


@dataclass(frozen=True, slots=True)
class Pricing:
    """The charge-relevant facts of a model (so billing needs no provider import)."""

    model_id: str
    input_ratio: Decimal
    output_ratio: Decimal
    is_free: bool
    max_output_tokens: int


# --- row locks ---------------------------------------------------------------------------------


def _wallet_locked(user_id: int) -> Wallet:
    wallet = Wallet.objects.select_for_update().filter(pk=user_id).first()
    if wallet is None:  # first use: create it (a concurrent creator wins harmlessly), then lock it
        Wallet.objects.bulk_create([Wallet(user_id=user_id)], ignore_conflicts=True)
        wallet = Wallet.objects.select_for_update().get(pk=user_id)
    return wallet


def _usage_locked(user_id: int, day: date | str) -> DailyUsage:
    usage = DailyUsage.objects.select_for_update().filter(user_id=user_id, day=day).first()
    if usage is None:
        DailyUsage.objects.bulk_create([DailyUsage(user_id=user_id, day=day)], ignore_conflicts=True)
        usage = DailyUsage.objects.select_for_update().get(user_id=user_id, day=day)
    return usage


def _ledger(
    wallet: Wallet, *, kind: str, amount: int, note: str = "", generation_id: str = "", created_by: Any = None
) -> LedgerEntry:
    """Apply `amount` to the locked wallet and write its ledger entry."""
    new_balance = wallet.paid_balance + amount
    if new_balance < 0:
        raise ApplicationError(_("The balance cannot become negative."), status_code=400, code="negative_balance")
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
# The hot path of every generation, written as a few raw statements (no ORM query compilation, which
# costs ≈ 0.5 ms CPU per query): on PostgreSQL a hold is 3 statements (membership, one SELECT locking
# wallet then usage, one statement writing everything with data-modifying CTEs) and a settlement 2
# (one SELECT locking hold → wallet → usage in that order and reading the membership, one writing
# statement). SQLite has neither FOR UPDATE nor data-modifying CTEs: there the transaction is
# IMMEDIATE (writers serialised from BEGIN) and the writes are separate statements. The arithmetic and
# the rules are exactly those of the ORM version they replace (see docs/billing.md).


@dataclass(frozen=True, slots=True)
class HoldResult:
    amount: int
    is_member: bool


def _for_update(of: str) -> str:
    return f" FOR UPDATE OF {of}" if connection.features.has_select_for_update else ""


def _dt(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


def _day(value: date | str) -> Any:
    return connection.ops.adapt_datefield_value(value)  # type: ignore[arg-type]  # stubs: str is accepted too


_MEMBER_TIER_SQL = (
    "SELECT m.tier FROM billing_membership m WHERE m.user_id = {user} AND m.starts_at <= %s AND m.ends_at > %s"
    " ORDER BY m.ends_at DESC LIMIT 1"
)


def _member_tier(cursor: Any, user_id: int, at: datetime) -> str | None:
    """The tier of the user's membership active at `at` (None without one): `membership_active` in SQL."""
    cursor.execute(_MEMBER_TIER_SQL.format(user="%s"), [user_id, _dt(at), _dt(at)])
    row = cursor.fetchone()
    return row[0] if row else None


_ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true)"


def _async_commit() -> bool:
    """Whether `hold_place` makes its transaction's commit asynchronous: PostgreSQL, unless
    `BILLING_DURABLE_HOLDS`, and only when the hold's transaction is the outermost one — a caller's
    larger transaction keeps its durable commit."""
    if connection.vendor != "postgresql" or settings.BILLING_DURABLE_HOLDS:
        return False
    return connection.in_atomic_block and not connection.savepoint_ids


def _hold_rows(cursor: Any, user_id: int, day: date, at: datetime, *, lock: bool) -> tuple[str | None, Any]:
    """The user's membership tier at `at` and, with `lock`, their wallet and day's usage rows locked
    (wallet first) as `_wallet_usage_locked` returns them — one statement in the common case."""
    tier_sql = _MEMBER_TIER_SQL.format(user="%s")
    async_commit = _async_commit()
    extra = f", {_ASYNC_COMMIT}" if async_commit else ""
    if not lock:
        cursor.execute(f"SELECT ({tier_sql}){extra}", [user_id, _dt(at), _dt(at)])
        return cursor.fetchone()[0], None
    cursor.execute(
        f"SELECT ({tier_sql}), w.paid_balance, w.paid_held, u.id, u.used, u.held{extra} FROM billing_wallet w"  # noqa: S608 (constant SQL, values as parameters)
        " JOIN billing_dailyusage u ON u.user_id = w.user_id AND u.day = %s WHERE w.user_id = %s" + _for_update("w, u"),
        [user_id, _dt(at), _dt(at), _day(day), user_id],
    )
    row = cursor.fetchone()
    if row is not None:
        return row[0], row[1:6]
    # first use (of the wallet or of the day): create the rows, in order
    if async_commit:
        cursor.execute(f"SELECT {_ASYNC_COMMIT}")
    return _member_tier(cursor, user_id, at), _wallet_usage_locked(cursor, user_id, day)


def _wallet_usage_locked(cursor: Any, user_id: int, day: date | str) -> tuple[int, int, int, int, int]:
    """Lock the wallet, then the day's usage row (one statement, that order); create them on first use.

    Returns (paid_balance, paid_held, usage id, used, held)."""
    cursor.execute(
        "SELECT w.paid_balance, w.paid_held, u.id, u.used, u.held FROM billing_wallet w"  # noqa: S608 (constant SQL, values as parameters)
        " JOIN billing_dailyusage u ON u.user_id = w.user_id AND u.day = %s WHERE w.user_id = %s" + _for_update("w, u"),
        [_day(day), user_id],
    )
    row = cursor.fetchone()
    if row is not None:
        return row
    # first use (of the wallet or of the day): the row-by-row path, creating what is missing, in order
    wallet = _wallet_locked(user_id)
    usage = _usage_locked(user_id, day)
    return wallet.paid_balance, wallet.paid_held, usage.pk, usage.used, usage.held


def _write(cursor: Any, parts: list[tuple[str, list[Any]]]) -> None:
    """Run the writes: one statement on PostgreSQL (all but the last as data-modifying CTEs, which
    touch distinct rows already locked by this transaction), one statement each elsewhere."""
    if connection.vendor == "postgresql" and len(parts) > 1:
        ctes = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(parts[:-1]))
        params = [p for _, ps in parts for p in ps]
        cursor.execute(f"WITH {ctes} {parts[-1][0]}", params)
        return
    for sql, params in parts:
        cursor.execute(sql, params)


def hold_place(
    *,
    user: Any,
    generation_id: str,
    pricing: Pricing,
    input_chars: int,
    max_tokens: int,
    also: Callable[[HoldResult], Statement] | None = None,
) -> HoldResult:
    """Reserve the most the call can cost, free quota first. Not enough ⇒ 402 with `maxAffordableTokens`.

    Must run inside the caller's transaction. `also` gives one more statement (the generation record)
    to run with the hold's writes — in the same statement on PostgreSQL.
    """
    now = timezone.now()
    user_id = user.pk
    day = billing_day(now)
    with connection.cursor() as cursor:
        # A paid model's hold is not zero (unless its ratios are): lock its rows with the tier read.
        tier, rows = _hold_rows(cursor, user_id, day, now, lock=not pricing.is_free)
        is_member = tier is not None
        common = {
            "input_ratio": pricing.input_ratio,
            "output_ratio": pricing.output_ratio,
            "is_free_model": pricing.is_free,
            "is_member": is_member,
            "input_free_threshold": settings.BILLING_INPUT_FREE_THRESHOLD,
        }
        amount = charges.hold_amount(
            input_chars=input_chars,
            max_tokens=max_tokens,
            hold_chars_per_token=settings.BILLING_HOLD_CHARS_PER_TOKEN,
            **common,
        )
        free_part = paid_part = 0
        writes: list[tuple[str, list[Any]]] = []
        if amount > 0:
            paid_balance, paid_held, usage_id, used, held = rows or _wallet_usage_locked(cursor, user_id, day)
            free_available = max(0, tier_quota(tier) - used - held)
            paid_available = max(0, paid_balance - paid_held)
            if amount > free_available + paid_available:
                input_cost = charges.compute_charge(input_chars=input_chars, output_chars=0, **common).input_cost
                affordable = charges.max_affordable_tokens(
                    available=free_available + paid_available,
                    input_cost=input_cost,
                    output_ratio=pricing.output_ratio,
                    hold_chars_per_token=settings.BILLING_HOLD_CHARS_PER_TOKEN,
                    is_member=is_member,
                    is_free_model=pricing.is_free,
                    cap=pricing.max_output_tokens,
                )
                raise ApplicationError(
                    _(
                        "Not enough characters: this request may cost %(need)s, you have %(have)s. "
                        "Lower maxTokens to %(tokens)s or top up."
                    )
                    % {"need": amount, "have": free_available + paid_available, "tokens": affordable},
                    status_code=402,
                    code="insufficient_balance",
                    extra={
                        "required": amount,
                        "available": free_available + paid_available,
                        "maxAffordableTokens": affordable,
                    },
                )
            free_part = min(amount, free_available)
            paid_part = amount - free_part
            if paid_part:
                writes.append(
                    ("UPDATE billing_wallet SET paid_held = %s WHERE user_id = %s", [paid_held + paid_part, user_id])
                )
            if free_part:
                writes.append(("UPDATE billing_dailyusage SET held = %s WHERE id = %s", [held + free_part, usage_id]))
        writes.append(
            (
                "INSERT INTO billing_hold (generation_id, user_id, model_id, day, amount, free_part, paid_part,"
                " is_member, status, created_at, expires_at, closed_at)"
                " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL)",
                [
                    generation_id,
                    user_id,
                    pricing.model_id,
                    _day(day),
                    amount,
                    free_part,
                    paid_part,
                    is_member,
                    Hold.Status.ACTIVE.value,
                    _dt(now),
                    _dt(now + timedelta(seconds=settings.BILLING_HOLD_TTL_SECONDS)),
                ],
            )
        )
        result = HoldResult(amount=amount, is_member=is_member)
        if also is not None:
            writes.append(also(result))
        _write(cursor, writes)
    return result


@dataclass(slots=True)
class _Locked:
    """An active hold with (when it reserved anything) its wallet and usage rows, all locked."""

    id: int
    user_id: int
    day: date
    amount: int
    free_part: int
    paid_part: int
    is_member: bool
    paid_balance: int = 0
    paid_held: int = 0
    usage_id: int = 0
    used: int = 0
    held: int = 0
    tier: str | None = None


_HOLD_COLUMNS = "h.id, h.user_id, h.day, h.amount, h.free_part, h.paid_part, h.is_member, h.status"


def _hold_locked(cursor: Any, generation_id: str, *, with_tier: bool) -> _Locked | None:
    """Lock an active hold, then (if it reserved anything) its wallet, then its day's usage row — one
    statement in the common case — and read the user's membership tier as it is now (`with_tier`).
    None when there is no such hold or it is no longer active.
    """
    now = _dt(timezone.now())
    tier_sql = f", ({_MEMBER_TIER_SQL.format(user='h.user_id')})" if with_tier else ""
    tier_params = [now, now] if with_tier else []
    # The join conditions keep holds that reserved nothing, and holds no longer active, out of it:
    # those lock no wallet or usage row (as before); the statement below then reads them alone.
    cursor.execute(
        f"SELECT {_HOLD_COLUMNS}, w.paid_balance, w.paid_held, u.id, u.used, u.held{tier_sql}"  # noqa: S608 (constant SQL, values as parameters)
        " FROM billing_hold h"
        " JOIN billing_wallet w ON w.user_id = h.user_id AND h.amount > 0 AND h.status = %s"
        " JOIN billing_dailyusage u ON u.user_id = h.user_id AND u.day = h.day"
        " WHERE h.generation_id = %s" + _for_update("h, w, u"),
        [*tier_params, Hold.Status.ACTIVE.value, generation_id],
    )
    row = cursor.fetchone()
    if row is not None:
        hold = _Locked(*row[:7], *row[8:13])
        hold.is_member = bool(hold.is_member)
        if with_tier:
            hold.tier = row[13]
        return hold
    cursor.execute(
        f"SELECT {_HOLD_COLUMNS} FROM billing_hold h WHERE h.generation_id = %s" + _for_update("h"),  # noqa: S608 (constant SQL, values as parameters)
        [generation_id],
    )
    row = cursor.fetchone()
    if row is None or row[7] != Hold.Status.ACTIVE:
        return None
    hold = _Locked(*row[:7])
    hold.is_member = bool(hold.is_member)
    if hold.amount > 0:  # wallet or usage row missing (never in practice): lock/create them in order
        hold.paid_balance, hold.paid_held, hold.usage_id, hold.used, hold.held = _wallet_usage_locked(
            cursor, hold.user_id, hold.day
        )
    if with_tier:
        hold.tier = _member_tier(cursor, hold.user_id, timezone.now())
    return hold


def _unreserve(hold: _Locked) -> tuple[dict[str, Any], dict[str, Any]]:
    """Give back the hold's reservation (rows already locked): the new wallet and usage column values."""
    wallet_set: dict[str, Any] = {}
    usage_set: dict[str, Any] = {}
    if hold.amount > 0:
        if hold.paid_part:
            hold.paid_held -= hold.paid_part
            wallet_set["paid_held"] = hold.paid_held
        if hold.free_part:
            hold.held -= hold.free_part
            usage_set["held"] = hold.held
    return wallet_set, usage_set


def _row_updates(hold: _Locked, wallet_set: dict[str, Any], usage_set: dict[str, Any]) -> list[tuple[str, list[Any]]]:
    """One UPDATE per changed row (a row may be modified only once per PostgreSQL statement)."""
    writes = []
    if wallet_set:
        columns = ", ".join(f"{name} = %s" for name in wallet_set)
        writes.append((f"UPDATE billing_wallet SET {columns} WHERE user_id = %s", [*wallet_set.values(), hold.user_id]))  # noqa: S608 (constant SQL, values as parameters)
    if usage_set:
        columns = ", ".join(f"{name} = %s" for name in usage_set)
        writes.append((f"UPDATE billing_dailyusage SET {columns} WHERE id = %s", [*usage_set.values(), hold.usage_id]))  # noqa: S608 (constant SQL, values as parameters)
    return writes


def _close_write(hold: _Locked, status: str, now: datetime) -> tuple[str, list[Any]]:
    return ("UPDATE billing_hold SET status = %s, closed_at = %s WHERE id = %s", [status, _dt(now), hold.id])


def charge_settle(
    *,
    generation_id: str,
    pricing: Pricing,
    input_chars: int,
    output_chars: int,
    also: Callable[[Consumption], Statement] | None = None,
) -> Consumption:
    """Replace the hold by the real charge (never more than the hold). Idempotent: a generation that
    was already settled or released returns its existing charge (or nothing) and changes nothing.
    `also` gives one more statement for the charge (the generation record's), run with the writes."""
    with transaction.atomic(), connection.cursor() as cursor:
        hold = _hold_locked(cursor, generation_id, with_tier=True)
        if hold is None:
            consumption = charge_get(generation_id=generation_id)
            if also is not None:
                cursor.execute(*also(consumption))
            return consumption
        charge = charges.compute_charge(
            input_chars=input_chars,
            output_chars=output_chars,
            input_ratio=pricing.input_ratio,
            output_ratio=pricing.output_ratio,
            is_free_model=pricing.is_free,
            is_member=hold.is_member,
            input_free_threshold=settings.BILLING_INPUT_FREE_THRESHOLD,
        )
        input_cost, output_cost = charge.input_cost, charge.output_cost
        if input_cost + output_cost > hold.amount:  # output beyond the per-token bound: the hold caps it
            input_cost = min(input_cost, hold.amount)
            output_cost = hold.amount - input_cost
        total = input_cost + output_cost
        now = timezone.now()
        wallet_set, usage_set = _unreserve(hold)
        writes: list[tuple[str, list[Any]]] = []
        free_used = paid_used = 0
        if total > 0:
            # The hold's own free part stays usable even if the day's quota shrank since (membership
            # ended, plan edited): so the paid part never exceeds the hold's paid part, and settling
            # can never dip into funds reserved by other holds. The quota is the one of the user's
            # membership as it is now (read under the locks, in the locking statement).
            free_available = max(0, tier_quota(hold.tier) - hold.used - hold.held, hold.free_part)
            free_used = min(total, free_available)
            paid_used = total - free_used
            if free_used:
                hold.used += free_used
                usage_set["used"] = hold.used
            if paid_used:
                new_balance = hold.paid_balance - paid_used
                if new_balance < 0:
                    raise ApplicationError(
                        _("The balance cannot become negative."), status_code=400, code="negative_balance"
                    )
                hold.paid_balance = new_balance
                wallet_set["paid_balance"] = new_balance
                wallet_set["updated_at"] = _dt(now)
                writes.append(
                    (
                        "INSERT INTO billing_ledgerentry (user_id, kind, amount, balance_after, generation_id, note,"
                        " created_by_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, NULL, %s)",
                        [
                            hold.user_id,
                            LedgerEntry.Kind.CHARGE.value,
                            -paid_used,
                            new_balance,
                            generation_id,
                            f"generation {generation_id} ({pricing.model_id})"[:300],
                            _dt(now),
                        ],
                    )
                )
        writes.append(
            (
                "INSERT INTO billing_charge (generation_id, user_id, model_id, day, input_chars, output_chars,"
                " input_cost, output_cost, total_cost, used_daily_free, used_paid, member_benefit_applied,"
                " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    generation_id,
                    hold.user_id,
                    pricing.model_id,
                    _day(hold.day),
                    input_chars,
                    output_chars,
                    input_cost,
                    output_cost,
                    total,
                    free_used,
                    paid_used,
                    charge.member_benefit_applied,
                    _dt(now),
                ],
            )
        )
        writes.append(_close_write(hold, Hold.Status.SETTLED.value, now))
        consumption = Consumption(total, input_cost, output_cost, free_used, paid_used, charge.member_benefit_applied)
        if also is not None:
            writes.append(also(consumption))
        _write(cursor, [*_row_updates(hold, wallet_set, usage_set), *writes])
    return consumption


def hold_release(*, generation_id: str, status: str = Hold.Status.RELEASED, also: Statement | None = None) -> bool:
    """Give the reservation back without charging (upstream failure). False if it was not active.
    `also` is one more statement (the generation record's) to run with the writes, active or not."""
    with transaction.atomic(), connection.cursor() as cursor:
        hold = _hold_locked(cursor, generation_id, with_tier=False)
        if hold is None:
            if also is not None:
                cursor.execute(*also)
            return False
        wallet_set, usage_set = _unreserve(hold)
        writes = [*_row_updates(hold, wallet_set, usage_set), _close_write(hold, str(status), timezone.now())]
        _write(cursor, [*writes, also] if also is not None else writes)
    return True


def holds_expire(*, now: datetime | None = None, limit: int = 500) -> list[str]:
    """Release holds past their expiry (left by a crashed process); returns their generation ids."""
    now = now or timezone.now()
    ids = list(
        Hold.objects.filter(status=Hold.Status.ACTIVE, expires_at__lte=now)
        .order_by("expires_at")
        .values_list("generation_id", flat=True)[:limit]
    )
    return [gid for gid in ids if hold_release(generation_id=gid, status=Hold.Status.EXPIRED)]


# --- balance changes by operators and users ----------------------------------------------------


def wallet_grant(
    *, user: Any, amount: int, note: str = "", kind: str = LedgerEntry.Kind.GRANT, created_by: Any = None
) -> LedgerEntry:
    if amount <= 0:
        raise ValueError("a grant must be positive")
    with transaction.atomic():
        return _ledger(_wallet_locked(user.pk), kind=kind, amount=amount, note=note, created_by=created_by)


def wallet_adjust(*, user: Any, amount: int, note: str, created_by: Any = None) -> LedgerEntry:
    """A signed correction by an operator; it cannot take the balance below zero or below what is held."""
    if amount == 0:
        raise ValueError("an adjustment cannot be zero")
    with transaction.atomic():
        wallet = _wallet_locked(user.pk)
        if wallet.paid_balance + amount < wallet.paid_held:
            raise ApplicationError(_("The balance cannot become negative."), status_code=400, code="negative_balance")
        return _ledger(wallet, kind=LedgerEntry.Kind.ADJUST, amount=amount, note=note, created_by=created_by)


def membership_extend(*, user: Any, days: int, tier: str = MEMBER_TIER, note: str = "") -> Membership:
    """Add `days` after the last membership's end (current or already queued), or from now."""
    if days <= 0:
        raise ValueError("days must be positive")
    now = timezone.now()
    with transaction.atomic():
        _wallet_locked(user.pk)  # serialises concurrent extensions of one user
        # Not `membership_active`: a second extension creates a period starting in the future, and a
        # third must start after that one, not overlap it.
        last = Membership.objects.filter(user=user, ends_at__gt=now).order_by("-ends_at").first()
        start = last.ends_at if last else now
        return Membership.objects.create(
            user=user, tier=tier, starts_at=start, ends_at=start + timedelta(days=days), note=note[:300]
        )


def codes_create(
    *, count: int, amount: int = 0, member_days: int = 0, batch: str = "", expires_at: datetime | None = None
) -> list[RedemptionCode]:
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
    return RedemptionCode.objects.bulk_create(codes)


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
            _ledger(_wallet_locked(user.pk), kind=LedgerEntry.Kind.REDEEM, amount=record.amount, note=f"code {record}")
        if record.member_days:
            membership_extend(user=user, days=record.member_days, note=f"code {record}")
        record.redeemed_by, record.redeemed_at = user, now
    return record
