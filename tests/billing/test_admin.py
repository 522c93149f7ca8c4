"""Billing admin: wallets read-only except through grant/adjust (ledger entries by the operator),
immutable records, bulk creation of redemption codes as a one-time CSV download."""

from __future__ import annotations

import csv
import io

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.test import Client

from apps.billing import selectors, services
from apps.billing.models import LedgerEntry, RedemptionCode, Wallet

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


@pytest.fixture
def root():
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw-123456789")


@pytest.fixture
def staff(root) -> Client:
    client = Client(headers={"accept-language": "en"})
    client.force_login(root)
    return client


def action(staff, name, wallets, **form):
    data = {"action": name, "_selected_action": [w.pk for w in wallets], **form}
    return staff.post("/admin/billing/wallet/", data, follow=True)


def test_wallet_pages_are_read_only(staff, user):
    services.wallet_grant(user=user, amount=100)
    assert staff.get("/admin/billing/wallet/").status_code == 200
    page = staff.get(f"/admin/billing/wallet/{user.pk}/change/")
    assert page.status_code == 200 and b'name="paid_balance"' not in page.content
    assert staff.post(f"/admin/billing/wallet/{user.pk}/change/", {"paid_balance": 999}).status_code == 403
    assert staff.get("/admin/billing/wallet/add/").status_code == 403
    assert staff.get(f"/admin/billing/wallet/{user.pk}/delete/").status_code == 403
    for model in ("ledgerentry", "hold", "charge", "dailyusage"):
        assert staff.get(f"/admin/billing/{model}/").status_code == 200
        assert staff.get(f"/admin/billing/{model}/add/").status_code == 403
    assert Wallet.objects.get().paid_balance == 100


def test_grant_action_shows_a_form_then_writes_ledger_entries(staff, root, user, other_user):
    services.wallet_grant(user=user, amount=100)
    services.wallet_grant(user=other_user, amount=5)
    wallets = list(Wallet.objects.all())
    form = action(staff, "grant", wallets)
    assert form.status_code == 200 and b'name="amount"' in form.content and b'name="note"' in form.content
    assert LedgerEntry.objects.count() == 2

    done = action(staff, "grant", wallets, apply="1", amount="250", note="compensation")
    assert done.status_code == 200
    entries = LedgerEntry.objects.filter(note="compensation").order_by("user_id")
    assert [(e.user_id, e.amount, e.balance_after, e.created_by_id) for e in entries] == [
        (user.pk, 250, 350, root.pk),
        (other_user.pk, 250, 255, root.pk),
    ]
    assert any("new balance 350" in str(m) for m in get_messages(done.wsgi_request))


def test_grant_rejects_non_positive_amount_without_writing(staff, user):
    services.wallet_grant(user=user, amount=100)
    page = action(staff, "grant", Wallet.objects.all(), apply="1", amount="0", note="x")
    assert page.status_code == 200 and b'name="amount"' in page.content
    assert LedgerEntry.objects.count() == 1


def test_adjust_errors_are_messages_and_write_nothing(staff, user, other_user):
    services.wallet_grant(user=user, amount=100)
    services.wallet_grant(user=other_user, amount=1000)
    done = action(staff, "adjust", Wallet.objects.all(), apply="1", amount="-500", note="clawback")
    texts = [str(m) for m in get_messages(done.wsgi_request)]
    assert any("alice" in t and "cannot become negative" in t for t in texts)
    assert any("bob" in t and "new balance 500" in t for t in texts)
    assert list(LedgerEntry.objects.filter(kind="adjust").values_list("user_id", "amount")) == [(other_user.pk, -500)]
    assert Wallet.objects.get(pk=user.pk).paid_balance == 100


def test_bulk_create_codes_downloads_a_csv_once(staff):
    assert staff.get("/admin/billing/redemptioncode/add/").url.endswith("/admin/billing/redemptioncode/bulk-create/")
    assert staff.get("/admin/billing/redemptioncode/bulk-create/").status_code == 200
    response = staff.post(
        "/admin/billing/redemptioncode/bulk-create/",
        {"count": "3", "amount": "500", "member_days": "7", "batch": "launch", "expires_at": "2099-01-01 00:00"},
    )
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    assert "attachment" in response["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert len(rows) == 3
    assert {r["code"] for r in rows} == set(RedemptionCode.objects.values_list("code", flat=True))
    assert all((r["amount"], r["member_days"], r["batch"]) == ("500", "7", "launch") for r in rows)
    listing = staff.get("/admin/billing/redemptioncode/")
    assert listing.status_code == 200 and rows[0]["code"].encode() not in listing.content


def test_bulk_create_validates(staff):
    response = staff.post(
        "/admin/billing/redemptioncode/bulk-create/", {"count": "3", "amount": "0", "member_days": "0"}
    )
    assert response.status_code == 200 and b"must credit" in response.content
    assert not RedemptionCode.objects.exists()


def test_non_staff_cannot_use_billing_admin(client, user):
    client.force_login(user)
    assert client.get("/admin/billing/wallet/").status_code == 302
