"""`manage.py billing_audit`: clean books exit 0; each kind of corruption exits non-zero naming the user."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.db.models import F

from apps.billing import selectors, services
from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Wallet

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh_plan_quotas():
    """Services may cache plan quotas per process; exact numbers here assume none is cached."""
    forget = getattr(selectors, "plans_forget", None)
    if forget is not None:
        forget()
    yield
    if forget is not None:
        forget()


PAID = services.Pricing("m", Decimal(1), Decimal(1), False, 4096)


def audit() -> tuple[bool, str]:
    out = StringIO()
    try:
        call_command("billing_audit", stdout=out)
    except CommandError as exc:
        return False, out.getvalue() + str(exc)
    return True, out.getvalue()


def place(user, gid, max_tokens):
    with transaction.atomic():
        services.hold_place(user=user, generation_id=gid, pricing=PAID, input_chars=0, max_tokens=max_tokens)


@pytest.fixture
def books(user, other_user):
    """Both users with grants, settled and released generations, one hold in flight, a redemption."""
    for who in (user, other_user):
        services.wallet_grant(user=who, amount=10_000)
        place(who, f"{who.username}-1", 1000)
        services.charge_settle(generation_id=f"{who.username}-1", pricing=PAID, input_chars=0, output_chars=3000)
        place(who, f"{who.username}-2", 100)
        services.hold_release(generation_id=f"{who.username}-2")
        place(who, f"{who.username}-3", 200)  # stays active: 800 paid held
        services.wallet_adjust(user=who, amount=-100, note="fix")
    (code,) = services.codes_create(count=1, amount=300)
    services.code_redeem(user=user, code=code.code)
    return user, other_user


def test_clean_books_pass(books):
    ok, output = audit()
    assert ok, output
    assert "2 wallets, 7 ledger entries, 2 charges, 2 active holds" in output
    assert "Σ balance 18100, Σ held 1600" in output
    assert output.strip().endswith("OK: no mismatches")


def test_empty_books_pass(db):
    ok, output = audit()
    assert ok and "0 wallets" in output


def assert_fails_for(check: str, *, who: str, not_who: str = "bob") -> str:
    ok, output = audit()
    assert not ok
    assert f"MISMATCH [{check}]" in output
    assert f"({who})" in output and f"({not_who})" not in output
    assert "billing audit failed" in output
    return output


def test_balance_edited_behind_the_ledgers_back(books):
    alice, _ = books
    Wallet.objects.filter(pk=alice.pk).update(paid_balance=F("paid_balance") + 1000)
    output = assert_fails_for("balance", who="alice")
    assert "wallet paid_balance 10200 ≠ Σ ledger 9200" in output


def test_missing_ledger_entry(books):
    alice, _ = books
    LedgerEntry.objects.filter(user=alice, kind="adjust").delete()
    output = assert_fails_for("balance", who="alice")
    assert "[chain]" in output  # the redeem entry after the hole no longer follows from its predecessor


def test_charge_without_its_ledger_entry(books):
    alice, _ = books
    entry = LedgerEntry.objects.get(user=alice, kind="charge")
    # rewrite the books consistently except for the charge link: the chain and the sum still agree
    LedgerEntry.objects.filter(pk=entry.pk).update(kind="adjust", generation_id="")
    output = assert_fails_for("charge", who="alice")
    assert "charge alice-1 used_paid 1000: 0 ledger charge entries summing to 0" in output


def test_double_charge_is_found(books):
    alice, _ = books
    wallet = Wallet.objects.get(pk=alice.pk)
    LedgerEntry.objects.create(
        user=alice, kind="charge", amount=-1000, balance_after=wallet.paid_balance - 1000, generation_id="alice-1"
    )
    Wallet.objects.filter(pk=alice.pk).update(paid_balance=wallet.paid_balance - 1000)
    output = assert_fails_for("charge", who="alice")
    assert "2 ledger charge entries summing to -2000" in output


def test_daily_usage_drift(books):
    alice, _ = books
    DailyUsage.objects.filter(user=alice).update(used=F("used") + 5)
    output = assert_fails_for("daily-used", who="alice")
    assert "daily usage used 2005 ≠ Σ charges' usedDailyFree 2000" in output


def test_paid_held_drift(books):
    alice, _ = books
    Wallet.objects.filter(pk=alice.pk).update(paid_held=0)
    output = assert_fails_for("held", who="alice")
    assert "wallet paid_held 0 ≠ Σ paid part of active holds 800" in output


def test_daily_held_drift(books):
    alice, _ = books
    Hold.objects.filter(generation_id="alice-3").update(status=Hold.Status.RELEASED)  # money still reserved
    ok, output = audit()
    assert not ok
    assert "MISMATCH [held] user" in output and "(alice)" in output and "(bob)" not in output
    DailyUsage.objects.filter(user=alice).update(held=7)
    output = assert_fails_for("daily-held", who="alice")
    assert "daily usage held 7 ≠ Σ free part of active holds 0" in output


def test_negative_or_overheld_wallet(books):
    alice, _ = books
    Wallet.objects.filter(pk=alice.pk).update(paid_held=F("paid_balance") + 1)
    assert_fails_for("negative", who="alice")


def test_orphan_charge_entry(books):
    alice, _ = books
    LedgerEntry.objects.create(user=alice, kind="charge", amount=0, balance_after=9200, generation_id="ghost")
    output = assert_fails_for("charge", who="alice")
    assert "for ghost has no charge record" in output
    assert Charge.objects.filter(generation_id="ghost").count() == 0


def test_since_limits_the_daily_usage_check(books):
    alice, _ = books
    DailyUsage.objects.filter(user=alice).update(used=F("used") + 5)
    day = DailyUsage.objects.get(user=alice).day
    out = StringIO()
    call_command("billing_audit", "--since", (day + timedelta(days=1)).isoformat(), stdout=out)
    assert "OK: no mismatches" in out.getvalue()
    with pytest.raises(CommandError):
        call_command("billing_audit", "--since", day.isoformat(), stdout=StringIO())


def test_the_checks_are_a_selector_returning_typed_findings(books):
    """`selectors.ledger_audit` is what the command prints (and what a periodic reconciler can reuse)."""
    alice, _ = books
    Wallet.objects.filter(pk=alice.pk).update(paid_balance=F("paid_balance") + 1000)

    audit = selectors.ledger_audit()

    assert audit.mismatches == [
        selectors.Mismatch(alice.pk, "balance", "wallet paid_balance 10200 ≠ Σ ledger 9200", username="alice")
    ]
    assert audit.totals == selectors.LedgerTotals(
        wallets=2, entries=7, charges=2, active_holds=2, usage_rows=2, balance=19_100, held=1600
    )
