"""Billing writes. Every balance change happens inside a transaction with the wallet row locked and
leaves a ledger entry; free-quota usage changes with the day's usage row locked. Lock order is always
hold → wallet → daily usage, so concurrent settlements cannot deadlock.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.billing import charges
from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Membership, Plan, RedemptionCode, Wallet
from writing_service.api.exceptions import ApiError

DEFAULT_TIER = "default"
MEMBER_TIER = "member"


@dataclass(frozen=True, slots=True)
class Consumption:
    total_cost: int = 0
    input_cost: int = 0
    output_cost: int = 0
    used_daily_free: int = 0
    used_paid: int = 0
    member_benefit_applied: bool = False

    def as_api(self) -> dict[str, Any]:
        return {
            "totalCost": self.total_cost,
            "inputCost": self.input_cost,
            "outputCost": self.output_cost,
            "usedDailyFree": self.used_daily_free,
            "usedPaid": self.used_paid,
            "memberBenefitApplied": self.member_benefit_applied,
        }


@dataclass(frozen=True, slots=True)
class Pricing:
    """The charge-relevant facts of a model (so billing needs no provider import)."""

    model_id: str
    input_ratio: Decimal
    output_ratio: Decimal
    is_free: bool
    max_output_tokens: int


# --- days, memberships, quota ------------------------------------------------------------------


def billing_tz() -> ZoneInfo:
    return ZoneInfo(settings.BILLING_TIMEZONE)


def billing_day(at: datetime | None = None) -> date:
    return timezone.localdate(at or timezone.now(), billing_tz())


def next_reset(at: datetime | None = None) -> datetime:
    day = billing_day(at)
    return datetime.combine(day + timedelta(days=1), datetime.min.time(), tzinfo=billing_tz())


def membership_active(*, user: Any, at: datetime | None = None) -> Membership | None:
    at = at or timezone.now()
    return Membership.objects.filter(user=user, starts_at__lte=at, ends_at__gt=at).order_by("-ends_at").first()


PLAN_CACHE_SECONDS = 30
_plans: tuple[float, dict[str, int]] = (0.0, {})


def _plan_quotas() -> dict[str, int]:
    """Daily quota per tier, read at most every PLAN_CACHE_SECONDS per process (plans change rarely;
    an operator's edit is live everywhere within that time)."""
    global _plans
    loaded_at, quotas = _plans
    now = time.monotonic()
    if now - loaded_at > PLAN_CACHE_SECONDS:
        quotas = dict(Plan.objects.values_list("tier", "daily_free_quota"))
        _plans = (now, quotas)
    return quotas


def plans_forget() -> None:
    global _plans
    _plans = (0.0, {})


def daily_quota(*, membership: Membership | None) -> int:
    tier = membership.tier if membership else DEFAULT_TIER
    quota = _plan_quotas().get(tier)
    if quota is not None:
        return quota
    return settings.BILLING_MEMBER_DAILY_FREE_QUOTA if membership else settings.BILLING_DAILY_FREE_QUOTA


# --- row locks ---------------------------------------------------------------------------------


def _wallet_locked(user_id: int) -> Wallet:
    wallet = Wallet.objects.select_for_update().filter(pk=user_id).first()
    if wallet is None:  # first use: create it (a concurrent creator wins harmlessly), then lock it
        Wallet.objects.bulk_create([Wallet(user_id=user_id)], ignore_conflicts=True)
        wallet = Wallet.objects.select_for_update().get(pk=user_id)
    return wallet


def _usage_locked(user_id: int, day: date) -> DailyUsage:
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
        raise ApiError(_("The balance cannot become negative."), status_code=400, code="negative_balance")
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


@dataclass(frozen=True, slots=True)
class HoldResult:
    amount: int
    is_member: bool


def hold_place(*, user: Any, generation_id: str, pricing: Pricing, input_chars: int, max_tokens: int) -> HoldResult:
    """Reserve the most the call can cost, free quota first. Not enough ⇒ 402 with `maxAffordableTokens`.

    Must run inside the caller's transaction (the generation record is created in the same one).
    """
    now = timezone.now()
    membership = membership_active(user=user, at=now)
    is_member = membership is not None
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
    day = billing_day(now)
    free_part = paid_part = 0
    if amount > 0:
        wallet = _wallet_locked(user.pk)
        usage = _usage_locked(user.pk, day)
        free_available = max(0, daily_quota(membership=membership) - usage.used - usage.held)
        paid_available = max(0, wallet.paid_balance - wallet.paid_held)
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
            raise ApiError(
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
            Wallet.objects.filter(pk=wallet.pk).update(paid_held=wallet.paid_held + paid_part)
        if free_part:
            DailyUsage.objects.filter(pk=usage.pk).update(held=usage.held + free_part)
    Hold.objects.create(
        generation_id=generation_id,
        user=user,
        model_id=pricing.model_id,
        day=day,
        amount=amount,
        free_part=free_part,
        paid_part=paid_part,
        is_member=is_member,
        expires_at=now + timedelta(seconds=settings.BILLING_HOLD_TTL_SECONDS),
    )
    return HoldResult(amount=amount, is_member=is_member)


def _unreserve(hold: Hold) -> tuple[Wallet | None, DailyUsage | None]:
    """Give back the hold's reservation (rows locked in the global order); return the locked rows."""
    wallet = usage = None
    if hold.amount > 0:
        wallet = _wallet_locked(hold.user_id)
        usage = _usage_locked(hold.user_id, hold.day)
        if hold.paid_part:
            wallet.paid_held -= hold.paid_part
            Wallet.objects.filter(pk=wallet.pk).update(paid_held=wallet.paid_held)
        if hold.free_part:
            usage.held -= hold.free_part
            DailyUsage.objects.filter(pk=usage.pk).update(held=usage.held)
    return wallet, usage


def charge_settle(*, generation_id: str, pricing: Pricing, input_chars: int, output_chars: int) -> Consumption:
    """Replace the hold by the real charge (never more than the hold). Idempotent: a generation that
    was already settled or released returns its existing charge (or nothing) and changes nothing."""
    with transaction.atomic():
        hold = Hold.objects.select_for_update().filter(generation_id=generation_id).first()
        if hold is None or hold.status != Hold.Status.ACTIVE:
            return charge_get(generation_id=generation_id)
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
        wallet, usage = _unreserve(hold)
        free_used = paid_used = 0
        if total > 0:
            assert wallet is not None and usage is not None
            # The hold's own free part stays usable even if the day's quota shrank since (membership
            # ended, plan edited): so the paid part never exceeds the hold's paid part, and settling
            # can never dip into funds reserved by other holds.
            free_available = max(0, _quota_for_hold(hold) - usage.used - usage.held, hold.free_part)
            free_used = min(total, free_available)
            paid_used = total - free_used
            if free_used:
                usage.used += free_used
                DailyUsage.objects.filter(pk=usage.pk).update(used=usage.used)
            if paid_used:
                _ledger(
                    wallet,
                    kind=LedgerEntry.Kind.CHARGE,
                    amount=-paid_used,
                    generation_id=generation_id,
                    note=f"generation {generation_id} ({pricing.model_id})",
                )
        Charge.objects.create(
            generation_id=generation_id,
            user_id=hold.user_id,
            model_id=pricing.model_id,
            day=hold.day,
            input_chars=input_chars,
            output_chars=output_chars,
            input_cost=input_cost,
            output_cost=output_cost,
            total_cost=total,
            used_daily_free=free_used,
            used_paid=paid_used,
            member_benefit_applied=charge.member_benefit_applied,
        )
        Hold.objects.filter(pk=hold.pk).update(status=Hold.Status.SETTLED, closed_at=timezone.now())
    return Consumption(total, input_cost, output_cost, free_used, paid_used, charge.member_benefit_applied)


def _quota_for_hold(hold: Hold) -> int:
    """The free quota of the hold's day for the hold's user (membership as it is now)."""
    return daily_quota(membership=membership_active(user=hold.user_id))


def hold_release(*, generation_id: str, status: str = Hold.Status.RELEASED) -> bool:
    """Give the reservation back without charging (upstream failure). False if it was not active."""
    with transaction.atomic():
        hold = Hold.objects.select_for_update().filter(generation_id=generation_id).first()
        if hold is None or hold.status != Hold.Status.ACTIVE:
            return False
        _unreserve(hold)
        Hold.objects.filter(pk=hold.pk).update(status=status, closed_at=timezone.now())
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


def charge_get(*, generation_id: str) -> Consumption:
    charge = Charge.objects.filter(generation_id=generation_id).first()
    if charge is None:
        return Consumption()
    return Consumption(
        charge.total_cost,
        charge.input_cost,
        charge.output_cost,
        charge.used_daily_free,
        charge.used_paid,
        charge.member_benefit_applied,
    )


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
            raise ApiError(_("The balance cannot become negative."), status_code=400, code="negative_balance")
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
            raise ApiError(_("This code does not exist or has expired."), status_code=400, code="invalid_code")
        won = RedemptionCode.objects.filter(pk=record.pk, redeemed_at__isnull=True).update(
            redeemed_by=user, redeemed_at=now
        )
        if not won:
            raise ApiError(_("This code has already been used."), status_code=400, code="code_used")
        if record.amount:
            _ledger(_wallet_locked(user.pk), kind=LedgerEntry.Kind.REDEEM, amount=record.amount, note=f"code {record}")
        if record.member_days:
            membership_extend(user=user, days=record.member_days, note=f"code {record}")
        record.redeemed_by, record.redeemed_at = user, now
    return record
