from __future__ import annotations

from typing import Any

from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api.fields import WholeSerializer
from apps.core.api.pagination import PagePagination
from apps.novels import selectors, services
from apps.novels.models import Novel


class NovelOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")


class NovelInputSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=20000, required=False, allow_blank=True, default="")


SEARCH_PARAM = OpenApiParameter("search", str, description="Case-insensitive substring of the title or name.")


class NovelListCreateView(APIView):
    @extend_schema(parameters=[SEARCH_PARAM], responses=NovelOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = PagePagination()
        qs = selectors.novel_list(user=request.user, search=request.query_params.get("search"))
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(NovelOutputSerializer(page, many=True).data)

    @extend_schema(request=NovelInputSerializer, responses={201: NovelOutputSerializer})
    def post(self, request: Request) -> Response:
        data = NovelInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        novel = services.novel_create(owner=request.user, **data.validated_data)
        return Response(NovelOutputSerializer(novel).data, status=status.HTTP_201_CREATED)


class NovelDetailView(APIView):
    def _get(self, request: Request, novel_id: int) -> Novel:
        novel = selectors.novel_get_owned(user=request.user, pk=novel_id)
        if novel is None:
            raise Http404
        return novel

    @extend_schema(responses=NovelOutputSerializer)
    def get(self, request: Request, novel_id: int) -> Response:
        return Response(NovelOutputSerializer(self._get(request, novel_id)).data)

    @extend_schema(request=NovelInputSerializer, responses=NovelOutputSerializer)
    def put(self, request: Request, novel_id: int) -> Response:
        return self._update(request, novel_id, partial=False)

    @extend_schema(request=NovelInputSerializer, responses=NovelOutputSerializer)
    def patch(self, request: Request, novel_id: int) -> Response:
        return self._update(request, novel_id, partial=True)

    def _update(self, request: Request, novel_id: int, *, partial: bool) -> Response:
        novel = self._get(request, novel_id)
        data = NovelInputSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        novel = services.novel_update(novel=novel, **data.validated_data)
        return Response(NovelOutputSerializer(novel).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, novel_id: int) -> Response:
        services.novel_delete(novel=self._get(request, novel_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


# --- characters and worldviews share one shape: {id, novelId, name, fields: [{key, value}]} ----------


class FieldSerializer(WholeSerializer):
    key = serializers.CharField(max_length=200)
    value = serializers.CharField(max_length=20000, allow_blank=True, default="")


class EntityInputSerializer(serializers.Serializer):
    novelId = serializers.IntegerField(min_value=1)
    name = serializers.CharField(max_length=200)
    # DRF stubs: many=True also takes ListSerializer's max_length; a field named `fields` shadows Serializer.fields.
    fields = FieldSerializer(many=True, required=False, default=list, max_length=200)  # type: ignore[call-arg,assignment]


class EntityOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    novelId = serializers.IntegerField(source="novel_id")
    name = serializers.CharField()
    # a declared field named `fields` shadows Serializer.fields (the metaclass collects it).
    fields = FieldSerializer(many=True, source="fields.all")  # type: ignore[assignment]
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")


class EntityQuerySerializer(serializers.Serializer):
    novelId = serializers.IntegerField(min_value=1, required=False)
    search = serializers.CharField(max_length=200, required=False, allow_blank=True)


def entity_views(
    model: Any, *, input_serializer: type[serializers.Serializer] = EntityInputSerializer, output_serializer: Any = None
) -> tuple[type[APIView], type[APIView]]:
    """List/create and detail views for a novel entity model (characters, worldviews)."""
    output_cls = output_serializer or EntityOutputSerializer
    novel_param = OpenApiParameter("novelId", int, description="Only entities of this novel.")

    class ListCreate(APIView):
        @extend_schema(parameters=[novel_param, SEARCH_PARAM], responses=output_cls(many=True))
        def get(self, request: Request) -> Response:
            query = EntityQuerySerializer(data=request.query_params)
            query.is_valid(raise_exception=True)
            qs = selectors.entity_list(
                model=model,
                user=request.user,
                novel_id=query.validated_data.get("novelId"),
                search=query.validated_data.get("search"),
            )
            paginator = PagePagination()
            page = paginator.paginate_queryset(qs, request, view=self)
            return paginator.get_paginated_response(output_cls(page, many=True).data)

        @extend_schema(request=input_serializer, responses={201: output_cls})
        def post(self, request: Request) -> Response:
            data = input_serializer(data=request.data)
            data.is_valid(raise_exception=True)
            values = data.validated_data
            entity = services.entity_create(
                model=model, user=request.user, novel_id=values["novelId"], name=values["name"], fields=values["fields"]
            )
            return Response(output_cls(entity).data, status=status.HTTP_201_CREATED)

    class Detail(APIView):
        def _get(self, request: Request, pk: int) -> Any:
            entity = selectors.entity_get_owned(model=model, user=request.user, pk=pk)
            if entity is None:
                raise Http404
            return entity

        @extend_schema(responses=output_cls)
        def get(self, request: Request, pk: int) -> Response:
            return Response(output_cls(self._get(request, pk)).data)

        @extend_schema(request=input_serializer, responses=output_cls)
        def put(self, request: Request, pk: int) -> Response:
            return self._update(request, pk, partial=False)

        @extend_schema(request=input_serializer, responses=output_cls)
        def patch(self, request: Request, pk: int) -> Response:
            return self._update(request, pk, partial=True)

        def _update(self, request: Request, pk: int, *, partial: bool) -> Response:
            entity = self._get(request, pk)
            data = input_serializer(data=request.data, partial=partial)
            data.is_valid(raise_exception=True)
            values = data.validated_data
            services.entity_update(
                entity=entity,
                user=request.user,
                name=values.get("name"),
                novel_id=values.get("novelId"),
                fields=values.get("fields") if (not partial or "fields" in request.data) else None,
            )
            return Response(output_cls(self._get(request, pk)).data)

        @extend_schema(responses={204: None})
        def delete(self, request: Request, pk: int) -> Response:
            self._get(request, pk).delete()
            return Response(status=status.HTTP_204_NO_CONTENT)

    name = model.__name__
    ListCreate.__name__ = f"{name}ListCreateView"
    Detail.__name__ = f"{name}DetailView"
    return ListCreate, Detail
