"""`create_api_token --grant N --member-days N` credits through the ledger and starts a membership."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from io import StringIO
from unittest import mock

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from apps.billing import selectors
from apps.billing.models import LedgerEntry, Membership, Wallet

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


NOW = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)


def run(*args: str) -> list[str]:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue().strip().splitlines()


def test_grant_and_member_days(anon):
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        lines = run(
            "create_api_token",
            "dave",
            "--create-user",
            "--password",
            "pw-123456",
            "--grant",
            "500",
            "--member-days",
            "30",
        )
        token = lines[-1]
        assert "Granted 500 characters" in lines and "Membership extended by 30 days" in lines

        user = get_user_model().objects.get(username="dave")
        entry = LedgerEntry.objects.get(user=user)
        assert (entry.kind, entry.amount, entry.balance_after, entry.note) == (
            "grant",
            500,
            500,
            "create_api_token --grant",
        )
        assert Wallet.objects.get(pk=user.pk).paid_balance == 500
        membership = Membership.objects.get(user=user)
        assert (membership.tier, membership.starts_at, membership.ends_at) == ("member", NOW, NOW + timedelta(days=30))

        auth = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        me = anon.get("/api/v1/auth/me", **auth).json()
        balance = anon.get("/api/v1/billing/balance", **auth).json()
    assert me["membership"] == {"active": True, "tier": "member", "expiresAt": "2026-04-09T05:00:00Z"}
    assert balance["paidBalance"] == 500 and balance["available"] == 500
    assert balance["dailyFree"]["quota"] == 10_000
    assert balance["membership"] == me["membership"]


def test_running_twice_stacks_grant_and_membership(user):
    with mock.patch("django.utils.timezone.now", return_value=NOW):
        run("create_api_token", "alice", "--grant", "100", "--member-days", "10")
        run("create_api_token", "alice", "--grant", "50", "--member-days", "5")
    assert list(LedgerEntry.objects.order_by("id").values_list("amount", "balance_after")) == [(100, 100), (50, 150)]
    assert max(Membership.objects.values_list("ends_at", flat=True)) == NOW + timedelta(days=15)


def test_without_billing_flags_nothing_is_credited(anon):
    token = run("create_api_token", "erin", "--create-user", "--password", "pw-123456")[-1]
    me = anon.get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert me["membership"] == {"active": False, "tier": None, "expiresAt": None}
    assert not LedgerEntry.objects.exists() and not Membership.objects.exists()


def test_negative_member_days_are_refused_and_nothing_is_written(user):
    with pytest.raises(CommandError, match="positive"):
        run("create_api_token", "alice", "--member-days", "-3", "--grant", "100")
    assert not LedgerEntry.objects.exists() and not Membership.objects.exists()
