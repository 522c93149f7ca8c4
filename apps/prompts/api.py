from __future__ import annotations

from typing import Any

from django.http import Http404
from django.utils.translation import gettext as _
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.core.api.fields import WholeSerializer
from apps.core.api.pagination import PagePagination
from apps.prompts import selectors, services
from apps.prompts.models import Prompt, PromptContent

MAX_CONTENTS = 500
MAX_CONTENT_CHARS = 200_000


class ContentSerializer(WholeSerializer):
    order = serializers.IntegerField(min_value=-1_000_000, max_value=1_000_000)
    type = serializers.ChoiceField(choices=PromptContent.Type.choices)
    role = serializers.ChoiceField(choices=PromptContent.Role.choices, default=PromptContent.Role.SYSTEM)
    content = serializers.CharField(max_length=MAX_CONTENT_CHARS, allow_blank=True, required=False, default="")
    referenceId = serializers.IntegerField(min_value=1, required=False, allow_null=True, default=None)
    name = serializers.CharField(max_length=200, allow_blank=True, required=False, default="")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs["type"] == PromptContent.Type.TEXT:
            if not attrs.get("content", "").strip():
                raise serializers.ValidationError({"content": [_("A text content needs text.")]})
        elif attrs.get("referenceId") is None:
            raise serializers.ValidationError({"referenceId": [_("A reference needs a referenceId.")]})
        return attrs


class PromptInputSerializer(serializers.Serializer):
    title = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=20000, allow_blank=True, required=False, default="")
    isPublic = serializers.BooleanField(required=False, default=False)
    # DRF stubs: many=True also takes ListSerializer's max_length.
    contents = ContentSerializer(many=True, required=False, default=list, max_length=MAX_CONTENTS)  # type: ignore[call-arg]

    def validate_contents(self, contents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        seen: dict[int, int] = {}
        errors: dict[str, dict[str, list[str]]] = {}
        for index, content in enumerate(contents):
            if content["order"] in seen:
                errors[str(index)] = {"order": [_("Order %(order)s is used twice.") % {"order": content["order"]}]}
            seen.setdefault(content["order"], index)
        if errors:
            raise serializers.ValidationError(errors)
        return contents

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if "contents" in attrs:
            attrs["contents"] = [
                services.ContentSpec(
                    order=c["order"],
                    type=c["type"],
                    role=c.get("role") or PromptContent.Role.SYSTEM,
                    content=c.get("content") or "",
                    reference_id=c.get("referenceId"),
                    name=c.get("name") or "",
                )
                for c in attrs["contents"]
            ]
        return attrs


class ContentOutputSerializer(serializers.Serializer):
    order = serializers.IntegerField()
    type = serializers.CharField()
    role = serializers.CharField()
    content = serializers.CharField()
    referenceId = serializers.IntegerField(source="reference_id", allow_null=True)
    name = serializers.CharField()


class PromptOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    title = serializers.CharField()
    description = serializers.CharField()
    isPublic = serializers.BooleanField(source="is_public")
    authorId = serializers.IntegerField(source="author_id")
    contents = ContentOutputSerializer(many=True, source="contents.all")
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")


class PromptQuerySerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=selectors.SCOPES, default="all")
    search = serializers.CharField(max_length=200, required=False, allow_blank=True)


class PromptListCreateView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter(
                "scope",
                str,
                enum=list(selectors.SCOPES),
                description="mine: my prompts; public: public prompts; all (default): both.",
            ),
            OpenApiParameter("search", str, description="Case-insensitive substring of the title."),
        ],
        responses=PromptOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = PromptQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = selectors.prompt_list(user=request.user, **query.validated_data)
        paginator = PagePagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(PromptOutputSerializer(page, many=True).data)

    @extend_schema(request=PromptInputSerializer, responses={201: PromptOutputSerializer})
    def post(self, request: Request) -> Response:
        data = PromptInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        prompt = services.prompt_create(
            author=request.user,
            title=values["title"],
            description=values["description"],
            is_public=values["isPublic"],
            contents=values["contents"],
        )
        return Response(PromptOutputSerializer(_reload(prompt.pk, request.user)).data, status=status.HTTP_201_CREATED)


def _reload(prompt_id: int, user: Any) -> Prompt:
    prompt = selectors.prompt_get_visible(user=user, prompt_id=prompt_id)
    if prompt is None:
        raise Http404
    return prompt


class PromptDetailView(APIView):
    def _writable(self, request: Request, prompt_id: int) -> Prompt:
        prompt = _reload(prompt_id, request.user)
        if prompt.author_id != request.user.pk:
            raise PermissionDenied(_("Only the author can change this prompt."))
        return prompt

    @extend_schema(responses=PromptOutputSerializer)
    def get(self, request: Request, prompt_id: int) -> Response:
        return Response(PromptOutputSerializer(_reload(prompt_id, request.user)).data)

    @extend_schema(request=PromptInputSerializer, responses=PromptOutputSerializer)
    def put(self, request: Request, prompt_id: int) -> Response:
        return self._update(request, prompt_id, partial=False)

    @extend_schema(request=PromptInputSerializer, responses=PromptOutputSerializer)
    def patch(self, request: Request, prompt_id: int) -> Response:
        return self._update(request, prompt_id, partial=True)

    def _update(self, request: Request, prompt_id: int, *, partial: bool) -> Response:
        prompt = self._writable(request, prompt_id)
        data = PromptInputSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        sent = request.data if isinstance(request.data, dict) else {}
        services.prompt_update(
            prompt=prompt,
            title=values.get("title"),
            description=values.get("description"),
            is_public=values.get("isPublic"),
            contents=values.get("contents") if (not partial or "contents" in sent) else None,
        )
        return Response(PromptOutputSerializer(_reload(prompt_id, request.user)).data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, prompt_id: int) -> Response:
        services.prompt_delete(prompt=self._writable(request, prompt_id))
        return Response(status=status.HTTP_204_NO_CONTENT)
