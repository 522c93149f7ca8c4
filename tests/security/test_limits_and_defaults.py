"""Issue 20, items 9, 10, 13, 14: rate limits behind proxies, the admin login, token defaults and caps,
boundary query values, revocation across caches, and the stream flag of the record."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.accounts.services import token_authenticate, token_create, token_revoke
from apps.core.api.throttling import client_ip

pytestmark = pytest.mark.django_db


class _Request:
    def __init__(self, remote: str, forwarded: str = "") -> None:
        self.META = {"REMOTE_ADDR": remote}
        if forwarded:
            self.META["HTTP_X_FORWARDED_FOR"] = forwarded


@pytest.mark.parametrize(
    ("proxies", "remote", "forwarded", "expected"),
    [
        (0, "10.0.0.1", "1.2.3.4", "10.0.0.1"),  # no trusted proxy: the header is the client's claim
        (1, "10.0.0.1", "1.2.3.4", "1.2.3.4"),
        (1, "10.0.0.1", "6.6.6.6, 1.2.3.4", "1.2.3.4"),  # a forged entry on the left is ignored
        (2, "10.0.0.1", "6.6.6.6, 1.2.3.4, 10.0.0.2", "1.2.3.4"),
        (3, "10.0.0.1", "1.2.3.4", "1.2.3.4"),  # fewer hops than proxies: the leftmost
        (1, "10.0.0.1", "", "10.0.0.1"),
    ],
)
def test_the_client_address_behind_trusted_proxies(settings, proxies, remote, forwarded, expected):
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "NUM_PROXIES": proxies}
    assert client_ip(_Request(remote, forwarded)) == expected


def test_logins_behind_a_proxy_are_limited_per_client_not_for_everyone(anon, user, settings):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "NUM_PROXIES": 1,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "auth": "3/min"},
    }
    body = {"username": "alice", "password": "wrong"}
    for _ in range(3):
        assert anon.post("/api/v1/auth/token", body, format="json", HTTP_X_FORWARDED_FOR="6.6.6.6").status_code == 401
    assert anon.post("/api/v1/auth/token", body, format="json", HTTP_X_FORWARDED_FOR="6.6.6.6").status_code == 429
    # another client behind the same proxy is not locked out
    good = {"username": "alice", "password": "secret-pass-123"}
    assert anon.post("/api/v1/auth/token", good, format="json", HTTP_X_FORWARDED_FOR="1.2.3.4").status_code == 201


def test_the_admin_login_is_throttled(settings, make_user):
    settings.REST_FRAMEWORK = {
        **settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "admin_login": "3/min"},
    }
    make_user("root", is_staff=True)
    browser = Client()
    answers = [
        browser.post("/admin/login/", {"username": "root", "password": f"guess{i}"}).status_code for i in range(4)
    ]
    assert answers == [200, 200, 200, 429]
    assert browser.get("/admin/login/").status_code == 200  # the page itself is not limited


def test_tokens_expire_by_default_and_a_user_holds_a_bounded_number(user, settings):
    settings.API_TOKEN_MAX_PER_USER = 3
    issued = [token_create(user=user) for _ in range(3)]
    assert all(t.record.expires_at - t.record.created_at == timedelta(days=90) for t in issued)
    with pytest.raises(Exception) as refused:
        token_create(user=user)
    assert getattr(refused.value, "status_code", None) == 409
    token_revoke(token=issued[0].record)
    ApiToken.objects.filter(pk=issued[1].record.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert token_create(user=user, expires_in_days=0).record.expires_at is None  # 0: never, when asked


def test_a_revoked_token_is_not_re_cached_by_a_racing_request(user):
    issued = token_create(user=user)
    stale = ApiToken.objects.select_related("user").get(pk=issued.record.pk)  # read before the revocation
    token_revoke(token=issued.record)
    # a request that read the row before the revocation writes it to the cache afterwards
    from django.core.cache import cache

    from apps.accounts.services import _record_to_cache, _token_cache_key

    cache.set(_token_cache_key(stale.prefix), _record_to_cache(stale), 30)
    assert token_authenticate(token=issued.token) is None


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/novels?page=99999999999999999999",
        "/api/v1/generations?page=9223372036854775808",
        "/api/v1/billing/usage?to=9999-12-31",
        "/api/v1/billing/usage?from=0001-01-01",
    ],
)
def test_boundary_query_values_are_400_not_500(api, path):
    response = api.get(path)
    assert response.status_code == 400, response.content
    assert response.json()["statusCode"] == 400
