from datetime import timedelta

import pytest
from django.utils import timezone

from apps.accounts.models import ApiToken
from apps.accounts.services import token_create, token_digest

pytestmark = pytest.mark.django_db


def test_login_issues_token_shown_once_and_stored_hashed(anon, user):
    # when
    response = anon.post(
        "/api/v1/auth/token", {"username": "alice", "password": "secret-pass-123", "name": "cli"}, format="json"
    )
    # then
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"token", "tokenId", "name", "scope", "createdAt", "expiresAt"}
    assert body["scope"] == "all"
    token = body["token"]
    assert token.startswith("wst_") and body["name"] == "cli"
    record = ApiToken.objects.get(pk=body["tokenId"])
    assert (record.expires_at - record.created_at).days == 90  # API_TOKEN_DEFAULT_EXPIRY_DAYS
    assert record.digest == token_digest(token)
    assert token not in record.digest and token not in record.prefix
    assert not ApiToken.objects.filter(digest=token).exists()
    assert token.startswith(record.prefix)
    # the token is never listed again
    listing = anon.get("/api/v1/auth/tokens", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert listing.status_code == 200
    assert token not in listing.content.decode()
    assert listing.json()["items"][0]["prefix"] == record.prefix


def test_token_authenticates_and_records_last_used(anon, user):
    issued = token_create(user=user)
    assert issued.record.last_used_at is None
    response = anon.get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    assert response.status_code == 200
    assert response.json()["username"] == "alice"
    issued.record.refresh_from_db()
    assert issued.record.last_used_at is not None


def test_me_lists_default_role_permissions(api):
    body = api.get("/api/v1/auth/me").json()
    assert body["permissions"] == [
        "generation:writing:generate",
        "generation:roleplay:generate",
        "generation:chat:generate",
    ]
    assert body["membership"]["active"] is False


@pytest.mark.parametrize(
    ("password", "status"),
    [("wrong-password", 401), ("", 400)],
)
def test_wrong_password_is_refused_without_issuing(anon, user, password, status):
    response = anon.post("/api/v1/auth/token", {"username": "alice", "password": password}, format="json")
    assert response.status_code == status
    assert response.json()["statusCode"] == status
    assert ApiToken.objects.count() == 0


def test_unknown_user_is_401(anon, db):
    response = anon.post("/api/v1/auth/token", {"username": "nobody", "password": "x"}, format="json")
    assert response.status_code == 401
    assert response.json() == {"statusCode": 401, "message": "用户名或密码错误。", "error": "Unauthorized"}


def test_revoked_token_is_rejected(anon, user):
    issued = token_create(user=user)
    auth = {"HTTP_AUTHORIZATION": f"Bearer {issued.token}"}
    assert anon.get("/api/v1/auth/me", **auth).status_code == 200
    assert anon.delete(f"/api/v1/auth/tokens/{issued.record.pk}", **auth).status_code == 204
    response = anon.get("/api/v1/auth/me", **auth)
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert ApiToken.objects.get(pk=issued.record.pk).revoked_at is not None


def test_cannot_revoke_someone_elses_token(make_client, user, other_user):
    theirs = token_create(user=other_user)
    response = make_client(user).delete(f"/api/v1/auth/tokens/{theirs.record.pk}")
    assert response.status_code == 404
    theirs.record.refresh_from_db()
    assert theirs.record.revoked_at is None


def test_expired_token_is_rejected(anon, user):
    issued = token_create(user=user, expires_in_days=1)
    ApiToken.objects.filter(pk=issued.record.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = anon.get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {issued.token}")
    assert response.status_code == 401


def test_expiry_requested_at_login(anon, user):
    body = anon.post(
        "/api/v1/auth/token", {"username": "alice", "password": "secret-pass-123", "expiresInDays": 7}, format="json"
    ).json()
    record = ApiToken.objects.get(pk=body["tokenId"])
    assert timedelta(days=6, hours=23) < record.expires_at - timezone.now() <= timedelta(days=7)


@pytest.mark.parametrize(
    "header",
    ["Bearer wst_nothing", "Bearer ", "Bearer wst_0123456789abcdefghijklmnopqrstuvwxyz", "Bearer " + "x" * 500],
)
def test_malformed_or_unknown_tokens_are_401(anon, db, header):
    response = anon.get("/api/v1/auth/me", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response.json()["statusCode"] == 401


def test_tampered_token_with_valid_prefix_is_rejected(anon, user):
    issued = token_create(user=user)
    tampered = issued.token[:-1] + ("A" if issued.token[-1] != "A" else "B")
    assert anon.get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {tampered}").status_code == 401


def test_inactive_user_token_is_rejected(anon, user):
    issued = token_create(user=user)
    user.is_active = False
    user.save()
    assert anon.get("/api/v1/auth/me", HTTP_AUTHORIZATION=f"Bearer {issued.token}").status_code == 401


def test_missing_credentials_is_401_with_envelope(anon, db):
    response = anon.get("/api/v1/auth/me")
    assert response.status_code == 401
    assert response.json() == {"statusCode": 401, "message": "身份认证信息未提供。", "error": "Unauthorized"}


def test_login_is_rate_limited_with_retry_after(anon, user, settings):
    rates = {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "auth": "3/min"}
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    responses = [
        anon.post("/api/v1/auth/token", {"username": "alice", "password": "bad"}, format="json") for _ in range(4)
    ]
    assert [r.status_code for r in responses] == [401, 401, 401, 429]
    assert 1 <= int(responses[-1]["Retry-After"]) <= 60
    assert responses[-1].json()["statusCode"] == 429
    assert responses[-1].json()["error"] == "Too Many Requests"


def test_a_token_limited_to_the_openai_api_is_refused_elsewhere(anon, make_client, user):
    response = anon.post(
        "/api/v1/auth/token",
        {"username": "alice", "password": "secret-pass-123", "name": "tavern", "scope": "openai"},
        format="json",
    )
    assert response.status_code == 201 and response.json()["scope"] == "openai"
    anon.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['token']}")
    refused = anon.get("/api/v1/auth/me")
    assert refused.status_code == 401
    assert refused.json()["message"] == "此令牌只能用于 OpenAI 兼容接口（/v1）。"
    assert anon.post("/api/v1/auth/token", {"username": "alice", "scope": "admin"}, format="json").status_code == 400


def _cached_record(record: ApiToken) -> ApiToken:
    from apps.accounts.services import _record_from_cache, _record_to_cache

    return _record_from_cache(_record_to_cache(record))


def test_token_record_from_the_cache_is_what_from_db_builds(user):
    # given a token record as authentication caches it
    from django.contrib.auth import get_user_model

    issued = token_create(user=user)
    record = ApiToken.objects.select_related("user").get(pk=issued.record.pk)
    # when it is rebuilt from the cache
    cached = _cached_record(record)
    # then it is a saved instance of the same row, the fields left out deferred (read on demand)
    assert cached.pk == record.pk and cached._state.adding is False and cached._state.db == "default"
    assert {f: getattr(cached, f) for f in ("prefix", "digest", "expires_at", "scope", "user_id")} == {
        f: getattr(record, f) for f in ("prefix", "digest", "expires_at", "scope", "user_id")
    }
    assert cached.get_deferred_fields() == set()
    assert cached.user.username == "alice" and cached.user.is_active
    assert "password" in cached.user.get_deferred_fields()  # never cached: no hash in the cache
    assert cached.user.email == get_user_model().objects.get(pk=user.pk).email  # loaded on demand
    assert cached == record and cached.user == record.user


def test_token_record_from_the_cache_honours_model_init_signals(user):
    # given a receiver of post_init for tokens (none in the project: the fast build skips __init__)
    from django.db.models.signals import post_init

    seen: list[ApiToken] = []

    def receiver(sender, instance, **kwargs):
        seen.append(instance)

    record = token_create(user=user).record
    post_init.connect(receiver, sender=ApiToken)
    try:
        # when a cached record is rebuilt
        cached = _cached_record(record)
    finally:
        post_init.disconnect(receiver, sender=ApiToken)
    # then it went through Model.__init__, and the receiver saw it
    assert seen == [cached]
    assert cached.get_deferred_fields() == set() and cached._state.adding is False
