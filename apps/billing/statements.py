"""Billing's SQL in one place (Saleor's `lock_objects` pattern): the row locks, always taken in the one
order hold → wallet → daily usage (so concurrent settlements cannot deadlock), and the statements of the
hot path. The services decide what to write; this module only locks, reads and writes, and returns small
typed rows.

The hot path of every generation is written as raw statements (no ORM query compilation, which costs
≈ 0.5 ms CPU per query). On PostgreSQL a hold, an extension and a settlement are **one statement each,
in autocommit** (`hold_place_one`, `hold_extend_one`, `charge_settle_one`): the statement locks its rows,
decides in CTEs (the rules of `charges.plan_hold` and `services._settlement`, in SQL) and writes with
data-modifying CTEs, so no row lock is ever held across a round trip to Python. A release takes two
statements in a transaction (one SELECT locking hold → wallet → usage, one writing statement); a first
use of a wallet or a day creates the rows first. SQLite has neither FOR UPDATE nor data-modifying CTEs:
there the services run the same rules in Python, the transaction IMMEDIATE (writers serialised from
BEGIN), the writes separate statements. The statements' text is constant for a given shape of write,
so that psycopg can prepare them (see `prepare_threshold` in the settings).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime
from typing import Any, NamedTuple

from django.conf import settings
from django.db import connection
from django.db.backends.utils import CursorWrapper
from django.utils import timezone

from apps.billing.models import DailyUsage, Hold, LedgerEntry, Wallet
from apps.billing.selectors import Consumption
from apps.core.db import Statement

# --- row locks through the ORM (grants, adjustments, redemptions, memberships, first use) -----------


def wallet_locked(user_id: int) -> Wallet:
    """The user's wallet, locked; created on first use (a concurrent creator wins harmlessly)."""
    wallet = Wallet.objects.select_for_update().filter(pk=user_id).first()
    if wallet is None:  # first use: create it (a concurrent creator wins harmlessly), then lock it
        Wallet.objects.bulk_create([Wallet(user_id=user_id)], ignore_conflicts=True)
        wallet = Wallet.objects.select_for_update().get(pk=user_id)
    return wallet


def usage_locked(user_id: int, day: date) -> DailyUsage:
    """The user's usage row of `day`, locked; created on first use."""
    usage = DailyUsage.objects.select_for_update().filter(user_id=user_id, day=day).first()
    if usage is None:
        DailyUsage.objects.bulk_create([DailyUsage(user_id=user_id, day=day)], ignore_conflicts=True)
        usage = DailyUsage.objects.select_for_update().get(user_id=user_id, day=day)
    return usage


# --- typed rows --------------------------------------------------------------------------------------


class WalletRow(NamedTuple):
    """A wallet as this transaction locked it."""

    paid_balance: int
    paid_held: int


class UsageRow(NamedTuple):
    """A day's usage row as this transaction locked it."""

    id: int
    used: int
    held: int


NO_WALLET = WalletRow(0, 0)
NO_USAGE = UsageRow(0, 0, 0)


class LockedRows(NamedTuple):
    """The user's wallet and day's usage row, both locked (wallet first)."""

    wallet: WalletRow
    usage: UsageRow


class TierAndRows(NamedTuple):
    """The user's membership tier (None without a membership) and, when asked, their locked rows."""

    tier: str | None
    rows: LockedRows | None


class LockedHold(NamedTuple):
    """An active hold, locked, then (when it reserved anything) its wallet and day's usage row, locked
    after it (`NO_WALLET` / `NO_USAGE` when it reserved nothing). `tier`: the user's membership tier as
    it is now, when asked for (None otherwise, or without a membership)."""

    generation_id: str
    id: int
    user_id: int
    day: date
    amount: int
    free_part: int
    paid_part: int
    is_member: bool
    wallet: WalletRow
    usage: UsageRow
    tier: str | None


class RowChanges(NamedTuple):
    """New values of a locked wallet's and usage row's columns (None: unchanged)."""

    paid_held: int | None = None
    paid_balance: int | None = None
    updated_at: datetime | None = None
    held: int | None = None
    used: int | None = None


# --- reads under lock --------------------------------------------------------------------------------


def _for_update(of: str) -> str:
    return f" FOR UPDATE OF {of}" if connection.features.has_select_for_update else ""


def _dt(value: datetime) -> Any:
    # PostgreSQL takes datetimes and dates as they are (its operations return them unchanged): no lookup of
    # the thread's connection per value on the hot path
    return value if settings.IS_POSTGRES else connection.ops.adapt_datetimefield_value(value)


def _day(value: date) -> Any:
    return value if settings.IS_POSTGRES else connection.ops.adapt_datefield_value(value)


_MEMBER_TIER_SQL = (
    "SELECT m.tier FROM billing_membership m WHERE m.user_id = {user} AND m.starts_at <= %s AND m.ends_at > %s"
    " ORDER BY m.ends_at DESC LIMIT 1"
)


def member_tier(cursor: CursorWrapper, user_id: int, at: datetime) -> str | None:
    """The tier of the user's membership active at `at` (None without one): `membership_active` in SQL."""
    cursor.execute(_MEMBER_TIER_SQL.format(user="%s"), [user_id, _dt(at), _dt(at)])
    row = cursor.fetchone()
    return row[0] if row else None


_ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true)"


def async_commit(*, autocommit: bool = False) -> bool:
    """Whether `hold_place` makes its transaction's commit asynchronous: PostgreSQL, unless
    `BILLING_DURABLE_HOLDS`, and only when the hold is its own transaction — one statement in autocommit,
    or the outermost atomic block; a caller's larger transaction keeps its durable commit. `autocommit`:
    the statement runs in autocommit on a connection of its own (`apps.core.db_async`), not on Django's."""
    if not settings.IS_POSTGRES or settings.BILLING_DURABLE_HOLDS:
        return False
    return autocommit or not connection.savepoint_ids


def hold_rows(cursor: CursorWrapper, user_id: int, day: date, at: datetime, *, lock: bool) -> TierAndRows:
    """The user's membership tier at `at` and, with `lock`, their wallet and day's usage rows locked
    (wallet first) as `wallet_usage_locked` returns them — one statement in the common case. Makes the
    transaction's commit asynchronous where `async_commit` says so."""
    tier_sql = _MEMBER_TIER_SQL.format(user="%s")
    commit_async = async_commit()
    extra = f", {_ASYNC_COMMIT}" if commit_async else ""
    if not lock:
        cursor.execute(f"SELECT ({tier_sql}){extra}", [user_id, _dt(at), _dt(at)])
        return TierAndRows(cursor.fetchone()[0], None)
    cursor.execute(
        f"SELECT ({tier_sql}), w.paid_balance, w.paid_held, u.id, u.used, u.held{extra} FROM billing_wallet w"  # noqa: S608 (constant SQL, values as parameters)
        " JOIN billing_dailyusage u ON u.user_id = w.user_id AND u.day = %s WHERE w.user_id = %s" + _for_update("w, u"),
        [user_id, _dt(at), _dt(at), _day(day), user_id],
    )
    row = cursor.fetchone()
    if row is not None:
        return TierAndRows(row[0], LockedRows(WalletRow(*row[1:3]), UsageRow(*row[3:6])))
    # first use (of the wallet or of the day): create the rows, in order
    if commit_async:
        cursor.execute(f"SELECT {_ASYNC_COMMIT}")
    return TierAndRows(member_tier(cursor, user_id, at), wallet_usage_locked(cursor, user_id, day))


def wallet_usage_locked(cursor: CursorWrapper, user_id: int, day: date) -> LockedRows:
    """Lock the wallet, then the day's usage row (one statement, that order); create them on first use."""
    cursor.execute(
        "SELECT w.paid_balance, w.paid_held, u.id, u.used, u.held FROM billing_wallet w"  # noqa: S608 (constant SQL, values as parameters)
        " JOIN billing_dailyusage u ON u.user_id = w.user_id AND u.day = %s WHERE w.user_id = %s" + _for_update("w, u"),
        [_day(day), user_id],
    )
    row = cursor.fetchone()
    if row is not None:
        return LockedRows(WalletRow(*row[:2]), UsageRow(*row[2:5]))
    # first use (of the wallet or of the day): the row-by-row path, creating what is missing, in order
    wallet = wallet_locked(user_id)
    usage = usage_locked(user_id, day)
    return LockedRows(WalletRow(wallet.paid_balance, wallet.paid_held), UsageRow(usage.pk, usage.used, usage.held))


_HOLD_COLUMNS = "h.id, h.user_id, h.day, h.amount, h.free_part, h.paid_part, h.is_member, h.status"


def hold_locked(cursor: CursorWrapper, generation_id: str, *, with_tier: bool) -> LockedHold | None:
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
        rows = LockedRows(WalletRow(*row[8:10]), UsageRow(*row[10:13]))
        return _locked_hold(generation_id, row, rows, row[13] if with_tier else None)
    cursor.execute(
        f"SELECT {_HOLD_COLUMNS} FROM billing_hold h WHERE h.generation_id = %s" + _for_update("h"),  # noqa: S608 (constant SQL, values as parameters)
        [generation_id],
    )
    row = cursor.fetchone()
    if row is None or row[7] != Hold.Status.ACTIVE:
        return None
    user_id, day, amount = row[1], row[2], row[3]
    rows = LockedRows(NO_WALLET, NO_USAGE)
    if amount > 0:  # wallet or usage row missing (never in practice): lock/create them in order
        rows = wallet_usage_locked(cursor, user_id, day)
    tier = member_tier(cursor, user_id, timezone.now()) if with_tier else None
    return _locked_hold(generation_id, row, rows, tier)


def _locked_hold(generation_id: str, row: Sequence[Any], rows: LockedRows, tier: str | None) -> LockedHold:
    """A `LockedHold` from a row starting with `_HOLD_COLUMNS`."""
    hold_id, user_id, day, amount, free_part, paid_part, is_member = row[:7]
    return LockedHold(generation_id, hold_id, user_id, day, amount, free_part, paid_part, bool(is_member), *rows, tier)


# --- writes ------------------------------------------------------------------------------------------


def _update(table: str, key: str, key_value: int, values: dict[str, Any]) -> list[Statement]:
    changed = {name: value for name, value in values.items() if value is not None}
    if not changed:
        return []
    columns = ", ".join(f"{name} = %s" for name in changed)
    return [(f"UPDATE {table} SET {columns} WHERE {key} = %s", [*changed.values(), key_value])]  # noqa: S608 (constant SQL, values as parameters)


def row_updates(*, user_id: int, usage_id: int, changes: RowChanges) -> list[Statement]:
    """One UPDATE per changed row, wallet first (a row may be modified only once per PostgreSQL
    statement), setting the changed columns in `RowChanges`' order."""
    updated_at = None if changes.updated_at is None else _dt(changes.updated_at)
    wallet = {"paid_held": changes.paid_held, "paid_balance": changes.paid_balance, "updated_at": updated_at}
    return [
        *_update("billing_wallet", "user_id", user_id, wallet),
        *_update("billing_dailyusage", "id", usage_id, {"held": changes.held, "used": changes.used}),
    ]


def hold_insert(
    *,
    generation_id: str,
    user_id: int,
    model_id: str,
    day: date,
    amount: int,
    free_part: int,
    paid_part: int,
    is_member: bool,
    created_at: datetime,
    expires_at: datetime,
) -> Statement:
    """A new active hold."""
    return (
        "INSERT INTO billing_hold (generation_id, user_id, model_id, day, amount, free_part, paid_part,"
        " is_member, status, created_at, expires_at, closed_at)"
        " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, NULL)",
        [
            generation_id,
            user_id,
            model_id,
            _day(day),
            amount,
            free_part,
            paid_part,
            is_member,
            Hold.Status.ACTIVE.value,
            _dt(created_at),
            _dt(expires_at),
        ],
    )


def hold_close(hold: LockedHold, status: str, now: datetime) -> Statement:
    return ("UPDATE billing_hold SET status = %s, closed_at = %s WHERE id = %s", [status, _dt(now), hold.id])


def hold_grow(hold: LockedHold, *, amount: int, free_part: int, paid_part: int, expires_at: datetime) -> Statement:
    """An extended hold: its new amount and parts, and its expiry pushed back."""
    return (
        "UPDATE billing_hold SET amount = %s, free_part = %s, paid_part = %s, expires_at = %s WHERE id = %s",
        [amount, free_part, paid_part, _dt(expires_at), hold.id],
    )


def ledger_charge_insert(hold: LockedHold, *, amount: int, balance_after: int, note: str, now: datetime) -> Statement:
    """The `charge` ledger entry of the hold's settlement (`amount` is negative)."""
    return (
        "INSERT INTO billing_ledgerentry (user_id, kind, amount, balance_after, generation_id, note,"
        " created_by_id, created_at) VALUES (%s, %s, %s, %s, %s, %s, NULL, %s)",
        [hold.user_id, LedgerEntry.Kind.CHARGE.value, amount, balance_after, hold.generation_id, note, _dt(now)],
    )


def charge_insert(
    hold: LockedHold, consumption: Consumption, *, model_id: str, input_chars: int, output_chars: int, now: datetime
) -> Statement:
    """The `Charge` of the hold's generation, on the hold's day."""
    return (
        "INSERT INTO billing_charge (generation_id, user_id, model_id, day, input_chars, output_chars,"
        " input_cost, output_cost, total_cost, used_daily_free, used_paid, member_benefit_applied,"
        " created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        [
            hold.generation_id,
            hold.user_id,
            model_id,
            _day(hold.day),
            input_chars,
            output_chars,
            consumption.input_cost,
            consumption.output_cost,
            consumption.total_cost,
            consumption.used_daily_free,
            consumption.used_paid,
            consumption.member_benefit_applied,
            _dt(now),
        ],
    )


def write(cursor: CursorWrapper, parts: Sequence[Statement]) -> None:
    """Run the writes: one statement on PostgreSQL (all but the last as data-modifying CTEs, which
    touch distinct rows already locked by this transaction), one statement each elsewhere."""
    if connection.vendor == "postgresql" and len(parts) > 1:
        ctes = ", ".join(f"w{i} AS ({sql})" for i, (sql, _) in enumerate(parts[:-1]))
        params = [p for _, ps in parts for p in ps]
        cursor.execute(f"WITH {ctes} {parts[-1][0]}", params)
        return
    for sql, params in parts:
        cursor.execute(sql, params)


# --- one-statement hold, extension and settlement (PostgreSQL) ------------------------------------------
#
# On PostgreSQL the hot path's decisions run inside the statement that takes the locks: one statement in
# autocommit each (no `BEGIN`/`COMMIT` round trips, and no row lock held while Python computes between two
# statements — with 16 concurrent calls of one user, that wait on the wallet row was the bottleneck). The
# rules are those of `charges.plan_hold` and `services._settlement`, written in SQL; the services keep the
# Python versions for SQLite, and tests/billing/test_statements.py checks both give the same rows.
# Each statement reads its locked rows in CTEs (hold → wallet → usage, the one lock order), decides in
# CTEs, writes in data-modifying CTEs that read the decided row, and returns the decision. An empty
# decision (a refused hold, a settled or expired hold) writes nothing.


class QuotaTerms(NamedTuple):
    """The daily free quota per membership tier, as `selectors.tier_quota` computes it, for SQL: no
    membership ⇒ `default`; a tier ⇒ its plan's quota (`plans`, JSON) else `other_tiers`."""

    default: int
    plans: str
    other_tiers: int


def _quota_sql(tier: str) -> str:
    """The quota of the tier in column `tier` (params: `QuotaTerms` in order)."""
    return f"(CASE WHEN {tier} IS NULL THEN %s ELSE COALESCE((%s::jsonb ->> {tier})::bigint, %s) END)"


class HoldOutcome(NamedTuple):
    """What the one-statement hold found and did: the tier, what was available, what running calls hold;
    `amount` None when it was refused (nothing written)."""

    tier: str | None
    free_available: int
    paid_available: int
    held: int
    amount: int | None
    covers_worst: bool


HOLD_SOURCE = "s"  # the decided row of the hold statement, for the caller's record (`FROM s`)


def hold_place_one(cursor: CursorWrapper, **terms: Any) -> HoldOutcome | None:
    """`hold_place_sql` run on `cursor`: None when the user's wallet or day's usage row does not exist yet
    (the caller creates them and retries)."""
    cursor.execute(*hold_place_sql(**terms))
    return hold_outcome(cursor.fetchone())


def hold_outcome(row: Sequence[Any] | None) -> HoldOutcome | None:
    """The hold statement's answer (None: no wallet or usage row yet)."""
    return None if row is None else HoldOutcome(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


def hold_place_sql(
    *,
    user_id: int,
    day: date,
    at: datetime,
    quotas: QuotaTerms,
    input_cost: int,
    worst_output_cost: int,
    one_char_cost: int,
    generation_id: str,
    model_id: str,
    expires_at: datetime,
    record: Statement | None,
    async_commit: bool,
) -> Statement:
    """The statement that decides and places a metered hold (`charges.plan_hold`, free quota first); it
    answers no row when the user's wallet or day's usage row does not exist yet (`hold_outcome`).
    `record` is the caller's `INSERT … SELECT … FROM s` (its one row when the hold is placed)."""
    now = _dt(at)
    tier_sql = _MEMBER_TIER_SQL.format(user="%s")
    record_sql = f", ig AS ({record[0]})" if record else ""
    commit_sql = f", {_ASYNC_COMMIT}" if async_commit else ""
    return (
        f"WITH t AS (SELECT ({tier_sql}) AS tier),"  # noqa: S608 (constant SQL, values as parameters)
        " r AS (SELECT w.paid_balance, w.paid_held, u.id AS usage_id, u.used, u.held FROM billing_wallet w"
        " JOIN billing_dailyusage u ON u.user_id = w.user_id AND u.day = %s WHERE w.user_id = %s"
        " FOR UPDATE OF w, u),"
        f" a AS (SELECT r.*, t.tier, GREATEST(0, {_quota_sql('t.tier')} - r.used - r.held) AS free_avail,"
        " GREATEST(0, r.paid_balance - r.paid_held) AS paid_avail,"
        " CASE WHEN t.tier IS NULL THEN %s::bigint ELSE 0 END AS worst_out,"
        " CASE WHEN t.tier IS NULL THEN %s::bigint ELSE 0 END AS one_char FROM r CROSS JOIN t),"
        " d AS (SELECT a.*, %s::bigint + LEAST(a.worst_out, a.free_avail + a.paid_avail - %s::bigint) AS amount"
        " FROM a WHERE %s::bigint + CASE WHEN a.worst_out > 0 THEN a.one_char ELSE 0 END"
        " <= a.free_avail + a.paid_avail),"
        " s AS (SELECT d.*, LEAST(d.amount, d.free_avail) AS free_part,"
        " d.amount - LEAST(d.amount, d.free_avail) AS paid_part, d.amount = %s::bigint + d.worst_out AS covers_worst"
        " FROM d),"
        " uw AS (UPDATE billing_wallet w SET paid_held = w.paid_held + s.paid_part FROM s"
        " WHERE w.user_id = %s AND s.paid_part > 0),"
        " uu AS (UPDATE billing_dailyusage u SET held = u.held + s.free_part FROM s"
        " WHERE u.id = s.usage_id AND s.free_part > 0),"
        " ih AS (INSERT INTO billing_hold (generation_id, user_id, model_id, day, amount, free_part, paid_part,"
        " is_member, status, created_at, expires_at, closed_at)"
        " SELECT %s, %s, %s, %s, s.amount, s.free_part, s.paid_part, s.tier IS NOT NULL, %s, %s, %s, NULL FROM s)"
        f"{record_sql}"
        " SELECT a.tier, a.free_avail, a.paid_avail, a.paid_held + a.held, s.amount, s.covers_worst"
        f"{commit_sql} FROM a LEFT JOIN s ON TRUE",
        [
            user_id,
            now,
            now,
            _day(day),
            user_id,
            *quotas,
            worst_output_cost,
            one_char_cost,
            input_cost,
            input_cost,
            input_cost,
            input_cost,
            user_id,
            generation_id,
            user_id,
            model_id,
            _day(day),
            Hold.Status.ACTIVE.value,
            now,
            _dt(expires_at),
            *(record[1] if record else []),
        ],
    )


class ExtendOutcome(NamedTuple):
    amount: int
    granted: int


def hold_extend_one(
    cursor: CursorWrapper, *, generation_id: str, amount: int, quotas: QuotaTerms, now: datetime, expires_at: datetime
) -> ExtendOutcome | None:
    """Grow an active, non-zero hold by up to `amount` (free quota of its day first) and push back its
    expiry, in one statement. None when there is no such hold."""
    tier_sql = _MEMBER_TIER_SQL.format(user="h.user_id")
    cursor.execute(
        "WITH h AS (SELECT id, user_id, day, amount, free_part, paid_part FROM billing_hold"  # noqa: S608 (constant SQL, values as parameters)
        " WHERE generation_id = %s AND status = %s AND amount > 0 FOR UPDATE),"
        f" r AS (SELECT h.*, w.paid_balance, w.paid_held, u.id AS usage_id, u.used, u.held, ({tier_sql}) AS tier"
        " FROM h JOIN billing_wallet w ON w.user_id = h.user_id"
        " JOIN billing_dailyusage u ON u.user_id = h.user_id AND u.day = h.day FOR UPDATE OF w, u),"
        f" a AS (SELECT r.*, GREATEST(0, {_quota_sql('r.tier')} - r.used - r.held) AS free_avail,"
        " GREATEST(0, r.paid_balance - r.paid_held) AS paid_avail FROM r),"
        " g AS (SELECT a.*, LEAST(%s::bigint, a.free_avail + a.paid_avail) AS granted FROM a),"
        " e AS (SELECT g.*, LEAST(g.granted, g.free_avail) AS free_add,"
        " g.granted - LEAST(g.granted, g.free_avail) AS paid_add FROM g),"
        " uw AS (UPDATE billing_wallet w SET paid_held = w.paid_held + e.paid_add FROM e"
        " WHERE w.user_id = e.user_id AND e.paid_add > 0),"
        " uu AS (UPDATE billing_dailyusage u SET held = u.held + e.free_add FROM e"
        " WHERE u.id = e.usage_id AND e.free_add > 0),"
        " uh AS (UPDATE billing_hold SET amount = e.amount + e.granted, free_part = e.free_part + e.free_add,"
        " paid_part = e.paid_part + e.paid_add, expires_at = %s FROM e WHERE billing_hold.id = e.id)"
        " SELECT e.amount + e.granted, e.granted FROM e",
        [generation_id, Hold.Status.ACTIVE.value, _dt(now), _dt(now), *quotas, amount, _dt(expires_at)],
    )
    row = cursor.fetchone()
    return None if row is None else ExtendOutcome(row[0], row[1])


SETTLE_SOURCE = "c"  # the settled row of the settlement statement, for the caller's record (`FROM c`)


def charge_settle_one(cursor: CursorWrapper, **terms: Any) -> Consumption | None:
    """`charge_settle_sql` run on `cursor`: None when the hold is not active (nothing written)."""
    cursor.execute(*charge_settle_sql(**terms))
    return settled(cursor.fetchone())


def settled(row: Sequence[Any] | None) -> Consumption | None:
    """The settlement statement's answer (None: the hold was not active)."""
    return None if row is None else Consumption(row[0], row[1], row[2], row[3], row[4], bool(row[5]))


def charge_settle_sql(
    *,
    generation_id: str,
    quotas: QuotaTerms,
    input_cost: int,
    output_cost: int,
    is_free_model: bool,
    model_id: str,
    input_chars: int,
    output_chars: int,
    note: str,
    now: datetime,
    record: Statement | None,
) -> Statement:
    """The statement that settles an active hold: the charge (`output_cost` waived for a member's hold),
    never more than the hold; free quota first (the hold's own free part at least); the wallet, the day's
    usage, the ledger entry, the `Charge`, the hold closed, and the caller's `record`
    (`UPDATE … FROM c`). No row when the hold is not active (settled, released or expired): nothing
    written (`settled`)."""
    at = _dt(now)
    tier_sql = _MEMBER_TIER_SQL.format(user="h.user_id")
    record_sql = f", ig AS ({record[0]})" if record else ""
    return (
        "WITH h AS (SELECT id, user_id, day, amount, free_part, paid_part, is_member FROM billing_hold"  # noqa: S608 (constant SQL, values as parameters)
        " WHERE generation_id = %s AND status = %s FOR UPDATE),"
        " r AS (SELECT h.id AS hold_id, w.paid_balance, w.paid_held, u.id AS usage_id, u.used, u.held,"
        f" ({tier_sql}) AS tier FROM h JOIN billing_wallet w ON w.user_id = h.user_id AND h.amount > 0"
        " JOIN billing_dailyusage u ON u.user_id = h.user_id AND u.day = h.day FOR UPDATE OF w, u),"
        " k AS (SELECT h.*, r.usage_id, r.used, r.held, r.tier,"
        " LEAST(%s::bigint + CASE WHEN h.is_member THEN 0 ELSE %s::bigint END, h.amount) AS total,"
        " LEAST(%s::bigint, h.amount) AS input_c FROM h LEFT JOIN r ON r.hold_id = h.id),"
        " q AS (SELECT k.*, k.total - k.input_c AS output_c, CASE WHEN k.total > 0 THEN LEAST(k.total,"
        f" GREATEST(0, {_quota_sql('k.tier')} - k.used - (k.held - k.free_part), k.free_part)) ELSE 0 END"
        " AS free_used, k.is_member AND NOT %s AS benefit FROM k),"
        " c AS (SELECT q.*, q.total - q.free_used AS paid_used FROM q),"
        " uw AS (UPDATE billing_wallet w SET paid_held = w.paid_held - c.paid_part,"
        " paid_balance = w.paid_balance - c.paid_used,"
        " updated_at = CASE WHEN c.paid_used > 0 THEN %s ELSE w.updated_at END FROM c"
        " WHERE w.user_id = c.user_id AND (c.paid_part > 0 OR c.paid_used > 0) RETURNING w.paid_balance),"
        " uu AS (UPDATE billing_dailyusage u SET held = u.held - c.free_part, used = u.used + c.free_used FROM c"
        " WHERE u.id = c.usage_id AND (c.free_part > 0 OR c.free_used > 0)),"
        " il AS (INSERT INTO billing_ledgerentry (user_id, kind, amount, balance_after, generation_id, note,"
        " created_by_id, created_at) SELECT c.user_id, %s, -c.paid_used, uw.paid_balance, %s, %s, NULL, %s"
        " FROM c CROSS JOIN uw WHERE c.paid_used > 0),"
        " ic AS (INSERT INTO billing_charge (generation_id, user_id, model_id, day, input_chars, output_chars,"
        " input_cost, output_cost, total_cost, used_daily_free, used_paid, member_benefit_applied, created_at)"
        " SELECT %s, c.user_id, %s, c.day, %s, %s, c.input_c, c.output_c, c.total, c.free_used, c.paid_used,"
        " c.benefit, %s FROM c),"
        " hc AS (UPDATE billing_hold SET status = %s, closed_at = %s FROM c WHERE billing_hold.id = c.id)"
        f"{record_sql}"
        " SELECT c.total, c.input_c, c.output_c, c.free_used, c.paid_used, c.benefit FROM c",
        [
            generation_id,
            Hold.Status.ACTIVE.value,
            at,
            at,
            input_cost,
            output_cost,
            input_cost,
            *quotas,
            is_free_model,
            at,
            LedgerEntry.Kind.CHARGE.value,
            generation_id,
            note,
            at,
            generation_id,
            model_id,
            input_chars,
            output_chars,
            at,
            Hold.Status.SETTLED.value,
            at,
            *(record[1] if record else []),
        ],
    )


def rows_create(user_id: int, day: date) -> None:
    """The user's wallet and day's usage row, created if missing (no lock: a concurrent creator wins
    harmlessly) — before a one-statement hold, which only finds existing rows."""
    Wallet.objects.bulk_create([Wallet(user_id=user_id)], ignore_conflicts=True)
    DailyUsage.objects.bulk_create([DailyUsage(user_id=user_id, day=day)], ignore_conflicts=True)
