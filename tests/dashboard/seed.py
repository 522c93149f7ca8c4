"""A seeded data set for the dashboard: users spending over several billing days on two models through
the real billing services (holds, charges, ledger), and generation records with upstream failures."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

from django.contrib.auth.models import Permission
from django.db import transaction

from apps.accounts.services import user_create
from apps.billing import services
from apps.generation.models import Generation
from apps.providers.models import AIModel, Connection

NOON = datetime(2026, 3, 10, 4, 0, tzinfo=UTC)  # 12:00 in Shanghai: day 2026-03-10
LAST_DAY = date(2026, 3, 10)
PRICING = {
    "writer-pro": services.Pricing("writer-pro", Decimal(1), Decimal(2), False, 4096),
    "writer-lite": services.Pricing("writer-lite", Decimal(1), Decimal(1), False, 4096),
}
GRANT = 500_000


def at(moment: datetime) -> Any:
    return mock.patch("django.utils.timezone.now", return_value=moment)


def spend(user: Any, gid: str, model: str, output_chars: int, input_chars: int = 0) -> None:
    pricing = PRICING[model]
    with transaction.atomic():
        services.hold_place(user=user, generation_id=gid, pricing=pricing, input_chars=input_chars, max_tokens=3000)
    services.charge_settle(generation_id=gid, pricing=pricing, input_chars=input_chars, output_chars=output_chars)


def seed(days: int = 3, last_day: date = LAST_DAY) -> dict[str, Any]:
    """`days` billing days ending `last_day`; returns the users by name."""
    users = {name: user_create(username=name, password="secret-pass-123") for name in ("alice", "bob", "+carol")}
    for user in users.values():
        services.wallet_grant(user=user, amount=GRANT)
    for back in range(days):
        moment = datetime(last_day.year, last_day.month, last_day.day, 4, 0, tzinfo=UTC) - timedelta(days=back)
        with at(moment):
            for i, (name, model, chars) in enumerate(
                [
                    ("alice", "writer-pro", 1500 + 100 * back),
                    ("alice", "writer-lite", 900),
                    ("bob", "writer-lite", 2600 - 150 * (back % 5)),
                    ("+carol", "writer-pro", 300 * (back % 3)),
                ]
            ):
                if chars:
                    spend(users[name], f"gen-{back}-{i}", model, chars, input_chars=12_000 if i == 0 else 0)
            # a hold released without a charge (a failed call): on no report
            with transaction.atomic():
                services.hold_place(
                    user=users["bob"],
                    generation_id=f"gen-{back}-x",
                    pricing=PRICING["writer-lite"],
                    input_chars=0,
                    max_tokens=100,
                )
            services.hold_release(generation_id=f"gen-{back}-x")
    return users


def seed_calls(day: date = LAST_DAY) -> None:
    """Generation records of `day` on two connections: the upstream calls the dashboard counts."""
    primary = Connection.objects.create(name="openai-main", kind="openai", base_url="http://127.0.0.1:9")
    backup = Connection.objects.create(name="deepseek-backup", kind="openai", base_url="http://127.0.0.1:9")
    AIModel.objects.create(model_id="writer-pro", connection=primary, upstream_model="gpt")
    AIModel.objects.create(model_id="writer-lite", connection=backup, upstream_model="ds")
    user = user_create(username="caller", password="secret-pass-123")
    created = datetime(day.year, day.month, day.day, 4, 0, tzinfo=UTC)
    rows = [
        # (model_used, status, ttft_ms, error_code, attempts)
        *[("writer-pro", "succeeded", 300, "", [])] * 7,
        ("writer-lite", "succeeded", 500, "", [{"model": "writer-pro", "error": "upstream_server_error"}] * 2),
        ("writer-pro", "failed", 200, "upstream_connect_error", []),  # broke off after the first text
        ("writer-pro", "failed", None, "upstream_timeout", [{"model": "writer-pro", "error": "upstream_timeout"}]),
        ("writer-lite", "cancelled", None, "", []),
        *[("writer-lite", "succeeded", 400, "", [])] * 3,
    ]
    Generation.objects.bulk_create(
        Generation(
            user=user,
            model_requested=model,
            model_used=model,
            status=status,
            ttft_ms=ttft,
            error_code=code,
            attempts=attempts,
            created_at=created,
        )
        for model, status, ttft, code, attempts in rows
    )


def staff(username: str = "operator", password: str = "operator-pass-123") -> Any:
    user = user_create(username=username, password=password)
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    user.user_permissions.add(Permission.objects.get(codename="view_charge", content_type__app_label="billing"))
    return user
