"""Billing services with exact numbers: holds, settlement, release, expiry, the day boundary, grants and
adjustments, memberships and redemption codes (the expiry task: tests/generation/test_tasks.py).

Defaults (settings): daily free quota 2 000 (member 10 000), input free threshold 10 000, hold 4
characters per token, ratios 1/1 unless stated.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from unittest import mock

import pytest
from django.db import transaction
from django.utils import translation

from apps.billing import selectors, services
from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Membership, Plan, RedemptionCode, Wallet
from apps.core.db import update_statement
from apps.core.errors import ApplicationError

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _english():
    """Messages are asserted in English (the msgids), whatever the default language."""
    with translation.override("en"):
        yield


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
FREE = services.Pricing("free", Decimal(1), Decimal(1), True, 4096)


def place(user, gid, *, input_chars=0, max_tokens=100, pricing=PAID):
    with transaction.atomic():
        return services.hold_place(
            user=user, generation_id=gid, pricing=pricing, input_chars=input_chars, max_tokens=max_tokens
        )


def settle(gid, *, input_chars=0, output_chars=0, pricing=PAID):
    return services.charge_settle(
        generation_id=gid, pricing=pricing, input_chars=input_chars, output_chars=output_chars
    )


def wallet(user):
    return Wallet.objects.filter(pk=user.pk).values_list("paid_balance", "paid_held").first()


def usage(user, day=None):
    day = day or selectors.billing_day()
    return DailyUsage.objects.filter(user=user, day=day).values_list("used", "held").first()


def at(iso: str):
    """Patch `timezone.now` (services read it through `django.utils.timezone`)."""
    return mock.patch("django.utils.timezone.now", return_value=datetime.fromisoformat(iso))


# --- holds and settlement ---------------------------------------------------------------------


def test_free_quota_covers_all(user):
    hold = place(user, "g1", input_chars=100, max_tokens=100)
    assert (hold.amount, hold.is_member) == (400, False)
    assert Hold.objects.get(generation_id="g1").free_part == 400
    assert usage(user) == (0, 400)
    assert wallet(user) == (0, 0)

    consumption = settle("g1", input_chars=100, output_chars=150)

    assert consumption == services.Consumption(150, 0, 150, 150, 0, False)
    assert usage(user) == (150, 0)
    assert wallet(user) == (0, 0)
    assert LedgerEntry.objects.count() == 0
    assert Hold.objects.get(generation_id="g1").status == Hold.Status.SETTLED


def test_free_quota_covers_part_and_the_rest_is_paid(user):
    services.wallet_grant(user=user, amount=10_000)
    place(user, "g1", max_tokens=1000)  # hold 4 000: 2 000 free + 2 000 paid
    hold = Hold.objects.get(generation_id="g1")
    assert (hold.amount, hold.free_part, hold.paid_part) == (4000, 2000, 2000)
    assert wallet(user) == (10_000, 2000)
    assert usage(user) == (0, 2000)

    consumption = settle("g1", output_chars=3000)

    assert consumption == services.Consumption(3000, 0, 3000, 2000, 1000, False)
    assert wallet(user) == (9000, 0)
    assert usage(user) == (2000, 0)
    entry = LedgerEntry.objects.get(kind="charge")
    assert (entry.amount, entry.balance_after, entry.generation_id) == (-1000, 9000, "g1")
    charge = Charge.objects.get(generation_id="g1")
    assert (charge.total_cost, charge.used_daily_free, charge.used_paid, charge.output_chars) == (
        3000,
        2000,
        1000,
        3000,
    )


def test_no_free_quota_left_everything_is_paid(user, settings):
    settings.BILLING_DAILY_FREE_QUOTA = 0
    services.wallet_grant(user=user, amount=5000)
    place(user, "g1", max_tokens=500)
    assert wallet(user) == (5000, 2000)

    consumption = settle("g1", output_chars=1234)

    assert consumption == services.Consumption(1234, 0, 1234, 0, 1234, False)
    assert wallet(user) == (3766, 0)
    assert usage(user) == (0, 0)


def test_member_output_is_waived_and_input_is_charged(user):
    services.membership_extend(user=user, days=30)
    services.wallet_grant(user=user, amount=5000)
    hold = place(user, "g1", input_chars=12_000, max_tokens=2048)
    assert (hold.amount, hold.is_member) == (12_000, True)  # the output is not held
    assert wallet(user) == (5000, 2000) and usage(user) == (0, 10_000)

    consumption = settle("g1", input_chars=12_000, output_chars=5000)

    assert consumption == services.Consumption(12_000, 12_000, 0, 10_000, 2000, True)
    assert wallet(user) == (3000, 0)
    assert usage(user) == (10_000, 0)


def test_member_short_prompt_costs_nothing_but_benefit_is_reported(user):
    services.membership_extend(user=user, days=30)
    assert place(user, "g1", input_chars=2000, max_tokens=2048).amount == 0
    assert settle("g1", input_chars=2000, output_chars=5000) == services.Consumption(0, 0, 0, 0, 0, True)
    assert Charge.objects.get(generation_id="g1").total_cost == 0
    assert LedgerEntry.objects.count() == 0


def test_free_model_holds_and_charges_nothing(user):
    assert place(user, "g1", input_chars=50_000, max_tokens=4000, pricing=FREE).amount == 0
    assert settle("g1", input_chars=50_000, output_chars=4000, pricing=FREE) == services.Consumption()
    assert Hold.objects.get(generation_id="g1").status == Hold.Status.SETTLED
    assert not Wallet.objects.exists() and not DailyUsage.objects.exists() and not LedgerEntry.objects.exists()


@pytest.mark.parametrize(
    ("input_chars", "hold", "input_cost"),
    [(9_999, 4, 0), (10_000, 10_004, 10_000), (10_001, 10_005, 10_001)],
)
def test_input_threshold(user, input_chars, hold, input_cost):
    services.wallet_grant(user=user, amount=20_000)
    assert place(user, "g1", input_chars=input_chars, max_tokens=1).amount == hold
    consumption = settle("g1", input_chars=input_chars, output_chars=0)
    assert (consumption.input_cost, consumption.total_cost) == (input_cost, input_cost)
    assert consumption.used_daily_free == min(input_cost, 2000)
    assert wallet(user) == (20_000 - max(0, input_cost - 2000), 0)


def test_settlement_never_exceeds_the_hold(user):
    place(user, "g1", max_tokens=10)  # hold 40
    consumption = settle("g1", output_chars=100)
    assert (consumption.output_cost, consumption.total_cost) == (40, 40)
    assert usage(user) == (40, 0)


def test_settlement_with_ratio_rounds_up(user):
    services.wallet_grant(user=user, amount=10_000)
    pricing = services.Pricing("r", Decimal(2), Decimal("1.5"), False, 4096)
    place(user, "g1", input_chars=12_345, max_tokens=1000, pricing=pricing)  # 6 173 + ⌈4 000 / 1.5⌉ = 8 840
    assert Hold.objects.get(generation_id="g1").amount == 8840
    consumption = settle("g1", input_chars=12_345, output_chars=1000, pricing=pricing)
    assert consumption == services.Consumption(6840, 6173, 667, 2000, 4840, False)
    assert wallet(user) == (5160, 0)


def test_double_settle_is_idempotent(user):
    services.wallet_grant(user=user, amount=10_000)
    place(user, "g1", max_tokens=1000)
    first = settle("g1", output_chars=3000)
    second = settle("g1", output_chars=3999)
    assert first == second == services.Consumption(3000, 0, 3000, 2000, 1000, False)
    assert Charge.objects.count() == 1
    assert LedgerEntry.objects.filter(kind="charge").count() == 1
    assert wallet(user) == (9000, 0)


def test_release_gives_everything_back(user):
    services.wallet_grant(user=user, amount=10_000)
    place(user, "g1", max_tokens=1000)
    assert services.hold_release(generation_id="g1") is True
    assert wallet(user) == (10_000, 0) and usage(user) == (0, 0)
    assert Hold.objects.get(generation_id="g1").status == Hold.Status.RELEASED
    assert not Charge.objects.exists() and LedgerEntry.objects.count() == 1
    # a settlement after a release changes nothing
    assert settle("g1", output_chars=500) == services.Consumption()
    assert wallet(user) == (10_000, 0) and not Charge.objects.exists()


def test_release_after_settle_is_a_no_op(user):
    services.wallet_grant(user=user, amount=10_000)
    place(user, "g1", max_tokens=1000)
    settle("g1", output_chars=3000)
    assert services.hold_release(generation_id="g1") is False
    assert wallet(user) == (9000, 0) and usage(user) == (2000, 0)
    assert Hold.objects.get(generation_id="g1").status == Hold.Status.SETTLED


def test_unknown_generation_settles_and_releases_to_nothing(user):
    assert settle("nope", output_chars=10) == services.Consumption()
    assert services.hold_release(generation_id="nope") is False
    assert not Charge.objects.exists()


def test_the_record_statement_runs_with_the_writes_active_or_not(user):
    """The caller's record statement gets what billing says of the record (a release charges nothing) and
    runs with billing's writes — in the same statement on PostgreSQL, reading its decided row — whether
    the hold was still active or not. Here the "record" is a probe row that stores the amount it is given."""
    services.wallet_grant(user=user, amount=10_000)
    Plan.objects.create(tier="probe", daily_free_quota=0)
    seen = set()

    def record(what):
        seen.add(type(what).__name__)
        value = what.amount if isinstance(what, services.HoldRecord) else what.total_cost
        return update_statement(Plan, {"daily_free_quota": value}, where="tier", equals="probe", source=what.source)

    def probe():
        return Plan.objects.get(tier="probe").daily_free_quota

    with transaction.atomic():
        held = services.hold_place(
            user=user, generation_id="g1", pricing=PAID, input_chars=0, max_tokens=1000, record_statement=record
        )
    assert held == services.HoldResult(amount=4000, is_member=False) and probe() == 4000
    charged = services.charge_settle(
        generation_id="g1", pricing=PAID, input_chars=0, output_chars=3000, record_statement=record
    )
    assert probe() == 3000
    Plan.objects.filter(tier="probe").update(daily_free_quota=0)
    again = services.charge_settle(
        generation_id="g1", pricing=PAID, input_chars=0, output_chars=3000, record_statement=record
    )
    assert probe() == 3000  # settled before: the record gets the existing charge
    place(user, "g2", max_tokens=10)
    assert services.hold_release(generation_id="g2", record_statement=record) is True
    assert probe() == 0
    assert services.hold_release(generation_id="g2", record_statement=record) is False

    assert seen == {"HoldRecord", "ConsumptionRecord"}
    assert charged == again == services.Consumption(3000, 0, 3000, 2000, 1000, False)
    assert wallet(user) == (9000, 0)


def test_a_refused_hold_writes_no_record(user):
    Plan.objects.create(tier="probe", daily_free_quota=7)

    def record(what):
        return update_statement(
            Plan, {"daily_free_quota": what.amount}, where="tier", equals="probe", source=what.source
        )

    with pytest.raises(ApplicationError), transaction.atomic():
        services.hold_place(
            user=user, generation_id="g1", pricing=PAID, input_chars=20_000, max_tokens=10, record_statement=record
        )
    assert Plan.objects.get(tier="probe").daily_free_quota == 7


def test_a_hold_beyond_the_funds_holds_what_is_left(user):
    services.wallet_grant(user=user, amount=1000)
    held = place(user, "g1", max_tokens=1000)  # worst case 4 000 > 2 000 free + 1 000 paid
    assert held == services.HoldResult(amount=3000, is_member=False, covers_worst=False)
    assert Hold.objects.values_list("free_part", "paid_part").get() == (2000, 1000)
    assert wallet(user) == (1000, 1000)


def test_402_only_when_not_even_the_input_and_one_character_fit(user, settings):
    services.wallet_grant(user=user, amount=1000)
    with pytest.raises(ApplicationError) as exc:
        place(user, "g1", input_chars=12_000, max_tokens=1)  # input 12 000 > 2 000 free + 1 000 paid
    assert exc.value.status_code == 402
    assert exc.value.extra == {"required": 12_001, "available": 3000, "inputCost": 12_000, "heldByRunning": 0}
    assert exc.value.message == (
        "Not enough characters: this request's input costs 12000 and it needs at least 12001 to answer; "
        "you have 3000 available. Top up or shorten the prompt."
    )
    assert not Hold.objects.exists() and not DailyUsage.objects.exists()
    assert wallet(user) == (1000, 0)
    # exactly the input and one character: accepted, and that is all it holds
    settings.BILLING_INPUT_FREE_THRESHOLD = 0
    with pytest.raises(ApplicationError):
        place(user, "g2", input_chars=3000, max_tokens=100)
    assert place(user, "g3", input_chars=2999, max_tokens=100) == services.HoldResult(3000, False, False)


def test_holds_are_counted_against_later_requests(user):
    services.wallet_grant(user=user, amount=1000)
    place(user, "g1", max_tokens=500)  # 2 000 free
    place(user, "g2", max_tokens=250)  # 1 000 paid
    with pytest.raises(ApplicationError) as exc:
        place(user, "g3", max_tokens=1)
    assert exc.value.extra == {"required": 1, "available": 0, "inputCost": 0, "heldByRunning": 3000}
    assert "3000 more are held by your running generations" in exc.value.message
    services.hold_release(generation_id="g2")
    assert place(user, "g3", max_tokens=1).amount == 4


def test_a_member_needs_only_the_input_cost(user):
    services.membership_extend(user=user, days=30)  # 10 000 free a day
    held = place(user, "g1", input_chars=10_000, max_tokens=4000)
    assert held == services.HoldResult(amount=10_000, is_member=True, covers_worst=True)
    with pytest.raises(ApplicationError) as exc:
        place(user, "g2", input_chars=10_000, max_tokens=1)
    assert exc.value.extra["required"] == 10_000 and exc.value.extra["available"] == 0


def test_extension_grows_the_hold_free_first_and_pushes_back_its_expiry(user, settings):
    services.wallet_grant(user=user, amount=1000)
    with at("2026-03-10T04:00:00+00:00"):
        place(user, "g1", max_tokens=250)  # 1 000 of the 2 000 free
    with at("2026-03-10T04:00:30+00:00"):
        grown = services.hold_extend(generation_id="g1", amount=1500)
    assert grown == services.Extension(amount=2500, granted=1500)
    hold = Hold.objects.get()
    assert (hold.amount, hold.free_part, hold.paid_part) == (2500, 2000, 500)
    assert hold.expires_at == datetime(2026, 3, 10, 4, 0, 30, tzinfo=UTC) + timedelta(
        seconds=settings.BILLING_HOLD_TTL_SECONDS
    )
    assert wallet(user) == (1000, 500)
    # only what is left is granted, then nothing
    assert services.hold_extend(generation_id="g1", amount=9999) == services.Extension(amount=3000, granted=500)
    assert services.hold_extend(generation_id="g1", amount=1) == services.Extension(amount=3000, granted=0)
    # the settlement charges what was delivered and gives the rest back
    assert settle("g1", output_chars=2600) == services.Consumption(2600, 0, 2600, 2000, 600, False)
    assert wallet(user) == (400, 0)
    assert services.hold_extend(generation_id="g1", amount=10) is None  # settled: the caller must stop


def test_settle_after_membership_ended_keeps_the_free_part_it_reserved(user):
    services.membership_extend(user=user, days=30)
    services.wallet_grant(user=user, amount=5000)
    place(user, "g1", input_chars=12_000, max_tokens=1)  # 10 000 member free + 2 000 paid
    Membership.objects.filter(user=user).update(
        ends_at=datetime(2000, 1, 2, tzinfo=UTC), starts_at=datetime(2000, 1, 1, tzinfo=UTC)
    )

    consumption = settle("g1", input_chars=12_000, output_chars=4)

    # the hold was a member's: output waived; its 10 000 free stay free although today's quota is 2 000
    assert consumption == services.Consumption(12_000, 12_000, 0, 10_000, 2000, True)
    assert wallet(user) == (3000, 0)


def test_expiry_sweep_releases_only_expired_active_holds(user):
    services.wallet_grant(user=user, amount=10_000)
    with at("2026-03-10T04:00:00+00:00"):
        place(user, "old1", max_tokens=250)  # 1 000 free
        place(user, "old2", max_tokens=500)  # 1 000 free + 1 000 paid
        place(user, "settled", max_tokens=10)  # 40 paid
    settle("settled", output_chars=40)
    with at("2026-03-10T04:20:00+00:00"):
        place(user, "young", max_tokens=100)  # 400 paid
    day = date(2026, 3, 10)
    assert wallet(user) == (9960, 1400) and usage(user, day) == (0, 2000)

    expired = services.holds_expire(now=datetime(2026, 3, 10, 4, 30, 1, tzinfo=UTC))  # TTL 1 800 s

    assert sorted(expired) == ["old1", "old2"]
    statuses = dict(Hold.objects.values_list("generation_id", "status"))
    assert statuses == {"old1": "expired", "old2": "expired", "settled": "settled", "young": "active"}
    assert wallet(user) == (9960, 400) and usage(user, day) == (0, 0)
    assert services.holds_expire(now=datetime(2026, 3, 10, 4, 30, 1, tzinfo=UTC)) == []


# --- the day boundary (Asia/Shanghai) ---------------------------------------------------------


def test_billing_day_and_reset_follow_shanghai_midnight():
    before = datetime(2026, 1, 1, 15, 59, 59, tzinfo=UTC)  # 23:59:59 in Shanghai
    after = datetime(2026, 1, 1, 16, 0, 0, tzinfo=UTC)  # 00:00:00 on 2 January in Shanghai
    assert selectors.billing_day(before) == date(2026, 1, 1)
    assert selectors.billing_day(after) == date(2026, 1, 2)
    assert selectors.next_reset(before) == datetime(2026, 1, 1, 16, 0, tzinfo=UTC)
    assert selectors.next_reset(after) == datetime(2026, 1, 2, 16, 0, tzinfo=UTC)


def test_free_quota_renews_at_shanghai_midnight(user):
    with at("2026-01-01T15:59:00+00:00"):
        place(user, "d1", max_tokens=500)
        settle("d1", output_chars=1500)
    with at("2026-01-01T16:00:01+00:00"):
        hold = place(user, "d2", max_tokens=500)
    assert hold.amount == 2000 and Hold.objects.get(generation_id="d2").free_part == 2000
    assert usage(user, date(2026, 1, 1)) == (1500, 0)
    assert usage(user, date(2026, 1, 2)) == (0, 2000)


def test_a_hold_placed_before_midnight_is_charged_to_its_day(user):
    with at("2026-01-01T15:59:59+00:00"):
        place(user, "late", max_tokens=100)
    with at("2026-01-01T16:00:05+00:00"):
        settle("late", output_chars=300)
    assert Charge.objects.get(generation_id="late").day == date(2026, 1, 1)
    assert usage(user, date(2026, 1, 1)) == (300, 0)
    assert usage(user, date(2026, 1, 2)) is None


# --- grants, adjustments, ledger --------------------------------------------------------------


def test_grant_and_adjust_write_ledger_entries_with_balance_after(user, other_user):
    first = services.wallet_grant(user=user, amount=500, note="welcome", created_by=other_user)
    second = services.wallet_adjust(user=user, amount=-200, note="correction")
    third = services.wallet_adjust(user=user, amount=50, note="goodwill")
    rows = list(LedgerEntry.objects.order_by("id").values_list("kind", "amount", "balance_after", "note"))
    assert rows == [
        ("grant", 500, 500, "welcome"),
        ("adjust", -200, 300, "correction"),
        ("adjust", 50, 350, "goodwill"),
    ]
    assert first.created_by == other_user and second.created_by is None and third.balance_after == 350
    assert wallet(user) == (350, 0)


def test_adjust_cannot_go_negative_and_writes_nothing(user):
    services.wallet_grant(user=user, amount=100)
    with pytest.raises(ApplicationError) as exc:
        services.wallet_adjust(user=user, amount=-101, note="too much")
    assert exc.value.status_code == 400 and exc.value.message == "The balance cannot become negative."
    assert wallet(user) == (100, 0) and LedgerEntry.objects.count() == 1


def test_adjust_cannot_take_away_what_is_held(user, settings):
    settings.BILLING_DAILY_FREE_QUOTA = 0
    services.wallet_grant(user=user, amount=100)
    place(user, "g1", max_tokens=20)  # 80 held
    with pytest.raises(ApplicationError):
        services.wallet_adjust(user=user, amount=-30, note="x")
    assert services.wallet_adjust(user=user, amount=-20, note="ok").balance_after == 80
    assert wallet(user) == (80, 80)


def test_grant_and_adjust_refuse_meaningless_amounts(user):
    with pytest.raises(ValueError, match="positive"):
        services.wallet_grant(user=user, amount=0)
    with pytest.raises(ValueError, match="zero"):
        services.wallet_adjust(user=user, amount=0, note="x")
    assert not LedgerEntry.objects.exists()


# --- memberships ------------------------------------------------------------------------------


def test_membership_extensions_stack_end_to_end(user):
    now = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
    with at(now.isoformat()):
        services.membership_extend(user=user, days=30)
        services.membership_extend(user=user, days=10)
        services.membership_extend(user=user, days=5)
        summary = selectors.membership_current(user=user).as_api()
    periods = list(Membership.objects.order_by("starts_at").values_list("starts_at", "ends_at"))
    assert periods == [
        (now, now + timedelta(days=30)),
        (now + timedelta(days=30), now + timedelta(days=40)),
        (now + timedelta(days=40), now + timedelta(days=45)),
    ]
    assert summary == {"active": True, "tier": "member", "expiresAt": datetime(2026, 4, 24, 4, 0, tzinfo=UTC)}


def test_membership_after_a_lapse_starts_now(user):
    Membership.objects.create(
        user=user, starts_at=datetime(2025, 1, 1, tzinfo=UTC), ends_at=datetime(2025, 2, 1, tzinfo=UTC)
    )
    now = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
    with at(now.isoformat()):
        created = services.membership_extend(user=user, days=7)
    assert (created.starts_at, created.ends_at) == (now, now + timedelta(days=7))


def test_no_membership_summary(user):
    assert selectors.membership_current(user=user).as_api() == {"active": False, "tier": None, "expiresAt": None}


def test_member_gets_the_member_quota_then_default_after_expiry(user):
    now = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)
    with at(now.isoformat()):
        services.membership_extend(user=user, days=1)
        assert selectors.daily_quota(membership=selectors.membership_active(user=user)) == 10_000
    with at((now + timedelta(days=1)).isoformat()):
        assert selectors.membership_active(user=user) is None
        assert selectors.daily_quota(membership=None) == 2000


# --- redemption codes -------------------------------------------------------------------------


def test_redeem_credits_once(user, other_user):
    (code,) = services.codes_create(count=1, amount=500, member_days=7, batch="launch")
    redeemed = services.code_redeem(user=user, code=f"  {code.code} ")
    assert redeemed.redeemed_by == user
    entry = LedgerEntry.objects.get()
    assert (entry.kind, entry.amount, entry.balance_after) == ("redeem", 500, 500)
    assert selectors.membership_current(user=user).active is True

    for who in (user, other_user):
        with pytest.raises(ApplicationError) as exc:
            services.code_redeem(user=who, code=code.code)
        assert exc.value.message == "This code has already been used."
    assert LedgerEntry.objects.count() == 1 and Membership.objects.count() == 1
    assert RedemptionCode.objects.get().redeemed_by == user


def test_redeem_unknown_or_expired_code_writes_nothing(user):
    (expired,) = services.codes_create(count=1, amount=500, expires_at=datetime(2020, 1, 1, tzinfo=UTC))
    for code in ("NOPE", expired.code):
        with pytest.raises(ApplicationError) as exc:
            services.code_redeem(user=user, code=code)
        assert exc.value.status_code == 400 and exc.value.message == "This code does not exist or has expired."
    assert not LedgerEntry.objects.exists() and not Wallet.objects.exists()
    assert RedemptionCode.objects.get().redeemed_at is None


def test_redeem_membership_only_code(user):
    (code,) = services.codes_create(count=1, member_days=30)
    services.code_redeem(user=user, code=code.code)
    assert not LedgerEntry.objects.exists()
    membership = Membership.objects.get()
    assert membership.ends_at - membership.starts_at == timedelta(days=30)


def test_codes_create_validates_and_makes_unique_codes():
    codes = services.codes_create(count=50, amount=10)
    assert len({c.code for c in codes}) == 50 and all(len(c.code) == 16 for c in codes)
    with pytest.raises(ValueError):
        services.codes_create(count=1)
    with pytest.raises(ValueError):
        services.codes_create(count=0, amount=5)
    assert RedemptionCode.objects.count() == 50
