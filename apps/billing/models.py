"""Wallets, the ledger, daily free quota, memberships, holds, charges and redemption codes.

Invariants (checked by `manage.py billing_audit`):
- `Wallet.paid_balance` = Σ `LedgerEntry.amount` of the user, and never negative;
- `Wallet.paid_held` = Σ paid part of the user's active holds;
- `DailyUsage.used` = Σ `Charge.used_daily_free` of that user and day; `DailyUsage.held` = Σ free part
  of that day's active holds;
- one `Charge` per generation at most.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Wallet(models.Model):
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, primary_key=True, related_name="wallet"
    )
    paid_balance = models.BigIntegerField(default=0)
    paid_held = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.CheckConstraint(condition=models.Q(paid_balance__gte=0), name="wallet_balance_non_negative"),
            models.CheckConstraint(condition=models.Q(paid_held__gte=0), name="wallet_held_non_negative"),
        ]

    def __str__(self) -> str:
        return f"wallet of {self.user_id}: {self.paid_balance}"


class LedgerEntry(models.Model):
    """An immutable change of a paid balance."""

    class Kind(models.TextChoices):
        TOPUP = "topup", "topup"
        GRANT = "grant", "grant"
        CHARGE = "charge", "charge"
        REFUND = "refund", "refund"
        REDEEM = "redeem", "redeem"
        ADJUST = "adjust", "adjust"

    # indexed by (user, -created_at) below: no index of its own (every charge writes each index)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ledger_entries", db_index=False
    )
    kind = models.CharField(max_length=16, choices=Kind.choices)
    amount = models.BigIntegerField()
    balance_after = models.BigIntegerField()
    generation_id = models.CharField(max_length=40, blank=True, default="", db_index=True)
    note = models.CharField(max_length=300, blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-created_at", "-id")
        indexes = [models.Index(fields=["user", "-created_at"])]
        verbose_name_plural = "ledger entries"

    def __str__(self) -> str:
        return f"{self.kind} {self.amount:+d} → {self.balance_after}"


class Plan(models.Model):
    """Daily free quota per membership tier (`default` applies to users without a membership)."""

    tier = models.CharField(max_length=50, unique=True)
    daily_free_quota = models.PositiveIntegerField()
    description = models.CharField(max_length=200, blank=True, default="")

    def __str__(self) -> str:
        return f"{self.tier}: {self.daily_free_quota}/day"


class Membership(models.Model):
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    tier = models.CharField(max_length=50, default="member")
    starts_at = models.DateTimeField(default=timezone.now)
    ends_at = models.DateTimeField()
    note = models.CharField(max_length=300, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-ends_at", "-id")
        indexes = [models.Index(fields=["user", "ends_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(ends_at__gt=models.F("starts_at")), name="membership_ends_after_start"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tier} {self.starts_at:%Y-%m-%d}→{self.ends_at:%Y-%m-%d}"


class DailyUsage(models.Model):
    """Free quota used (settled) and held (reserved) by a user on a calendar day of BILLING_TIMEZONE."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="daily_usage")
    day = models.DateField()
    used = models.BigIntegerField(default=0)
    held = models.BigIntegerField(default=0)

    class Meta:
        ordering = ("-day",)
        constraints = [
            models.UniqueConstraint(fields=["user", "day"], name="daily_usage_unique_day"),
            models.CheckConstraint(condition=models.Q(used__gte=0, held__gte=0), name="daily_usage_non_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.day}: used {self.used}, held {self.held}"


class Hold(models.Model):
    """Funds reserved for one generation before the upstream call."""

    class Status(models.TextChoices):
        ACTIVE = "active", "active"
        SETTLED = "settled", "settled"
        RELEASED = "released", "released"
        EXPIRED = "expired", "expired"

    generation_id = models.CharField(max_length=40, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="holds")
    model_id = models.CharField(max_length=100)
    day = models.DateField()
    amount = models.BigIntegerField()
    free_part = models.BigIntegerField()
    paid_part = models.BigIntegerField()
    is_member = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["status", "expires_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    free_part__gte=0, paid_part__gte=0, amount=models.F("free_part") + models.F("paid_part")
                ),
                name="hold_parts_sum",
            )
        ]

    def __str__(self) -> str:
        return f"hold {self.generation_id} {self.amount} ({self.status})"


class Charge(models.Model):
    """The settled cost of one generation (at most one per generation)."""

    generation_id = models.CharField(max_length=40, unique=True)
    # indexed by (user, day) below
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="charges", db_index=False)
    model_id = models.CharField(max_length=100)
    day = models.DateField()
    input_chars = models.BigIntegerField()
    output_chars = models.BigIntegerField()
    input_cost = models.BigIntegerField()
    output_cost = models.BigIntegerField()
    total_cost = models.BigIntegerField()
    used_daily_free = models.BigIntegerField()
    used_paid = models.BigIntegerField()
    member_benefit_applied = models.BooleanField(default=False)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-created_at",)
        indexes = [models.Index(fields=["user", "day"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(total_cost=models.F("used_daily_free") + models.F("used_paid")),
                name="charge_split_sums",
            )
        ]

    def __str__(self) -> str:
        return f"charge {self.generation_id}: {self.total_cost}"


class RedemptionCode(models.Model):
    code = models.CharField(max_length=64, unique=True)
    amount = models.PositiveBigIntegerField(default=0, help_text="characters credited to the paid balance")
    member_days = models.PositiveIntegerField(default=0)
    batch = models.CharField(max_length=100, blank=True, default="")
    expires_at = models.DateTimeField(null=True, blank=True)
    redeemed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="redeemed_codes"
    )
    redeemed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.code[:4]}…{self.code[-4:]}"
