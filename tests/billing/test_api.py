"""The billing endpoints: balance, ledger (paginated), usage by day (ranges and validation), redeem
(errors in the envelope, throttling), isolation between users."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from unittest import mock

import pytest
from django.db import transaction

from apps.billing import selectors, services
from apps.billing.models import Charge, LedgerEntry, Membership, RedemptionCode

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
NOW = datetime(2026, 3, 10, 5, 0, tzinfo=UTC)  # 13:00 in Shanghai


def at(moment: datetime):
    return mock.patch("django.utils.timezone.now", return_value=moment)


def generate(user, gid, *, max_tokens=1000, output_chars=3000, input_chars=0):
    with transaction.atomic():
        services.hold_place(user=user, generation_id=gid, pricing=PAID, input_chars=input_chars, max_tokens=max_tokens)
    return services.charge_settle(generation_id=gid, pricing=PAID, input_chars=input_chars, output_chars=output_chars)


@pytest.fixture
def en(make_client, user):
    return make_client(user, language="en")


# --- balance ----------------------------------------------------------------------------------


def test_balance_of_a_new_user(en):
    with at(NOW):
        response = en.get("/api/v1/billing/balance")
    assert response.status_code == 200
    assert response.json() == {
        "paidBalance": 0,
        "paidHeld": 0,
        "available": 0,
        "dailyFree": {"quota": 2000, "used": 0, "held": 0, "remaining": 2000, "resetsAt": "2026-03-10T16:00:00Z"},
        "membership": {"active": False, "tier": None, "expiresAt": None},
    }


def test_balance_after_charges_holds_and_membership(en, user):
    with at(NOW):
        services.wallet_grant(user=user, amount=10_000)
        generate(user, "g1", output_chars=1500)  # 1 500 free
        with transaction.atomic():
            services.hold_place(user=user, generation_id="g2", pricing=PAID, input_chars=0, max_tokens=500)
        services.membership_extend(user=user, days=30)
        body = en.get("/api/v1/billing/balance").json()
    # g2's hold was placed before the membership: 500 free + 1 500 paid
    assert body["paidBalance"] == 10_000 and body["paidHeld"] == 1500 and body["available"] == 8500
    # now a member: quota 10 000; used 1 500, held 500
    assert body["dailyFree"] == {
        "quota": 10_000,
        "used": 1500,
        "held": 500,
        "remaining": 8000,
        "resetsAt": "2026-03-10T16:00:00Z",
    }
    assert body["membership"] == {"active": True, "tier": "member", "expiresAt": "2026-04-09T05:00:00Z"}


def test_billing_endpoints_need_a_token(anon):
    for url in ("/api/v1/billing/balance", "/api/v1/billing/ledger", "/api/v1/billing/usage"):
        response = anon.get(url)
        assert response.status_code == 401 and response.json()["statusCode"] == 401
    assert anon.post("/api/v1/billing/redeem", {"code": "X"}, format="json").status_code == 401


# --- ledger -----------------------------------------------------------------------------------


def test_ledger_is_paginated_newest_first(en, user):
    for amount in range(1, 26):
        services.wallet_grant(user=user, amount=amount, note=f"n{amount}")
    first = en.get("/api/v1/billing/ledger").json()
    assert first["total"] == 25 and first["page"] == 1 and first["pageSize"] == 20
    assert [item["amount"] for item in first["items"]] == list(range(25, 5, -1))
    top = first["items"][0]
    assert set(top) == {"id", "kind", "amount", "balanceAfter", "generationId", "note", "createdAt"}
    assert (top["kind"], top["balanceAfter"], top["generationId"], top["note"]) == ("grant", 325, None, "n25")
    second = en.get("/api/v1/billing/ledger?page=2&pageSize=20").json()
    assert [item["amount"] for item in second["items"]] == [5, 4, 3, 2, 1]
    assert second["items"][-1]["balanceAfter"] == 1


def test_ledger_shows_charges_with_their_generation_and_filters_by_kind(en, user):
    services.wallet_grant(user=user, amount=10_000)
    generate(user, "gen_abc", output_chars=3000)  # 2 000 free + 1 000 paid
    items = en.get("/api/v1/billing/ledger?kind=charge").json()["items"]
    assert len(items) == 1
    assert items[0]["kind"] == "charge" and items[0]["amount"] == -1000
    assert items[0]["balanceAfter"] == 9000 and items[0]["generationId"] == "gen_abc"


def test_ledger_rejects_bad_queries(en):
    for query in ("kind=gift", "page=0", "pageSize=101"):
        response = en.get(f"/api/v1/billing/ledger?{query}")
        assert response.status_code == 400, query
        body = response.json()
        assert body["statusCode"] == 400 and body["error"] == "Bad Request" and body["details"]


# --- usage ------------------------------------------------------------------------------------


def test_usage_sums_charges_per_shanghai_day(en, user):
    services.wallet_grant(user=user, amount=100_000)
    with at(datetime(2026, 3, 8, 15, 59, tzinfo=UTC)):  # 23:59 on 8 March in Shanghai
        generate(user, "a", output_chars=1500)
    with at(datetime(2026, 3, 8, 16, 1, tzinfo=UTC)):  # 00:01 on 9 March
        generate(user, "b", output_chars=3000, input_chars=12_000, max_tokens=1000)
        generate(user, "c", output_chars=100, max_tokens=100)
    with at(NOW):
        response = en.get("/api/v1/billing/usage?from=2026-03-08&to=2026-03-10")
    assert response.status_code == 200
    body = response.json()
    assert (body["from"], body["to"], body["timezone"]) == ("2026-03-08", "2026-03-10", "Asia/Shanghai")
    assert body["days"] == [
        {
            "date": "2026-03-08",
            "totalCost": 1500,
            "inputCost": 0,
            "outputCost": 1500,
            "usedDailyFree": 1500,
            "usedPaid": 0,
            "generations": 1,
            "inputChars": 0,
            "outputChars": 1500,
        },
        {
            "date": "2026-03-09",
            "totalCost": 15_100,
            "inputCost": 12_000,
            "outputCost": 3100,
            "usedDailyFree": 2000,
            "usedPaid": 13_100,
            "generations": 2,
            "inputChars": 12_000,
            "outputChars": 3100,
        },
        {
            "date": "2026-03-10",
            "totalCost": 0,
            "inputCost": 0,
            "outputCost": 0,
            "usedDailyFree": 0,
            "usedPaid": 0,
            "generations": 0,
            "inputChars": 0,
            "outputChars": 0,
        },
    ]
    assert body["totals"] == {
        "totalCost": 16_600,
        "inputCost": 12_000,
        "outputCost": 4600,
        "usedDailyFree": 3500,
        "usedPaid": 13_100,
        "generations": 3,
        "inputChars": 12_000,
        "outputChars": 4600,
    }


def test_usage_defaults_to_the_last_30_days(en):
    with at(NOW):
        body = en.get("/api/v1/billing/usage").json()
    assert (body["from"], body["to"], len(body["days"])) == ("2026-02-09", "2026-03-10", 30)
    with at(NOW):
        body = en.get("/api/v1/billing/usage?to=2026-01-31").json()
    assert (body["from"], body["to"]) == ("2026-01-02", "2026-01-31")
    with at(NOW):
        body = en.get("/api/v1/billing/usage?from=2026-03-01").json()
    assert (body["from"], body["to"]) == ("2026-03-01", "2026-03-10")


def test_usage_accepts_exactly_366_days(en):
    body = en.get("/api/v1/billing/usage?from=2024-01-01&to=2024-12-31").json()
    assert len(body["days"]) == 366


@pytest.mark.parametrize(
    ("query", "field", "message"),
    [
        ("from=2026-03-10&to=2026-03-09", "from", "“from” must not be after “to”."),
        ("from=2024-01-01&to=2025-01-01", "to", "The range can span at most 366 days."),
        ("from=2026-02-30", "from", None),
        ("to=yesterday", "to", None),
    ],
)
def test_usage_validation_errors(en, query, field, message):
    response = en.get(f"/api/v1/billing/usage?{query}")
    assert response.status_code == 400
    body = response.json()
    assert body["statusCode"] == 400 and body["error"] == "Bad Request"
    assert list(body["details"]) == [field]
    if message:
        assert body["details"][field] == [message]
        assert body["message"] == f"{field}: {message}"


def test_usage_validation_error_is_translated(make_client, user):
    response = make_client(user, language="zh-hans").get("/api/v1/billing/usage?from=2026-03-10&to=2026-03-09")
    assert response.status_code == 400 and response.json()["statusCode"] == 400


# --- redeem -----------------------------------------------------------------------------------


def test_redeem_credits_and_answers_the_new_balance(en, user):
    services.wallet_grant(user=user, amount=100)
    (code,) = services.codes_create(count=1, amount=500, member_days=7)
    with at(NOW):
        response = en.post("/api/v1/billing/redeem", {"code": code.code}, format="json")
    assert response.status_code == 200
    assert response.json() == {
        "amount": 500,
        "memberDays": 7,
        "paidBalance": 600,
        "available": 600,
        "membership": {"active": True, "tier": "member", "expiresAt": "2026-03-17T05:00:00Z"},
    }
    assert LedgerEntry.objects.filter(kind="redeem", amount=500, balance_after=600).count() == 1


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("NOSUCHCODE", "This code does not exist or has expired."),
        ("EXPIRED", "This code does not exist or has expired."),
        ("USED", "This code has already been used."),
    ],
)
def test_redeem_errors_are_enveloped_and_write_nothing(en, user, other_user, code, message):
    RedemptionCode.objects.create(code="EXPIRED", amount=10, expires_at=datetime(2020, 1, 1, tzinfo=UTC))
    RedemptionCode.objects.create(code="USED", amount=10, redeemed_by=other_user, redeemed_at=NOW)
    response = en.post("/api/v1/billing/redeem", {"code": code}, format="json")
    assert response.status_code == 400
    assert response.json() == {"statusCode": 400, "message": message, "error": "Bad Request"}
    assert not LedgerEntry.objects.exists() and not Membership.objects.exists()


def test_redeem_error_in_chinese(make_client, user):
    response = make_client(user).post("/api/v1/billing/redeem", {"code": "NOSUCHCODE"}, format="json")
    assert response.status_code == 400 and response.json()["statusCode"] == 400


def test_redeem_requires_a_code(en):
    for body in ({}, {"code": ""}, {"code": "x" * 65}):
        response = en.post("/api/v1/billing/redeem", body, format="json")
        assert response.status_code == 400 and "code" in response.json()["details"]
    assert not LedgerEntry.objects.exists()


def test_redeem_is_throttled(en, user, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "redeem": "3/min"},
    }
    (code,) = services.codes_create(count=1, amount=5)
    statuses = [en.post("/api/v1/billing/redeem", {"code": f"GUESS{i}"}, format="json").status_code for i in range(3)]
    assert statuses == [400, 400, 400]
    response = en.post("/api/v1/billing/redeem", {"code": code.code}, format="json")
    assert response.status_code == 429 and int(response["Retry-After"]) >= 1
    assert response.json()["statusCode"] == 429
    assert RedemptionCode.objects.get().redeemed_at is None and not LedgerEntry.objects.exists()


# --- isolation --------------------------------------------------------------------------------


def test_users_see_only_their_own_billing(en, user, other_user, make_client):
    services.wallet_grant(user=other_user, amount=777, note="bob's")
    services.membership_extend(user=other_user, days=3)
    generate(other_user, "bob-gen", output_chars=500, max_tokens=500)
    services.wallet_grant(user=user, amount=5)

    assert en.get("/api/v1/billing/balance").json()["paidBalance"] == 5
    assert en.get("/api/v1/billing/balance").json()["membership"]["active"] is False
    ledger = en.get("/api/v1/billing/ledger").json()
    assert ledger["total"] == 1 and ledger["items"][0]["amount"] == 5
    today = selectors.billing_day().isoformat()
    usage = en.get(f"/api/v1/billing/usage?from={today}&to={today}").json()
    assert usage["totals"]["generations"] == 0 and Charge.objects.filter(user=other_user).count() == 1

    bob = make_client(other_user, language="en")
    assert bob.get("/api/v1/billing/balance").json()["paidBalance"] == 777
    assert bob.get("/api/v1/billing/ledger").json()["total"] == 1


def test_openapi_schema_lists_billing_endpoints(en):
    response = en.get("/api/schema/?format=json")
    assert response.status_code == 200
    paths = response.json()["paths"]
    assert {"/api/v1/billing/balance", "/api/v1/billing/ledger", "/api/v1/billing/usage"} <= set(paths)
    assert "post" in paths["/api/v1/billing/redeem"]
    assert {p["name"] for p in paths["/api/v1/billing/usage"]["get"]["parameters"]} == {"from", "to"}


def test_usage_days_are_billing_days():
    assert selectors.billing_day(datetime(2026, 3, 9, 16, 0, tzinfo=UTC)) == date(2026, 3, 10)


# --- the one consumption shape ---------------------------------------------------------------------


def test_one_consumption_shape_serves_settlements_records_and_usage_totals(user):
    from apps.billing.api import BillingUsageDaySerializer, BillingUsageTotalsSerializer, ConsumptionSerializer
    from apps.generation.models import Generation

    consumption = selectors.Consumption(3000, 1000, 2000, 2000, 1000, True)
    record = Generation(
        user=user, total_cost=3000, input_cost=1000, output_cost=2000, used_daily_free=2000, used_paid=1000
    )
    record.member_benefit_applied = True
    assert record.consumption() == consumption
    assert ConsumptionSerializer(consumption.as_api()).data == consumption.as_api()
    assert list(ConsumptionSerializer().fields) == list(consumption.as_api())
    assert list(BillingUsageTotalsSerializer().fields) == list(selectors.USAGE_FIELDS)
    assert list(BillingUsageDaySerializer().fields) == ["date", *selectors.USAGE_FIELDS]
