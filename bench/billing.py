"""Billing hot path: statements and CPU per hold_place + charge_settle (and hold_place + hold_release).

    .venv/bin/python bench/billing.py                      # PostgreSQL (database `billbench`) and SQLite
    .venv/bin/python bench/billing.py --cycles 2000
    .venv/bin/python bench/billing.py --db postgres://postgres@127.0.0.1:5432/mydb
    .venv/bin/python bench/billing.py --db sqlite:////tmp/billbench.sqlite3
    git show 8aee661:apps/billing/services.py > /tmp/old.py   # the ORM version, for an A/B run:
    .venv/bin/python bench/billing.py --services /tmp/old.py

Each database runs in its own process (settings are read at import). The schema is migrated, one user
gets a large paid balance, then each cycle does what a writing call does: `hold_place` (its own
transaction, as in `generation_open`: one statement in autocommit on PostgreSQL), then `charge_settle`
(or `hold_release`). The daily free quota is
used up during the warm-up, so the measured cycles take the full path: free quota exhausted, paid part
held, ledger entry written on settlement. Statements are counted in a separate pass (capturing them
costs CPU); CPU is `time.process_time()` of this process (the client side: ORM + driver), best of 5
rounds. Pass `--member` to bench a member (output waived; long prompts so there is still something to
hold).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DBS = ("postgres://postgres@127.0.0.1:5432/billbench", "sqlite:////tmp/billbench.sqlite3")


def run_one(db_url: str, cycles: int, member: bool, services_path: str | None) -> None:
    os.environ["DATABASE_URL"] = db_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "writing_service.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    if services_path:  # A/B: another version of apps/billing/services.py (e.g. `git show HEAD:…`)
        import importlib.util

        import apps.billing

        spec = importlib.util.spec_from_file_location("apps.billing.services", services_path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["apps.billing.services"] = module
        spec.loader.exec_module(module)
        apps.billing.services = module  # type: ignore[attr-defined]
    from decimal import Decimal

    from django.core.management import call_command
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from apps.accounts.services import user_create
    from apps.billing import services
    from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Membership, Wallet

    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth import get_user_model

    User = get_user_model()
    User.objects.filter(username="billbench").delete()
    user = user_create(username="billbench", password="bench-pass-123")
    services.wallet_grant(user=user, amount=10**12)
    if member:
        services.membership_extend(user=user, days=30)
    pricing = services.Pricing("bench-model", Decimal(1), Decimal(1), False, 4096)
    input_chars = 12_000 if member else 500
    counter = iter(range(10**9))

    def hold_settle() -> None:
        gid = f"bb{next(counter)}-{os.getpid()}"
        services.hold_place(user=user, generation_id=gid, pricing=pricing, input_chars=input_chars, max_tokens=100)
        services.charge_settle(generation_id=gid, pricing=pricing, input_chars=input_chars, output_chars=300)

    def hold_release() -> None:
        gid = f"bb{next(counter)}-{os.getpid()}"
        services.hold_place(user=user, generation_id=gid, pricing=pricing, input_chars=input_chars, max_tokens=100)
        services.hold_release(generation_id=gid)

    def statements(fn) -> tuple[int, list[str]]:
        with CaptureQueriesContext(connection) as ctx:
            fn()
        return len(ctx.captured_queries), [q["sql"][:110] for q in ctx.captured_queries]

    for _ in range(20):  # warm-up: uses up the free quota, fills caches
        hold_settle()

    vendor = connection.vendor
    for name, fn in (("hold+settle", hold_settle), ("hold+release", hold_release)):
        count, sqls = statements(fn)
        best = float("inf")
        for _ in range(5):
            start = time.process_time()
            for _ in range(cycles):
                fn()
            best = min(best, (time.process_time() - start) / cycles)
        print(f"{vendor:10} {name:13} {count:3d} statements  {best * 1e6:8.0f} µs CPU per cycle")
        if os.environ.get("BENCH_SQL"):
            for sql in sqls:
                print("    ", sql)
    # leave the books balanced and the tables small
    Hold.objects.filter(user=user).delete()
    Charge.objects.filter(user=user).delete()
    LedgerEntry.objects.filter(user=user).delete()
    DailyUsage.objects.filter(user=user).delete()
    Membership.objects.filter(user=user).delete()
    Wallet.objects.filter(pk=user.pk).delete()
    user.delete()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", help="one DATABASE_URL (default: PostgreSQL billbench and SQLite)")
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--member", action="store_true")
    parser.add_argument("--services", help="bench this file as apps/billing/services.py (A/B comparisons)")
    args = parser.parse_args()
    if args.db:
        run_one(args.db, args.cycles, args.member, args.services)
        return
    for db in DEFAULT_DBS:
        cmd = [sys.executable, __file__, "--db", db, "--cycles", str(args.cycles)]
        if args.member:
            cmd.append("--member")
        if args.services:
            cmd += ["--services", args.services]
        subprocess.run(cmd, check=True, cwd=ROOT)


if __name__ == "__main__":
    main()
