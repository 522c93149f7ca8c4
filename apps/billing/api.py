"""User billing endpoints: balance, ledger, per-day usage, redeeming a code. Thin: validate, call one
selector or service, serialize."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any

from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.billing import selectors, services
from apps.billing.models import LedgerEntry
from apps.core.api.pagination import PagePagination
from apps.core.api.throttling import ScopedRateThrottle, UserRateThrottle

USAGE_DEFAULT_DAYS = 30
USAGE_MAX_DAYS = 366


class MembershipSummarySerializer(serializers.Serializer):
    active = serializers.BooleanField()
    tier = serializers.CharField(allow_null=True)
    expiresAt = serializers.DateTimeField(allow_null=True)


class DailyFreeSerializer(serializers.Serializer):
    quota = serializers.IntegerField()
    used = serializers.IntegerField(help_text="settled today")
    held = serializers.IntegerField(help_text="reserved by generations in progress")
    remaining = serializers.IntegerField(help_text="quota − used − held")
    resetsAt = serializers.DateTimeField(help_text="next midnight in BILLING_TIMEZONE")


class BalanceSerializer(serializers.Serializer):
    paidBalance = serializers.IntegerField(help_text="settled paid balance (Σ ledger)")
    paidHeld = serializers.IntegerField(help_text="paid characters reserved by generations in progress")
    available = serializers.IntegerField(help_text="paidBalance − paidHeld")
    dailyFree = DailyFreeSerializer()
    membership = MembershipSummarySerializer()


class BalanceView(APIView):
    """The caller's paid balance, today's free quota and membership."""

    @extend_schema(responses=BalanceSerializer)
    def get(self, request: Request) -> Response:
        return Response(BalanceSerializer(selectors.balance_get(user=request.user).as_api()).data)


class LedgerEntrySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    amount = serializers.IntegerField()
    balanceAfter = serializers.IntegerField(source="balance_after")
    generationId = serializers.SerializerMethodField()
    note = serializers.CharField()
    createdAt = serializers.DateTimeField(source="created_at")

    def get_generationId(self, obj: LedgerEntry) -> str | None:
        return obj.generation_id or None


class LedgerQuerySerializer(serializers.Serializer):
    kind = serializers.ChoiceField(choices=LedgerEntry.Kind.choices, required=False)


class LedgerView(APIView):
    """Every change of the caller's paid balance, newest first (paginated)."""

    @extend_schema(
        parameters=[OpenApiParameter("kind", str, enum=LedgerEntry.Kind.values)],
        responses=LedgerEntrySerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = LedgerQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = selectors.ledger_list(user=request.user, kind=query.validated_data.get("kind"))
        paginator = PagePagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(LedgerEntrySerializer(page, many=True).data)


# Dates outside this range answer 400 (the date arithmetic of a range would overflow at the ends).
USAGE_FIRST_DAY = date(2000, 1, 1)
USAGE_LAST_DAY = date(2999, 12, 31)


class UsageQuerySerializer(serializers.Serializer):
    """`from` / `to` (inclusive billing days); `from` is a Python keyword, hence `get_fields`."""

    def get_fields(self) -> dict[str, serializers.Field]:
        return {"from": serializers.DateField(required=False), "to": serializers.DateField(required=False)}

    def _in_range(self, name: str, value: date | None) -> None:
        if value is not None and not USAGE_FIRST_DAY <= value <= USAGE_LAST_DAY:
            raise serializers.ValidationError(
                {
                    name: [
                        _("Use a date from %(first)s to %(last)s.") % {"first": USAGE_FIRST_DAY, "last": USAGE_LAST_DAY}
                    ]
                }
            )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        self._in_range("from", attrs.get("from"))
        self._in_range("to", attrs.get("to"))
        today = selectors.billing_day()
        end = attrs.get("to")
        start = attrs.get("from")
        if end is None:
            end = today if start is None else max(start, today)
        if start is None:
            start = end - timedelta(days=USAGE_DEFAULT_DAYS - 1)
        if start > end:
            raise serializers.ValidationError({"from": [_("“from” must not be after “to”.")]})
        if (end - start).days + 1 > USAGE_MAX_DAYS:
            raise serializers.ValidationError(
                {"to": [_("The range can span at most %(max)s days.") % {"max": USAGE_MAX_DAYS}]}
            )
        return {"from": start, "to": end}


# What one generation cost: the fields of `Consumption.as_api()` (the writing API's `consumption`).
# No docstring: drf-spectacular would publish it as the component's description.
class ConsumptionSerializer(serializers.Serializer):
    totalCost = serializers.IntegerField()
    inputCost = serializers.IntegerField()
    outputCost = serializers.IntegerField()
    usedDailyFree = serializers.IntegerField()
    usedPaid = serializers.IntegerField()
    memberBenefitApplied = serializers.BooleanField()
    stoppedByBalance = serializers.BooleanField(
        help_text="The output was cut where the user's characters ran out (finishReason `length`); the "
        "charge is exactly what was delivered."
    )


# The consumption fields summed over the range, without the flags (`memberBenefitApplied`,
# `stoppedByBalance`: not sums), then the counts.
class BillingUsageTotalsSerializer(ConsumptionSerializer):
    memberBenefitApplied = None  # type: ignore[assignment]  # DRF's documented way to drop an inherited field
    stoppedByBalance = None  # type: ignore[assignment]
    generations = serializers.IntegerField()
    inputChars = serializers.IntegerField()
    outputChars = serializers.IntegerField()


# One day's totals, its date first (declared fields would come after the inherited ones).
class BillingUsageDaySerializer(BillingUsageTotalsSerializer):
    def get_fields(self) -> dict[str, serializers.Field]:
        return {"date": serializers.DateField(), **super().get_fields()}


class BillingUsageSerializer(serializers.Serializer):
    def get_fields(self) -> dict[str, serializers.Field]:
        return {
            "from": serializers.DateField(),
            "to": serializers.DateField(),
            "timezone": serializers.CharField(),
            "days": BillingUsageDaySerializer(many=True),
            "totals": BillingUsageTotalsSerializer(),
        }


class UsageView(APIView):
    """Per-day totals of the caller's charges (default: the last 30 days; at most 366 days)."""

    @extend_schema(
        parameters=[
            OpenApiParameter("from", OpenApiTypes.DATE, description="first day (YYYY-MM-DD), inclusive"),
            OpenApiParameter("to", OpenApiTypes.DATE, description="last day (YYYY-MM-DD), inclusive; default today"),
        ],
        responses=BillingUsageSerializer,
    )
    def get(self, request: Request) -> Response:
        query = UsageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        usage = selectors.usage_by_day(
            user=request.user, start=query.validated_data["from"], end=query.validated_data["to"]
        )
        return Response(usage)


class RedeemView(APIView):
    """Redeem a code once: credits its characters (ledger entry `redeem`) and/or membership days."""

    throttle_classes = (UserRateThrottle, ScopedRateThrottle)
    throttle_scope = "redeem"

    class RedeemInputSerializer(serializers.Serializer):
        code = serializers.CharField(max_length=64)

    class RedeemOutputSerializer(serializers.Serializer):
        amount = serializers.IntegerField(help_text="characters credited")
        memberDays = serializers.IntegerField(help_text="membership days added")
        paidBalance = serializers.IntegerField()
        available = serializers.IntegerField()
        membership = MembershipSummarySerializer()

    @extend_schema(request=RedeemInputSerializer, responses=RedeemOutputSerializer)
    def post(self, request: Request) -> Response:
        data = self.RedeemInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        code = services.code_redeem(user=request.user, code=data.validated_data["code"])
        balance = selectors.balance_get(user=request.user)
        body = {
            "amount": code.amount,
            "memberDays": code.member_days,
            "paidBalance": balance.paid_balance,
            "available": balance.available,
            "membership": balance.membership.as_api(),
        }
        return Response(self.RedeemOutputSerializer(body).data)
