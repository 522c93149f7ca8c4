"""`GET /api/v1/models`: the models users can pick (enabled models on enabled connections).

Only public fields are exposed: never the connection, its base URL, the upstream model or keys."""

from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api.pagination import PagePagination
from apps.providers.models import AIModel
from apps.providers.selectors import models_visible


class ModelOutputSerializer(serializers.Serializer):
    modelId = serializers.CharField(source="model_id")
    displayName = serializers.SerializerMethodField()
    contextTokens = serializers.IntegerField(source="context_tokens")
    maxOutputTokens = serializers.IntegerField(source="max_output_tokens")
    inputRatio = serializers.DecimalField(source="input_ratio", max_digits=10, decimal_places=2, coerce_to_string=False)
    outputRatio = serializers.DecimalField(
        source="output_ratio", max_digits=10, decimal_places=2, coerce_to_string=False
    )
    isFree = serializers.BooleanField(source="is_free")
    isDefault = serializers.SerializerMethodField()

    def get_displayName(self, obj: AIModel) -> str:
        return obj.display_name or obj.model_id

    def get_isDefault(self, obj: AIModel) -> bool:
        return obj.model_id == settings.DEFAULT_MODEL_ID


class ModelPageSerializer(serializers.Serializer):
    items = ModelOutputSerializer(many=True)
    total = serializers.IntegerField()
    page = serializers.IntegerField()
    pageSize = serializers.IntegerField()


class ModelListView(APIView):
    """Models available for generation (`modelId` values), paginated."""

    @extend_schema(
        parameters=[
            OpenApiParameter("page", int, description="Page number (from 1)."),
            OpenApiParameter("pageSize", int, description="Items per page (1–100, default 20)."),
        ],
        responses=ModelPageSerializer,
    )
    def get(self, request: Request) -> Response:
        paginator = PagePagination()
        page = paginator.paginate_queryset(models_visible(), request, view=self)
        return paginator.get_paginated_response(ModelOutputSerializer(page, many=True).data)
