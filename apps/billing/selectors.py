"""Billing reads: the billing day, memberships, daily quotas (with the plan cache), charges, balance,
membership summary, ledger, per-day usage. No writes here, and no import of the services (they import
these)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, QuerySet, Sum
from django.utils import timezone
from rest_framework.fields import DateTimeField

from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Membership, Plan, Wallet

DEFAULT_TIER = "default"


@dataclass(frozen=True, slots=True)
class Consumption:
    """What one generation cost (its `Charge`, or zeros when nothing was charged)."""

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


def tier_quota(tier: str | None) -> int:
    """The daily free quota of a membership of `tier` (None: no membership): its plan's, else the
    setting (`BILLING_DAILY_FREE_QUOTA`, or `BILLING_MEMBER_DAILY_FREE_QUOTA` for any tier)."""
    quota = _plan_quotas().get(DEFAULT_TIER if tier is None else tier)
    if quota is not None:
        return quota
    return settings.BILLING_DAILY_FREE_QUOTA if tier is None else settings.BILLING_MEMBER_DAILY_FREE_QUOTA


def daily_quota(*, membership: Membership | None) -> int:
    return tier_quota(membership.tier if membership else None)


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


# --- balance, ledger, usage --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MembershipSummary:
    active: bool
    tier: str | None
    expires_at: datetime | None

    def as_api(self) -> dict[str, Any]:
        return {"active": self.active, "tier": self.tier, "expiresAt": self.expires_at}


def membership_current(*, user: Any, at: datetime | None = None) -> MembershipSummary:
    """The active membership, with `expires_at` at the end of its chain of back-to-back periods
    (an extension queues a period starting when the previous one ends)."""
    at = at or timezone.now()
    active = membership_active(user=user, at=at)
    if active is None:
        return MembershipSummary(active=False, tier=None, expires_at=None)
    end = active.ends_at
    later = Membership.objects.filter(user=user, ends_at__gt=end).order_by("starts_at", "ends_at")
    for period in later.values_list("starts_at", "ends_at"):
        if period[0] > end:
            break  # a gap: the membership lapses at `end`
        end = max(end, period[1])
    return MembershipSummary(active=True, tier=active.tier, expires_at=end)


def membership_summary(*, user: Any) -> dict[str, Any]:
    """`{"active", "tier", "expiresAt"}` for `/auth/me`, JSON-ready (`expiresAt` formatted exactly as
    DRF's `DateTimeField` formats it elsewhere, e.g. in `/billing/balance`)."""
    summary = membership_current(user=user).as_api()
    if summary["expiresAt"] is not None:
        summary["expiresAt"] = DateTimeField().to_representation(summary["expiresAt"])
    return summary


@dataclass(frozen=True, slots=True)
class DailyFree:
    quota: int
    used: int
    held: int
    remaining: int
    resets_at: datetime
    day: date


@dataclass(frozen=True, slots=True)
class Balance:
    paid_balance: int
    paid_held: int
    daily_free: DailyFree
    membership: MembershipSummary

    @property
    def available(self) -> int:
        """Paid characters a new request can reserve: the balance minus what running calls hold."""
        return max(0, self.paid_balance - self.paid_held)

    def as_api(self) -> dict[str, Any]:
        return {
            "paidBalance": self.paid_balance,
            "paidHeld": self.paid_held,
            "available": self.available,
            "dailyFree": {
                "quota": self.daily_free.quota,
                "used": self.daily_free.used,
                "held": self.daily_free.held,
                "remaining": self.daily_free.remaining,
                "resetsAt": self.daily_free.resets_at,
            },
            "membership": self.membership.as_api(),
        }


def balance_get(*, user: Any, at: datetime | None = None) -> Balance:
    """`paidBalance` is the settled balance (Σ ledger); `available` subtracts what in-flight generations
    hold. `dailyFree.remaining` = quota − used − held (what the next request can still take)."""
    at = at or timezone.now()
    wallet = Wallet.objects.filter(pk=user.pk).values_list("paid_balance", "paid_held").first() or (0, 0)
    day = billing_day(at)
    used, held = DailyUsage.objects.filter(user=user, day=day).values_list("used", "held").first() or (0, 0)
    membership = membership_active(user=user, at=at)
    quota = daily_quota(membership=membership)
    return Balance(
        paid_balance=wallet[0],
        paid_held=wallet[1],
        daily_free=DailyFree(
            quota=quota,
            used=used,
            held=held,
            remaining=max(0, quota - used - held),
            resets_at=next_reset(at),
            day=day,
        ),
        membership=membership_current(user=user, at=at),
    )


def ledger_list(*, user: Any, kind: str | None = None) -> QuerySet[LedgerEntry]:
    """The user's ledger entries, newest first."""
    qs = LedgerEntry.objects.filter(user=user)
    if kind:
        qs = qs.filter(kind=kind)
    return qs.order_by("-created_at", "-id")


USAGE_FIELDS = (
    "totalCost",
    "inputCost",
    "outputCost",
    "usedDailyFree",
    "usedPaid",
    "generations",
    "inputChars",
    "outputChars",
)


def usage_by_day(*, user: Any, start: date, end: date) -> dict[str, Any]:
    """Per-day totals of the user's charges from `start` to `end` (inclusive, billing days in
    BILLING_TIMEZONE), every day listed (zeros where nothing was charged), oldest first, plus totals."""
    rows = (
        Charge.objects.filter(user=user, day__gte=start, day__lte=end)
        .values("day")
        .annotate(
            totalCost=Sum("total_cost"),
            inputCost=Sum("input_cost"),
            outputCost=Sum("output_cost"),
            usedDailyFree=Sum("used_daily_free"),
            usedPaid=Sum("used_paid"),
            generations=Count("id"),
            inputChars=Sum("input_chars"),
            outputChars=Sum("output_chars"),
        )
        .order_by("day")
    )
    by_day = {row["day"]: row for row in rows}
    days: list[dict[str, Any]] = []
    totals = dict.fromkeys(USAGE_FIELDS, 0)
    current = start
    while current <= end:
        row: Mapping[str, Any] = by_day.get(current, {})
        entry: dict[str, Any] = {"date": current.isoformat()}
        for name in USAGE_FIELDS:
            value = int(row.get(name) or 0)
            entry[name] = value
            totals[name] += value
        days.append(entry)
        current += timedelta(days=1)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "timezone": billing_tz().key,
        "days": days,
        "totals": totals,
    }


def holds_expired_since(*, since: datetime) -> QuerySet[Hold, str]:
    """The generation ids of the holds that expired since `since`, lazily: a subquery for the caller's
    update of its own records (billing knows nothing of generations)."""
    return Hold.objects.filter(status=Hold.Status.EXPIRED, closed_at__gte=since).values_list("generation_id", flat=True)
