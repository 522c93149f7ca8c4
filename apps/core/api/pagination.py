"""`?page=1&pageSize=20` → `{"items": [...], "total": N, "page": 1, "pageSize": 20}`."""

from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from rest_framework import serializers
from rest_framework.pagination import BasePagination
from rest_framework.response import Response

MAX_PAGE_SIZE = 100
MAX_PAGE = 1_000_000  # beyond: 400 (an offset past a 64-bit integer used to be a 500)


class PageQuerySerializer(serializers.Serializer):
    page = serializers.IntegerField(min_value=1, max_value=MAX_PAGE, default=1)
    pageSize = serializers.IntegerField(min_value=1, max_value=MAX_PAGE_SIZE, default=20)


class PagePagination(BasePagination):
    page_size = 20

    def paginate_queryset(self, queryset: Any, request: Any, view: Any = None) -> list[Any]:
        query = PageQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        self.page = query.validated_data["page"]
        self.page_size = query.validated_data["pageSize"]
        self.total = (
            queryset.count() if hasattr(queryset, "count") and not isinstance(queryset, list) else len(queryset)
        )
        start = (self.page - 1) * self.page_size
        return list(queryset[start : start + self.page_size])

    def get_paginated_response(self, data: Any) -> Response:
        return Response({"items": data, "total": self.total, "page": self.page, "pageSize": self.page_size})

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["items", "total", "page", "pageSize"],
            "properties": {
                "items": schema,
                "total": {"type": "integer", "example": 42},
                "page": {"type": "integer", "example": 1},
                "pageSize": {"type": "integer", "example": 20},
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return [
            {
                "name": "page",
                "required": False,
                "in": "query",
                "description": _("Page number (from 1)."),
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
            },
            {
                "name": "pageSize",
                "required": False,
                "in": "query",
                "description": _("Items per page (max 100)."),
                "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
            },
        ]
