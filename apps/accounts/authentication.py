from __future__ import annotations

from typing import Any

from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from apps.accounts.models import ApiToken
from apps.accounts.permissions import permission_cache_key
from apps.accounts.services import split_token, token_authenticate, token_cache_keys


class BearerTokenAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <token>`; missing → anonymous (then 401), invalid/revoked/expired → 401.
    Only tokens of scope `all`: a token limited to the OpenAI-compatible API is refused here."""

    keyword = "bearer"
    scopes: frozenset[str] = frozenset({ApiToken.Scope.ALL})

    def presented_token(self, request: Any) -> str | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        keyword, _sep, token = header.strip().partition(" ")
        if keyword.lower() != self.keyword:
            return None
        token = token.strip()
        if not token:
            raise exceptions.AuthenticationFailed(_("Invalid token header. No credentials provided."))
        return token

    def authenticate(self, request: Any) -> tuple[Any, Any] | None:
        token = self.presented_token(request)
        if token is None:
            return None
        record = token_authenticate(token=token)
        if record is None:
            raise exceptions.AuthenticationFailed(_("Invalid, revoked or expired token."))
        if record.scope not in self.scopes:
            raise exceptions.AuthenticationFailed(
                _("This token may only be used with the OpenAI-compatible API (/v1).")
            )
        return record.user, record

    def authenticate_header(self, request: Any) -> str:
        return 'Bearer realm="api"'


class OpenAIKeyAuthentication(BearerTokenAuthentication):
    """The OpenAI-compatible API: `Authorization: Bearer <token>` or `x-api-key: <token>` (clients built
    for Anthropic-style keys send that), tokens of any scope."""

    scopes = frozenset({ApiToken.Scope.ALL, ApiToken.Scope.OPENAI})

    def presented_token(self, request: Any) -> str | None:
        token = super().presented_token(request)
        if token is None:
            token = request.META.get("HTTP_X_API_KEY", "").strip() or None
        return token


def auth_cache_keys(request: Any) -> list[str]:
    """The cache entries that authenticating this DRF request with a presented API token, and checking
    its generation permissions, will read — to be fetched in one round trip before they are read
    (`apps.core.cache.prefetched`). None for a request without a well-formed token."""
    for authenticator in request.authenticators:
        if not isinstance(authenticator, BearerTokenAuthentication):
            continue
        try:
            token = authenticator.presented_token(request)
        except exceptions.AuthenticationFailed:  # authentication will say so
            return []
        if token is None:
            continue
        keys = token_cache_keys(token)
        return [*keys, permission_cache_key(token_prefix=split_token(token))] if keys else []
    return []


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = "apps.accounts.authentication.BearerTokenAuthentication"
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer"}


class OpenAIKeyScheme(OpenApiAuthenticationExtension):
    target_class = "apps.accounts.authentication.OpenAIKeyAuthentication"
    name = "openaiBearerAuth"  # the same tokens (of any scope); `x-api-key: <token>` works too

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer"}
