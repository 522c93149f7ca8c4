from __future__ import annotations

from typing import Any

from django.contrib.auth import authenticate
from django.shortcuts import get_object_or_404
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts import selectors, services
from apps.accounts.models import ApiToken
from apps.billing.api import MembershipSummarySerializer
from apps.billing.selectors import membership_current
from apps.core.api.pagination import PagePagination
from apps.core.api.throttling import ScopedRateThrottle
from apps.core.api.views import request_user
from apps.core.errors import ApplicationError


class TokenOutputSerializer(serializers.Serializer):
    tokenId = serializers.IntegerField(source="id")
    name = serializers.CharField()
    prefix = serializers.CharField()
    createdAt = serializers.DateTimeField(source="created_at")
    expiresAt = serializers.DateTimeField(source="expires_at", allow_null=True)
    lastUsedAt = serializers.DateTimeField(source="last_used_at", allow_null=True)
    revokedAt = serializers.DateTimeField(source="revoked_at", allow_null=True)
    active = serializers.BooleanField(source="is_active")
    scope = serializers.CharField()


class TokenCreateView(APIView):
    """Exchange a username and password for a bearer token (shown once)."""

    permission_classes = (AllowAny,)
    authentication_classes = ()
    throttle_classes = (ScopedRateThrottle,)
    throttle_scope = "auth"

    class InputSerializer(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=256, trim_whitespace=False)
        name = serializers.CharField(max_length=100, required=False, allow_blank=True, default="")
        expiresInDays = serializers.IntegerField(
            required=False, allow_null=True, min_value=1, max_value=3650, default=None
        )
        scope = serializers.ChoiceField(
            choices=ApiToken.Scope.values,
            required=False,
            default=ApiToken.Scope.ALL,
            help_text="`openai`: the token works only on the OpenAI-compatible API (/v1), e.g. for SillyTavern.",
        )

    class OutputSerializer(serializers.Serializer):
        token = serializers.CharField()
        tokenId = serializers.IntegerField()
        name = serializers.CharField()
        scope = serializers.CharField()
        createdAt = serializers.DateTimeField()
        expiresAt = serializers.DateTimeField(allow_null=True)

    @extend_schema(request=InputSerializer, responses={201: OutputSerializer}, auth=[])
    def post(self, request: Request) -> Response:
        data = self.InputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request, username=data.validated_data["username"], password=data.validated_data["password"])
        if user is None:
            raise ApplicationError(_("Incorrect username or password."), status_code=401, code="invalid_credentials")
        issued = services.token_create(
            user=user,
            name=data.validated_data["name"],
            expires_in_days=data.validated_data["expiresInDays"],
            scope=data.validated_data["scope"],
        )
        body = {
            "token": issued.token,
            "tokenId": issued.record.pk,
            "name": issued.record.name,
            "scope": issued.record.scope,
            "createdAt": issued.record.created_at,
            "expiresAt": issued.record.expires_at,
        }
        return Response(self.OutputSerializer(body).data, status=status.HTTP_201_CREATED)


class TokenListView(APIView):
    """The caller's tokens (never the token values)."""

    @extend_schema(responses=TokenOutputSerializer(many=True))
    def get(self, request: Request) -> Response:
        paginator = PagePagination()
        page = paginator.paginate_queryset(selectors.token_list(user=request_user(request)), request, view=self)
        return paginator.get_paginated_response(TokenOutputSerializer(page, many=True).data)


class TokenRevokeView(APIView):
    @extend_schema(responses={204: None})
    def delete(self, request: Request, token_id: int) -> Response:
        token = get_object_or_404(ApiToken, pk=token_id, user=request.user)
        services.token_revoke(token=token)
        return Response(status=status.HTTP_204_NO_CONTENT)


class MeView(APIView):
    class OutputSerializer(serializers.Serializer):
        id = serializers.IntegerField()
        username = serializers.CharField()
        permissions = serializers.ListField(child=serializers.CharField())
        membership = serializers.DictField(allow_null=True)

    @extend_schema(responses=OutputSerializer)
    def get(self, request: Request) -> Response:
        user = request_user(request)
        body: dict[str, Any] = {
            "id": user.pk,
            "username": user.get_username(),
            "permissions": selectors.user_permission_strings(user=user),
            "membership": MembershipSummarySerializer(membership_current(user=user).as_api()).data,
        }
        return Response(self.OutputSerializer(body).data)
