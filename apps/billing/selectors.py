"""Billing reads: the billing day, memberships, daily quotas (with the plan cache), charges, balance,
membership summary, ledger, per-day usage, and the ledger audit. No writes here, and no import of the
services (they import these)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any, Literal, NamedTuple
from zoneinfo import ZoneInfo

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection
from django.db.models import (
    Count,
    Exists,
    F,
    IntegerField,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
    Window,
)
from django.db.models.functions import Coalesce, Lag
from django.utils import timezone

from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Membership, Plan, Wallet
from apps.core.db import Statement

DEFAULT_TIER = "default"


@dataclass(frozen=True, slots=True)
class Consumption:
    """What one generation cost (its `Charge`, or zeros when nothing was charged). `stopped_by_balance`:
    the output was cut where the user's funds ended (the caller, which metered it, says so)."""

    total_cost: int = 0
    input_cost: int = 0
    output_cost: int = 0
    used_daily_free: int = 0
    used_paid: int = 0
    member_benefit_applied: bool = False
    stopped_by_balance: bool = False

    def as_api(self) -> dict[str, Any]:
        return {
            "totalCost": self.total_cost,
            "inputCost": self.input_cost,
            "outputCost": self.output_cost,
            "usedDailyFree": self.used_daily_free,
            "usedPaid": self.used_paid,
            "memberBenefitApplied": self.member_benefit_applied,
            "stoppedByBalance": self.stopped_by_balance,
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


def plan_quotas() -> dict[str, int]:
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
    quota = plan_quotas().get(DEFAULT_TIER if tier is None else tier)
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


# One statement, one round trip: the ORM's three queries cost ≈ 1.5–2 ms of CPU on every call of the
# OpenAI-compatible API (query compilation), for three numbers and a tier.
_AVAILABLE_SQL = (
    "SELECT (SELECT w.paid_balance - w.paid_held FROM billing_wallet w WHERE w.user_id = %s),"
    " (SELECT u.used + u.held FROM billing_dailyusage u WHERE u.user_id = %s AND u.day = %s),"
    " (SELECT m.tier FROM billing_membership m WHERE m.user_id = %s AND m.starts_at <= %s AND m.ends_at > %s"
    " ORDER BY m.ends_at DESC LIMIT 1)"
)


def available_get(*, user_id: int, at: datetime | None = None) -> int:
    """What a new call can reserve now: today's free quota left (quota − used − held) plus the paid
    balance less what running calls hold (the `X-Balance-Remaining` of the OpenAI-compatible API)."""
    with connection.cursor() as cursor:
        cursor.execute(*available_statement(user_id=user_id, at=at))
        return available_read(cursor.fetchone())


def available_statement(*, user_id: int, at: datetime | None = None) -> Statement:
    """`available_get`'s one statement, for a caller that runs statements itself (`available_read`)."""
    at = at or timezone.now()
    moment = connection.ops.adapt_datetimefield_value(at)
    day = connection.ops.adapt_datefield_value(billing_day(at))
    return _AVAILABLE_SQL, [user_id, user_id, day, user_id, moment, moment]


def available_read(row: Sequence[Any]) -> int:
    paid_available, free_used, tier = row
    return max(0, tier_quota(tier) - (free_used or 0)) + max(0, paid_available or 0)


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


def _usage_sums() -> dict[str, Any]:
    """The sums of a usage report, named as the API names them: the one definition behind the user's
    `/billing/usage` (`usage_by_day`) and the operators' dashboard (`usage_by_day`, `usage_by`)."""
    return {
        "totalCost": Sum("total_cost"),
        "inputCost": Sum("input_cost"),
        "outputCost": Sum("output_cost"),
        "usedDailyFree": Sum("used_daily_free"),
        "usedPaid": Sum("used_paid"),
        "generations": Count("id"),
        "inputChars": Sum("input_chars"),
        "outputChars": Sum("output_chars"),
    }


def _usage_of(row: Mapping[str, Any]) -> dict[str, int]:
    return {name: int(row.get(name) or 0) for name in USAGE_FIELDS}


def _charges_between(*, start: date, end: date, user: Any | None) -> QuerySet[Charge]:
    charges = Charge.objects.filter(day__gte=start, day__lte=end)
    return charges if user is None else charges.filter(user=user)


def usage_by_day(*, user: Any | None, start: date, end: date) -> dict[str, Any]:
    """Per-day totals of the user's charges (None: every user's) from `start` to `end` (inclusive,
    billing days in BILLING_TIMEZONE), every day listed (zeros where nothing was charged), oldest first,
    plus totals."""
    rows = _charges_between(start=start, end=end, user=user).values("day").annotate(**_usage_sums()).order_by("day")
    by_day = {row["day"]: row for row in rows}
    days: list[dict[str, Any]] = []
    totals = dict.fromkeys(USAGE_FIELDS, 0)
    current = start
    while current <= end:
        entry: dict[str, Any] = {"date": current.isoformat(), **_usage_of(by_day.get(current, {}))}
        for name in USAGE_FIELDS:
            totals[name] += entry[name]
        days.append(entry)
        current += timedelta(days=1)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        "timezone": billing_tz().key,
        "days": days,
        "totals": totals,
    }


class UsageRow(NamedTuple):
    """One group of a usage report: its key (a model id, a user id), what to show for it, its sums."""

    key: str
    label: str
    usage: dict[str, int]


def usage_by(*, group: Literal["model", "user"], start: date, end: date, limit: int | None = None) -> list[UsageRow]:
    """Every user's charges from `start` to `end` (billing days, inclusive) summed per model or per user,
    the largest `totalCost` first (then by key), at most `limit` groups."""
    charges = _charges_between(start=start, end=end, user=None)
    if group == "model":
        rows = charges.values(key=F("model_id"), label=F("model_id"))
    else:
        rows = charges.values(key=F("user_id"), label=F(f"user__{get_user_model().USERNAME_FIELD}"))
    ordered = rows.annotate(**_usage_sums()).order_by(F("totalCost").desc(), F("key"))
    return [
        UsageRow(str(row["key"]), str(row["label"]), _usage_of(row))
        for row in (ordered[:limit] if limit is not None else ordered)
    ]


def day_bounds(*, start: date, end: date) -> tuple[datetime, datetime]:
    """The instants from the start of billing day `start` to the start of the day after `end`."""
    tz = billing_tz()
    return (
        datetime.combine(start, datetime.min.time(), tzinfo=tz),
        datetime.combine(end + timedelta(days=1), datetime.min.time(), tzinfo=tz),
    )


@dataclass(frozen=True, slots=True)
class HoldsOpen:
    """The active holds: how many, the characters they reserve, and when the oldest was placed."""

    count: int
    characters: int
    oldest_created_at: datetime | None


def holds_open() -> HoldsOpen:
    """One aggregate over the active holds (the `status, expires_at` index)."""
    row = Hold.objects.filter(status=Hold.Status.ACTIVE).aggregate(
        count=Count("pk"), characters=Sum("amount"), oldest=Min("created_at")
    )
    return HoldsOpen(row["count"], row["characters"] or 0, row["oldest"])


def holds_expired_since(*, since: datetime) -> QuerySet[Hold, str]:
    """The generation ids of the holds that expired since `since`, lazily: a subquery for the caller's
    update of its own records (billing knows nothing of generations)."""
    return Hold.objects.filter(status=Hold.Status.EXPIRED, closed_at__gte=since).values_list("generation_id", flat=True)


# --- the ledger audit --------------------------------------------------------------------------

AuditCheck = Literal["balance", "chain", "held", "daily-used", "daily-held", "charge", "negative"]


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One broken invariant of one user (`username`: "?" when the user is gone)."""

    user_id: int
    check: AuditCheck
    message: str
    username: str = "?"


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    wallets: int
    entries: int
    charges: int
    active_holds: int
    usage_rows: int
    balance: int
    held: int


@dataclass(frozen=True, slots=True)
class LedgerAudit:
    totals: LedgerTotals
    mismatches: list[Mismatch]


def ledger_audit(*, since: date | None = None) -> LedgerAudit:
    """Check the billing invariants for every user (each check a handful of aggregate queries, whatever
    the number of users) and return what is broken, in check order, with the books' totals:

    1. `Wallet.paid_balance` = Σ `LedgerEntry.amount` of the user (and no ledger without a wallet);
    2. the `balance_after` chain: ordered by id, each entry = previous entry's `balance_after` + `amount`
       (the first one = its amount);
    3. `Wallet.paid_held` = Σ `paid_part` of the user's active holds;
    4. `DailyUsage.used` = Σ `Charge.used_daily_free` per (user, day) — from `since` when given;
    5. `DailyUsage.held` = Σ `free_part` of active holds per (user, day);
    6. every `Charge` with `used_paid > 0` has exactly one `charge` ledger entry of −used_paid carrying its
       generation id (and one with `used_paid = 0` has none); no `charge` entry without its `Charge`;
    7. no negative balance, held or daily usage, and nothing held beyond the balance.
    """
    found = [
        *_check_wallet_vs_ledger(),
        *_check_ledger_chain(),
        *_check_held(),
        *_check_daily_used(since),
        *_check_daily_held(),
        *_check_charges_vs_ledger(),
        *_check_negative(),
    ]
    sums = Wallet.objects.aggregate(balance=Sum("paid_balance"), held=Sum("paid_held"), wallets=Count("pk"))
    totals = LedgerTotals(
        wallets=sums["wallets"],
        entries=LedgerEntry.objects.count(),
        charges=Charge.objects.count(),
        active_holds=Hold.objects.filter(status=Hold.Status.ACTIVE).count(),
        usage_rows=DailyUsage.objects.count(),
        balance=sums["balance"] or 0,
        held=sums["held"] or 0,
    )
    if found:
        user_model = get_user_model()
        names = dict(
            user_model.objects.filter(pk__in={m.user_id for m in found}).values_list("pk", user_model.USERNAME_FIELD)
        )
        found = [replace(m, username=names.get(m.user_id, "?")) for m in found]
    return LedgerAudit(totals=totals, mismatches=found)


def _sum_of(qs: QuerySet[Any], field: str, *, by: str) -> Coalesce:
    """`Coalesce((SELECT SUM(field) FROM qs GROUP BY by), 0)` as a correlated subquery."""
    return Coalesce(
        Subquery(qs.order_by().values(by).annotate(total=Sum(field)).values("total")[:1], output_field=IntegerField()),
        Value(0),
    )


def _fetch(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


def _check_wallet_vs_ledger() -> list[Mismatch]:
    rows = _fetch(
        f"""
        SELECT w.user_id, w.paid_balance, COALESCE(l.total, 0)
        FROM {Wallet._meta.db_table} w
        LEFT JOIN (SELECT user_id, SUM(amount) AS total FROM {LedgerEntry._meta.db_table} GROUP BY user_id) l
            ON l.user_id = w.user_id
        WHERE w.paid_balance <> COALESCE(l.total, 0)
        ORDER BY w.user_id
        """  # noqa: S608 (table names from model metadata)
    )
    out = [
        Mismatch(uid, "balance", f"wallet paid_balance {balance} ≠ Σ ledger {total}") for uid, balance, total in rows
    ]
    orphans = (
        LedgerEntry.objects.filter(~Exists(Wallet.objects.filter(user_id=OuterRef("user_id"))))
        .values("user_id")
        .annotate(total=Sum("amount"), n=Count("id"))
        .values_list("user_id", "total", "n")
    )
    out += [
        Mismatch(uid, "balance", f"no wallet, but {n} ledger entries summing to {total}") for uid, total, n in orphans
    ]
    return out


def _check_ledger_chain() -> list[Mismatch]:
    rows = (
        LedgerEntry.objects.annotate(
            previous=Window(Lag("balance_after"), partition_by=[F("user_id")], order_by=F("id").asc())
        )
        .annotate(expected=Coalesce(F("previous"), Value(0)) + F("amount"))
        .exclude(balance_after=F("expected"))
        .values_list("user_id", "id", "kind", "amount", "balance_after", "expected")
        .order_by("user_id", "id")
    )
    return [
        Mismatch(uid, "chain", f"ledger entry {eid} ({kind} {amount:+d}) has balance_after {after}, expected {exp}")
        for uid, eid, kind, amount, after, exp in rows
    ]


def _check_held() -> list[Mismatch]:
    holds = Hold.objects.filter(user_id=OuterRef("user_id"), status=Hold.Status.ACTIVE)
    rows = (
        Wallet.objects.annotate(held_sum=_sum_of(holds, "paid_part", by="user_id"))
        .exclude(paid_held=F("held_sum"))
        .values_list("user_id", "paid_held", "held_sum")
    )
    out = [
        Mismatch(uid, "held", f"wallet paid_held {held} ≠ Σ paid part of active holds {total}")
        for uid, held, total in rows
    ]
    orphans = (
        Hold.objects.filter(status=Hold.Status.ACTIVE, paid_part__gt=0)
        .filter(~Exists(Wallet.objects.filter(user_id=OuterRef("user_id"))))
        .values("user_id")
        .annotate(total=Sum("paid_part"))
        .values_list("user_id", "total")
    )
    out += [Mismatch(uid, "held", f"no wallet, but active holds of {total} paid") for uid, total in orphans]
    return out


def _check_daily_used(since: date | None) -> list[Mismatch]:
    charges = Charge.objects.all()
    if since is not None:
        charges = charges.filter(day__gte=since)
    day_filter = "AND u.day >= %s" if since is not None else ""
    rows = _fetch(
        f"""
        SELECT u.user_id, u.day, u.used, COALESCE(c.total, 0)
        FROM {DailyUsage._meta.db_table} u
        LEFT JOIN (
            SELECT user_id, day, SUM(used_daily_free) AS total FROM {Charge._meta.db_table} GROUP BY user_id, day
        ) c ON c.user_id = u.user_id AND c.day = u.day
        WHERE u.used <> COALESCE(c.total, 0) {day_filter}
        ORDER BY u.user_id, u.day
        """,  # noqa: S608 (table names from model metadata, values as parameters)
        [since] if since is not None else [],
    )
    out = [
        Mismatch(uid, "daily-used", f"{day}: daily usage used {used} ≠ Σ charges' usedDailyFree {charged}")
        for uid, day, used, charged in rows
    ]
    orphans = (
        charges.filter(used_daily_free__gt=0)
        .filter(~Exists(DailyUsage.objects.filter(user_id=OuterRef("user_id"), day=OuterRef("day"))))
        .values("user_id", "day")
        .annotate(total=Sum("used_daily_free"))
        .values_list("user_id", "day", "total")
    )
    out += [
        Mismatch(uid, "daily-used", f"{day}: no daily usage row, but charges used {total} free")
        for uid, day, total in orphans
    ]
    return out


def _check_daily_held() -> list[Mismatch]:
    # Both sides are small (in-flight holds, rows with something held), so compare them in Python.
    expected = {
        (uid, day): total
        for uid, day, total in Hold.objects.filter(status=Hold.Status.ACTIVE, free_part__gt=0)
        .values("user_id", "day")
        .annotate(total=Sum("free_part"))
        .values_list("user_id", "day", "total")
    }
    actual = {
        (uid, day): held for uid, day, held in DailyUsage.objects.exclude(held=0).values_list("user_id", "day", "held")
    }
    out: list[Mismatch] = []
    for key in sorted(expected.keys() | actual.keys(), key=lambda k: (k[0], k[1])):
        if expected.get(key, 0) != actual.get(key, 0):
            out.append(
                Mismatch(
                    key[0],
                    "daily-held",
                    f"{key[1]}: daily usage held {actual.get(key, 0)} ≠ Σ free part of active holds "
                    f"{expected.get(key, 0)}",
                )
            )
    return out


def _check_charges_vs_ledger() -> list[Mismatch]:
    # One hash join of the charges with the ledger's charge entries grouped by generation (a
    # correlated subquery per charge is several times slower at 100k charges).
    charge, ledger = Charge._meta.db_table, LedgerEntry._meta.db_table
    sql = f"""
        SELECT c.user_id, c.generation_id, c.used_paid, COALESCE(l.n, 0), COALESCE(l.total, 0)
        FROM {charge} c
        LEFT JOIN (
            SELECT user_id, generation_id, COUNT(*) AS n, SUM(amount) AS total
            FROM {ledger} WHERE kind = %s GROUP BY user_id, generation_id
        ) l ON l.generation_id = c.generation_id AND l.user_id = c.user_id
        WHERE COALESCE(l.n, 0) <> CASE WHEN c.used_paid > 0 THEN 1 ELSE 0 END
           OR COALESCE(l.total, 0) <> -c.used_paid
        ORDER BY c.user_id, c.generation_id
    """  # noqa: S608 (table names from model metadata, values as parameters)
    rows = _fetch(sql, [LedgerEntry.Kind.CHARGE])
    out = [
        Mismatch(uid, "charge", f"charge {gid} used_paid {paid}: {n} ledger charge entries summing to {charged}")
        for uid, gid, paid, n, charged in rows
    ]
    orphans = (
        LedgerEntry.objects.filter(kind=LedgerEntry.Kind.CHARGE)
        .filter(~Exists(Charge.objects.filter(generation_id=OuterRef("generation_id"), user_id=OuterRef("user_id"))))
        .values_list("user_id", "id", "generation_id", "amount")
    )
    out += [
        Mismatch(uid, "charge", f"ledger charge entry {eid} ({amount:+d}) for {gid or '—'} has no charge record")
        for uid, eid, gid, amount in orphans
    ]
    return out


def _check_negative() -> list[Mismatch]:
    out = [
        Mismatch(uid, "negative", f"paid_balance {balance}, paid_held {held}")
        for uid, balance, held in Wallet.objects.filter(
            Q(paid_balance__lt=0) | Q(paid_held__lt=0) | Q(paid_held__gt=F("paid_balance"))
        ).values_list("user_id", "paid_balance", "paid_held")
    ]
    out += [
        Mismatch(uid, "negative", f"ledger entry {eid} has balance_after {after}")
        for uid, eid, after in LedgerEntry.objects.filter(balance_after__lt=0).values_list(
            "user_id", "id", "balance_after"
        )
    ]
    out += [
        Mismatch(uid, "negative", f"{day}: daily usage used {used}, held {held}")
        for uid, day, used, held in DailyUsage.objects.filter(Q(used__lt=0) | Q(held__lt=0)).values_list(
            "user_id", "day", "used", "held"
        )
    ]
    return out
