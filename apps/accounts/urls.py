from django.urls import path

from apps.accounts import api

urlpatterns = [
    path("auth/token", api.TokenCreateView.as_view(), name="auth-token"),
    path("auth/tokens", api.TokenListView.as_view(), name="auth-tokens"),
    path("auth/tokens/<int:token_id>", api.TokenRevokeView.as_view(), name="auth-token-revoke"),
    path("auth/me", api.MeView.as_view(), name="auth-me"),
]
