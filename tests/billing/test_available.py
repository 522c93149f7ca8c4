"""`available_get` (the OpenAI-compatible API's `X-Balance-Remaining`): one statement, exact figures."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.billing.models import DailyUsage, Membership, Wallet
from apps.billing.selectors import available_get, billing_day, plan_quotas

pytestmark = pytest.mark.django_db


@pytest.fixture
def quotas(settings):
    settings.BILLING_DAILY_FREE_QUOTA = 100
    settings.BILLING_MEMBER_DAILY_FREE_QUOTA = 1000


def test_a_user_without_rows_has_the_daily_quota(user, quotas):
    Wallet.objects.filter(pk=user.pk).delete()
    plan_quotas()  # the plans, read once per PLAN_CACHE_SECONDS per process
    with CaptureQueriesContext(connection) as queries:
        assert available_get(user_id=user.pk) == 100
    assert len(queries) == 1  # was three (wallet, usage, membership)


def test_quota_left_plus_paid_balance_less_what_is_held(user, quotas):
    now = timezone.now()
    Wallet.objects.update_or_create(pk=user.pk, defaults={"paid_balance": 500, "paid_held": 120})
    DailyUsage.objects.create(user=user, day=billing_day(now), used=30, held=25)
    DailyUsage.objects.create(user=user, day=billing_day(now) - timedelta(days=1), used=99, held=0)  # yesterday
    assert available_get(user_id=user.pk, at=now) == (100 - 30 - 25) + (500 - 120)


def test_an_active_membership_has_the_member_quota_and_nothing_goes_below_zero(user, quotas):
    now = timezone.now()
    Wallet.objects.update_or_create(pk=user.pk, defaults={"paid_balance": 10, "paid_held": 40})  # over-held
    DailyUsage.objects.create(user=user, day=billing_day(now), used=150, held=0)
    assert available_get(user_id=user.pk, at=now) == 0  # 100 − 150 and 10 − 40: both floored at 0
    Membership.objects.create(user=user, starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=1))
    Membership.objects.create(user=user, starts_at=now - timedelta(days=9), ends_at=now - timedelta(days=2))
    assert available_get(user_id=user.pk, at=now) == 1000 - 150
    assert available_get(user_id=user.pk, at=now + timedelta(days=2)) == 100 - 0  # ended; another day's row
