"""Prove the billing invariants for every user; exit non-zero on any mismatch.

Checks (each one a handful of aggregate queries, whatever the number of users):

1. `Wallet.paid_balance` = Σ `LedgerEntry.amount` of the user (and no ledger without a wallet);
2. the `balance_after` chain: ordered by id, each entry = previous entry's `balance_after` + `amount`
   (the first one = its amount);
3. `Wallet.paid_held` = Σ `paid_part` of the user's active holds;
4. `DailyUsage.used` = Σ `Charge.used_daily_free` per (user, day);
5. `DailyUsage.held` = Σ `free_part` of active holds per (user, day);
6. every `Charge` with `used_paid > 0` has exactly one `charge` ledger entry of −used_paid carrying its
   generation id (and one with `used_paid = 0` has none); no `charge` entry without its `Charge`;
7. no negative balance, held or daily usage, and nothing held beyond the balance.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connection
from django.db.models import Count, Exists, F, IntegerField, OuterRef, Q, Subquery, Sum, Value, Window
from django.db.models.functions import Coalesce, Lag

from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Wallet


@dataclass(frozen=True, slots=True)
class Mismatch:
    user_id: int
    check: str
    message: str


def _sum_of(qs: Any, field: str, *, by: str) -> Coalesce:
    """`Coalesce((SELECT SUM(field) FROM qs GROUP BY by), 0)` as a correlated subquery."""
    return Coalesce(
        Subquery(qs.order_by().values(by).annotate(total=Sum(field)).values("total")[:1], output_field=IntegerField()),
        Value(0),
    )


def _fetch(sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchall()


class Command(BaseCommand):
    help = "Verify wallets, ledger, holds, daily usage and charges; exits 1 on any mismatch."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since",
            type=date.fromisoformat,
            default=None,
            help="Check daily usage only from this day (YYYY-MM-DD); default: every day.",
        )
        parser.add_argument("--max-report", type=int, default=200, help="Print at most this many mismatches.")

    def handle(self, *args: Any, **options: Any) -> None:
        found: list[Mismatch] = []
        since: date | None = options["since"]
        found += self.check_wallet_vs_ledger()
        found += self.check_ledger_chain()
        found += self.check_held()
        found += self.check_daily_used(since)
        found += self.check_daily_held()
        found += self.check_charges_vs_ledger()
        found += self.check_negative()

        totals = Wallet.objects.aggregate(balance=Sum("paid_balance"), held=Sum("paid_held"), wallets=Count("pk"))
        self.stdout.write(
            "billing audit: {wallets} wallets, {entries} ledger entries, {charges} charges, {holds} active holds, "
            "{usage} daily usage rows; Σ balance {balance}, Σ held {held}".format(
                wallets=totals["wallets"],
                entries=LedgerEntry.objects.count(),
                charges=Charge.objects.count(),
                holds=Hold.objects.filter(status=Hold.Status.ACTIVE).count(),
                usage=DailyUsage.objects.count(),
                balance=totals["balance"] or 0,
                held=totals["held"] or 0,
            )
        )
        if not found:
            self.stdout.write("OK: no mismatches")
            return
        names = dict(
            get_user_model()
            .objects.filter(pk__in={m.user_id for m in found})
            .values_list("pk", get_user_model().USERNAME_FIELD)
        )
        for mismatch in found[: options["max_report"]]:
            name = names.get(mismatch.user_id, "?")
            self.stdout.write(f"MISMATCH [{mismatch.check}] user {mismatch.user_id} ({name}): {mismatch.message}")
        if len(found) > options["max_report"]:
            self.stdout.write(f"… and {len(found) - options['max_report']} more")
        users = len({m.user_id for m in found})
        raise CommandError(f"billing audit failed: {len(found)} mismatch(es) for {users} user(s)")

    # -- checks ----------------------------------------------------------------------------------

    def check_wallet_vs_ledger(self) -> list[Mismatch]:
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
            Mismatch(uid, "balance", f"wallet paid_balance {balance} ≠ Σ ledger {total}")
            for uid, balance, total in rows
        ]
        orphans = (
            LedgerEntry.objects.filter(~Exists(Wallet.objects.filter(user_id=OuterRef("user_id"))))
            .values("user_id")
            .annotate(total=Sum("amount"), n=Count("id"))
            .values_list("user_id", "total", "n")
        )
        out += [
            Mismatch(uid, "balance", f"no wallet, but {n} ledger entries summing to {total}")
            for uid, total, n in orphans
        ]
        return out

    def check_ledger_chain(self) -> list[Mismatch]:
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

    def check_held(self) -> list[Mismatch]:
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

    def check_daily_used(self, since: date | None) -> list[Mismatch]:
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

    def check_daily_held(self) -> list[Mismatch]:
        # Both sides are small (in-flight holds, rows with something held), so compare them in Python.
        expected = {
            (uid, day): total
            for uid, day, total in Hold.objects.filter(status=Hold.Status.ACTIVE, free_part__gt=0)
            .values("user_id", "day")
            .annotate(total=Sum("free_part"))
            .values_list("user_id", "day", "total")
        }
        actual = {
            (uid, day): held
            for uid, day, held in DailyUsage.objects.exclude(held=0).values_list("user_id", "day", "held")
        }
        out = []
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

    def check_charges_vs_ledger(self) -> list[Mismatch]:
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
            .filter(
                ~Exists(Charge.objects.filter(generation_id=OuterRef("generation_id"), user_id=OuterRef("user_id")))
            )
            .values_list("user_id", "id", "generation_id", "amount")
        )
        out += [
            Mismatch(uid, "charge", f"ledger charge entry {eid} ({amount:+d}) for {gid or '—'} has no charge record")
            for uid, eid, gid, amount in orphans
        ]
        return out

    def check_negative(self) -> list[Mismatch]:
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
