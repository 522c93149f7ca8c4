"""Characters over REST: writing mode's `{id, novelId, name, fields}` plus the SillyTavern card
(`card`, `avatarUrl`), card import/export and the avatar."""

from __future__ import annotations

from typing import Any, cast

from django.http import Http404, HttpResponse
from django.urls import reverse
from django.utils.http import content_disposition_header
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.cards import dumps_card
from apps.cards.messages import card_limits, card_too_large_error
from apps.characters import selectors, services
from apps.characters.models import Character
from apps.core.api.pagination import PagePagination
from apps.core.api.views import OwnFormatParamMixin, filename_stem
from apps.novels.api import SEARCH_PARAM, EntityQuerySerializer, FieldSerializer


class CharacterInputSerializer(serializers.Serializer):
    novelId = serializers.IntegerField(min_value=1)
    name = serializers.CharField(max_length=200, required=False)
    # DRF stubs: many=True also takes ListSerializer's max_length; a field named `fields` shadows Serializer.fields.
    fields = FieldSerializer(many=True, required=False, max_length=200)  # type: ignore[call-arg,assignment]
    card = serializers.JSONField(required=False, allow_null=True, help_text="A V1/V2/V3 card document.")


class CharacterOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    novelId = serializers.IntegerField(source="novel_id")
    name = serializers.CharField()
    # a declared field named `fields` shadows Serializer.fields (the metaclass collects it).
    fields = FieldSerializer(many=True, source="fields.all")  # type: ignore[assignment]
    card = serializers.SerializerMethodField()
    avatarUrl = serializers.SerializerMethodField()
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")

    def get_card(self, obj: Character) -> dict[str, Any] | None:
        return obj.card or None

    def get_avatarUrl(self, obj: Character) -> str | None:
        if not obj.has_avatar:
            return None
        return reverse("character-avatar", kwargs={"pk": obj.pk})


class ImportInputSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    novelId = serializers.IntegerField(min_value=1, required=False)


class ExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=["json", "png"], default="json")
    spec = serializers.ChoiceField(choices=["v2", "v3"], default="v3")


NOVEL_PARAM = OpenApiParameter("novelId", int, description="Only characters of this novel.")


def _output(character: Character) -> dict[str, Any]:
    return CharacterOutputSerializer(character).data


class CharacterListCreateView(APIView):
    @extend_schema(parameters=[NOVEL_PARAM, SEARCH_PARAM], responses=CharacterOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        query = EntityQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = selectors.character_list(
            user=request.user, novel_id=query.validated_data.get("novelId"), search=query.validated_data.get("search")
        )
        paginator = PagePagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(CharacterOutputSerializer(page, many=True).data)

    @extend_schema(request=CharacterInputSerializer, responses={201: CharacterOutputSerializer})
    def post(self, request: Request) -> Response:
        data = CharacterInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        character = services.character_create(
            user=request.user,
            novel_id=values["novelId"],
            name=values.get("name"),
            fields=values.get("fields"),
            card=values.get("card"),
        )
        created = cast(Character, selectors.character_get_owned(user=request.user, pk=character.pk))  # just created
        return Response(_output(created), status=201)


class CharacterDetailView(APIView):
    def _get(self, request: Request, pk: int) -> Character:
        character = selectors.character_get_owned(user=request.user, pk=pk)
        if character is None:
            raise Http404
        return character

    @extend_schema(responses=CharacterOutputSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(_output(self._get(request, pk)))

    @extend_schema(request=CharacterInputSerializer, responses=CharacterOutputSerializer)
    def put(self, request: Request, pk: int) -> Response:
        return self._update(request, pk, partial=False)

    @extend_schema(request=CharacterInputSerializer, responses=CharacterOutputSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        return self._update(request, pk, partial=True)

    def _update(self, request: Request, pk: int, *, partial: bool) -> Response:
        character = self._get(request, pk)
        data = CharacterInputSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        services.character_update(
            character=character,
            user=request.user,
            partial=partial,
            name=values.get("name"),
            novel_id=values.get("novelId"),
            fields=values.get("fields", services.UNSET),
            card=values.get("card", services.UNSET),
        )
        return Response(_output(self._get(request, pk)))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.character_delete(character=self._get(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


class CharacterImportView(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": ImportInputSerializer}, responses={201: CharacterOutputSerializer})
    def post(self, request: Request) -> Response:
        data = ImportInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > card_limits().max_file_bytes:  # refuse before reading it into memory
            raise card_too_large_error()
        character = services.character_import(
            user=request.user,
            data=upload.read(),
            filename=upload.name,
            content_type=getattr(upload, "content_type", None),
            novel_id=data.validated_data.get("novelId"),
        )
        created = cast(Character, selectors.character_get_owned(user=request.user, pk=character.pk))  # just created
        return Response(_output(created), status=201)


class CharacterExportView(OwnFormatParamMixin, APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("format", str, enum=["json", "png"], description="json (default) or png."),
            OpenApiParameter("spec", str, enum=["v2", "v3"], description="JSON only: v3 (default) or v2."),
        ],
        responses={(200, "application/json"): OpenApiTypes.OBJECT, (200, "image/png"): OpenApiTypes.BINARY},
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        query = ExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        character = selectors.character_get_owned(user=request.user, pk=pk, full=True)
        if character is None:
            raise Http404
        fmt, spec = query.validated_data["format"], query.validated_data["spec"]
        exported = selectors.character_export(character=character, fmt=fmt, spec=spec)
        stem = filename_stem(character.name)
        if isinstance(exported, bytes):
            response = HttpResponse(exported, content_type="image/png")
            filename = f"{stem}.png"
        else:
            body = dumps_card(exported).encode("utf-8", "replace")
            response = HttpResponse(body, content_type="application/json")
            filename = f"{stem}.json"
        response["Content-Disposition"] = content_disposition_header(True, filename)
        return response


class CharacterAvatarView(APIView):
    @extend_schema(responses={(200, "image/png"): OpenApiTypes.BINARY})
    def get(self, request: Request, pk: int) -> HttpResponse:
        found = selectors.character_avatar(user=request.user, character_id=pk)
        if found is None:
            raise Http404
        png, digest = found
        etag = f'"{digest}"'
        if etag in request.headers.get("If-None-Match", ""):
            response = HttpResponse(status=304)
        else:
            response = HttpResponse(png, content_type="image/png")
        response["ETag"] = etag
        response["Cache-Control"] = "private, max-age=3600"
        return response
