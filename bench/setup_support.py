"""Helpers for the benchmarks' set-up scripts (run in `manage.py shell` from the project's root)."""

from __future__ import annotations

from typing import Any

from apps.accounts.models import ApiToken
from apps.accounts.services import token_create, token_revoke


def fresh_token(user: Any) -> str:
    """A new API token for `user`, the earlier runs' tokens revoked first (a user may hold 50 at most)."""
    for token in ApiToken.objects.filter(user=user, revoked_at=None):
        token_revoke(token=token)
    return token_create(user=user).token
