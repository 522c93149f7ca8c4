from __future__ import annotations

from zoneinfo import ZoneInfo

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api.fields import ScalarToString
from apps.macros.engine import MacroContext, expand
from apps.macros.limits import budget_check, request_budget, request_clock

MAX_TEXT = 200_000


class PreviewInputSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=MAX_TEXT, allow_blank=True, trim_whitespace=False)
    parameters = serializers.DictField(child=ScalarToString(), required=False, default=dict)
    user = serializers.CharField(max_length=200, required=False, allow_blank=True)
    char = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    seed = serializers.CharField(max_length=200, required=False, allow_blank=True)


class PreviewOutputSerializer(serializers.Serializer):
    result = serializers.CharField()


class MacroPreviewView(APIView):
    """Expand macros in `text` as generation would (free; variables are not persisted), within the
    macro budget of a request without a model (400 `macro_budget_exceeded` once it is spent)."""

    @extend_schema(request=PreviewInputSerializer, responses=PreviewOutputSerializer)
    def post(self, request: Request) -> Response:
        data = PreviewInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        ctx = MacroContext(
            parameters=values["parameters"],
            user=values.get("user") or request.user.get_username(),
            char=values["char"],
            now=request_clock(),
            tz=ZoneInfo(settings.BILLING_TIMEZONE),
            seed=values.get("seed") or None,
            budget=request_budget(),
        )
        result = expand(values["text"], ctx)
        budget_check(ctx.budget)
        return Response({"result": result})
