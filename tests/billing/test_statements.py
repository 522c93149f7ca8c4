"""The one-statement hold, extension and settlement on PostgreSQL decide exactly as the Python rules
(`charges.plan_hold`, `services._settlement`) that SQLite runs: the same rows, the same answers, over a
seeded table of random wallets, days, memberships, prices and outputs (PostgreSQL only)."""

from __future__ import annotations

import random
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.db import transaction
from django.utils import timezone

from apps.billing import selectors, services
from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Membership, Plan, Wallet
from apps.core.errors import InsufficientBalance

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

CASES = 80


def state(user: Any) -> dict[str, Any]:
    wallet = Wallet.objects.filter(pk=user.pk).values_list("paid_balance", "paid_held").first()
    usage = list(DailyUsage.objects.filter(user=user).order_by("day").values_list("day", "used", "held"))
    holds = list(
        Hold.objects.order_by("generation_id").values_list(
            "generation_id", "amount", "free_part", "paid_part", "is_member", "status"
        )
    )
    charges = list(
        Charge.objects.order_by("generation_id").values_list(
            "generation_id",
            "input_cost",
            "output_cost",
            "total_cost",
            "used_daily_free",
            "used_paid",
            "member_benefit_applied",
        )
    )
    ledger = list(LedgerEntry.objects.order_by("id").values_list("kind", "amount", "balance_after", "generation_id"))
    return {"wallet": wallet, "usage": usage, "holds": holds, "charges": charges, "ledger": ledger}


def outcome_of(call: Any) -> Any:
    try:
        return call()
    except InsufficientBalance as exc:
        return ("402", exc.extra, exc.message)


def both_ways(monkeypatch: Any, user: Any, steps: Any) -> tuple[Any, Any]:
    """Run `steps` with the one-statement path, roll back, run them with the Python path: both results."""
    results = []
    for one_statement in (True, False):
        monkeypatch.setattr(services, "_one_statement", lambda flag=one_statement: flag)
        selectors.plans_forget()
        with transaction.atomic():
            answers = steps()
            results.append((answers, state(user)))
            transaction.set_rollback(True)
    return results[0], results[1]


def test_holds_extensions_and_settlements_decide_as_the_python_rules(user, monkeypatch):
    rng = random.Random(20261206)
    Plan.objects.create(tier="gold", daily_free_quota=3000)
    for case in range(CASES):
        balance = rng.choice([0, 0, 1, 5, 500, 2000, 50_000])
        quota_used = rng.choice([0, 100, 1999, 2000, 2500])
        tier = rng.choice([None, None, "member", "gold"])
        ratio_in, ratio_out = (Decimal(rng.choice(["1", "0.5", "1.5", "4"])) for _ in range(2))
        pricing = services.Pricing("m", ratio_in, ratio_out, rng.random() < 0.1, 4096)
        inputs = [rng.choice([0, 500, 9_999, 10_000, 12_345]) for _ in range(3)]
        tokens = [rng.choice([1, 10, 250, 1000]) for _ in range(3)]
        outputs = [rng.choice([None, 0, 1, 37, 400, 4000, 9000]) for _ in range(3)]
        order = rng.sample(range(3), 3)
        grow = [rng.choice([1, 50, 1000, 100_000]) for _ in range(3)]

        def steps(
            balance=balance,
            quota_used=quota_used,
            tier=tier,
            pricing=pricing,
            inputs=inputs,
            tokens=tokens,
            outputs=outputs,
            grow=grow,
            order=order,
            case=case,
        ):
            now = timezone.now()
            if balance:
                services.wallet_grant(user=user, amount=balance)
            if quota_used:
                DailyUsage.objects.update_or_create(
                    user=user, day=selectors.billing_day(now), defaults={"used": quota_used}
                )
            if tier:
                Membership.objects.create(
                    user=user, tier=tier, starts_at=now - timedelta(days=1), ends_at=now + timedelta(days=1)
                )
            answers = []
            for i in range(3):  # three calls overlap: each hold counts against the next
                answers.append(
                    outcome_of(
                        lambda i=i: services.hold_place(
                            user=user,
                            generation_id=f"g{case}-{i}",
                            pricing=pricing,
                            input_chars=inputs[i],
                            max_tokens=tokens[i],
                        )
                    )
                )
            for i in range(3):
                answers.append(services.hold_extend(generation_id=f"g{case}-{i}", amount=grow[i]))
            for i in order:  # settled, or released (upstream failure), in a random order
                if outputs[i] is None:
                    answers.append(services.hold_release(generation_id=f"g{case}-{i}"))
                    continue
                answers.append(
                    services.charge_settle(
                        generation_id=f"g{case}-{i}", pricing=pricing, input_chars=inputs[i], output_chars=outputs[i]
                    )
                )
            answers.append(  # a second settlement changes nothing and answers the same
                services.charge_settle(
                    generation_id=f"g{case}-0", pricing=pricing, input_chars=inputs[0], output_chars=outputs[0] or 0
                )
            )
            return answers

        one_statement, python = both_ways(monkeypatch, user, steps)
        assert one_statement == python, f"case {case}"


def test_a_settlement_uses_free_quota_released_by_others(user, monkeypatch):
    """The hold's own free part stays free, and quota given back by another call meanwhile is used too."""
    paid = services.Pricing("m", Decimal(1), Decimal(1), False, 4096)

    def steps():
        services.wallet_grant(user=user, amount=50_000)
        services.hold_place(user=user, generation_id="x", pricing=paid, input_chars=0, max_tokens=300)  # 1 200 free
        services.hold_place(user=user, generation_id="y", pricing=paid, input_chars=0, max_tokens=500)  # 800 + 1 200
        services.hold_release(generation_id="x")
        return services.charge_settle(generation_id="y", pricing=paid, input_chars=0, output_chars=2000)

    (one_statement, rows), (python, python_rows) = both_ways(monkeypatch, user, steps)
    assert one_statement == python == services.Consumption(2000, 0, 2000, 2000, 0, False)
    assert rows == python_rows
