"""Writes for accounts: users, API tokens, the default role."""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.core.cache import cache
from django.db import transaction
from django.db.models.base import ModelState
from django.db.models.signals import post_init, pre_init
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.accounts.models import GENERATION_PERMISSIONS, ApiToken, GenerationAccess
from apps.audit.services import Actor, audit_record, snapshot
from apps.core.errors import Conflict

if TYPE_CHECKING:
    from django.contrib.auth.models import User

_PREFIX_LEN = 8  # random characters after API_TOKEN_PREFIX used for lookup


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str  # shown once
    record: ApiToken


def token_digest(token: str) -> str:
    """HMAC-SHA256 of the token keyed with SECRET_KEY (a database leak alone reveals nothing usable)."""
    return hmac.digest(_digest_key(settings.SECRET_KEY), token.encode(), "sha256").hex()


@functools.lru_cache(maxsize=4)
def _digest_key(secret: str) -> bytes:
    return hashlib.sha256(b"api-token:" + secret.encode()).digest()


def split_token(token: str) -> str | None:
    """Return the lookup prefix of a well-formed token, else None."""
    start = settings.API_TOKEN_PREFIX
    if not token.startswith(start) or len(token) < len(start) + _PREFIX_LEN + 20 or len(token) > 200:
        return None
    return token[: len(start) + _PREFIX_LEN]


def token_create(
    *,
    user: User,
    name: str = "",
    expires_in_days: int | None = None,
    scope: str = ApiToken.Scope.ALL,
    by: Actor | None = None,
) -> IssuedToken:
    """A new token (shown once). `expires_in_days` None: `API_TOKEN_DEFAULT_EXPIRY_DAYS` (0 there: never);
    0: never. A user holds at most `API_TOKEN_MAX_PER_USER` active tokens (`Conflict` past it). Issued by
    an operator (`by`): audited (`apitoken.create`, its prefix — never the token or its digest)."""
    now = timezone.now()
    active = ApiToken.objects.filter(user=user, revoked_at=None).exclude(expires_at__lte=now).count()
    if active >= settings.API_TOKEN_MAX_PER_USER:
        raise Conflict(
            _("You already have %(count)s active tokens; revoke one before creating another.") % {"count": active},
            code="too_many_tokens",
        )
    if expires_in_days is None:
        expires_in_days = settings.API_TOKEN_DEFAULT_EXPIRY_DAYS
    for _attempt in range(5):
        prefix = settings.API_TOKEN_PREFIX + secrets.token_hex(_PREFIX_LEN // 2)
        if not ApiToken.objects.filter(prefix=prefix).exists():
            break
    token = prefix + secrets.token_urlsafe(32)
    expires_at = now + timedelta(days=expires_in_days) if expires_in_days else None
    with transaction.atomic():
        record = ApiToken.objects.create(
            user=user,
            name=name[:100],
            prefix=prefix,
            digest=token_digest(token),
            created_at=now,
            expires_at=expires_at,
            scope=scope,
        )
        if by is not None:
            _token_audit(by=by, action="apitoken.create", token=record, before=None)
    return IssuedToken(token=token, record=record)


def _token_audit(*, by: Actor, action: str, token: ApiToken, before: dict[str, Any] | None) -> None:
    audit_record(
        by=by,
        action=action,
        target_type="accounts.apitoken",
        target_id=token.pk,
        target_repr=f"{token.prefix}… of {token.user}",
        before=before,
        after=snapshot(token),
    )


def token_revoke(*, token: ApiToken, by: Actor | None = None) -> ApiToken:
    """Revoke at once, in every process (the cache entry goes, a tombstone stops a racing re-cache).
    Revoked by an operator (`by`): audited (`apitoken.revoke`)."""
    if token.revoked_at is None:
        before = snapshot(token)
        token.revoked_at = timezone.now()
        with transaction.atomic():
            token.save(update_fields=["revoked_at"])
            if by is not None:
                _token_audit(by=by, action="apitoken.revoke", token=token, before=before)
    # A tombstone first: a request that read the row before this revocation and caches it afterwards
    # must not bring the token back (authentication ignores the cache while the tombstone lives).
    cache.set(_revoked_key(token.prefix), 1, TOKEN_CACHE_SECONDS * 2)
    cache.delete(_token_cache_key(token.prefix))
    return token


TOKEN_CACHE_SECONDS = 30


def _token_cache_key(prefix: str) -> str:
    return f"apitoken:{prefix}"


def _revoked_key(prefix: str) -> str:
    return f"apitoken-revoked:{prefix}"


def token_cache_keys(token: str) -> list[str]:
    """The cache keys `token_authenticate` reads for a presented token (to prefetch them with others
    in one round trip: `apps.core.cache.prefetched`); none for a malformed token or without Redis."""
    prefix = split_token(token)
    if prefix is None or not _token_cache_shared():
        return []
    return [_token_cache_key(prefix), _revoked_key(prefix)]


def _token_cache_shared() -> bool:
    """Tokens are cached only in a cache every app process shares (Redis): a per-process cache would
    keep a revoked token alive in the other processes for TOKEN_CACHE_SECONDS."""
    return bool(settings.REDIS_URL)


def token_authenticate(*, token: str) -> ApiToken | None:
    """Find the active token record for a presented bearer token (constant-time digest compare).

    The record (with its user) is cached for TOKEN_CACHE_SECONDS in the shared cache, so most requests
    authenticate without a query. Revoking deletes the entry at once; deactivating a user or changing
    an expiry in the admin takes effect within TOKEN_CACHE_SECONDS.
    """
    prefix = split_token(token)
    if prefix is None:
        return None
    key = _token_cache_key(prefix)
    use_cache = _token_cache_shared()
    found = cache.get_many([key, _revoked_key(prefix)]) if use_cache else {}
    if _revoked_key(prefix) in found:  # revoked lately: the cache may hold a stale copy
        found, use_cache = {}, False
    cached = found.get(key)
    record: ApiToken | None
    if cached is not None:
        record = _record_from_cache(cached)
    else:
        record = ApiToken.objects.select_related("user").filter(prefix=prefix).first()
        if record is None:
            return None
        if use_cache:
            cache.set(key, _record_to_cache(record), TOKEN_CACHE_SECONDS)
    if not hmac.compare_digest(record.digest, token_digest(token)):
        return None
    if not record.is_active or not record.user.is_active:
        return None
    now = timezone.now()
    resolution = timedelta(seconds=settings.API_TOKEN_LAST_USED_RESOLUTION)
    if record.last_used_at is None or now - record.last_used_at >= resolution:
        # Written at most once per resolution window: authentication must not be a write per request.
        ApiToken.objects.filter(pk=record.pk).update(last_used_at=now)
        record.last_used_at = now
        if use_cache:
            cache.set(key, _record_to_cache(record), TOKEN_CACHE_SECONDS)
    return record


_TOKEN_FIELDS = (
    "id",
    "user_id",
    "name",
    "prefix",
    "digest",
    "created_at",
    "expires_at",
    "last_used_at",
    "revoked_at",
    "scope",
)
_USER_FIELDS = ("id", "username", "is_active", "is_staff", "is_superuser")


def _record_to_cache(record: ApiToken) -> dict[str, Any]:
    """What authentication needs, and nothing secret: no password hash ever reaches the cache."""
    return {
        "token": {f: getattr(record, f) for f in _TOKEN_FIELDS},
        "user": {f: getattr(record.user, f) for f in _USER_FIELDS},
    }


@functools.cache
def _attnames(model: Any) -> frozenset[str]:
    return frozenset(f.attname for f in model._meta.concrete_fields)


def _from_db(model: Any, values: dict[str, Any]) -> Any:
    """An instance with only these fields loaded (the others deferred: read on demand), as
    `Model.from_db` builds it. Without `pre_init` / `post_init` receivers for the model there is nothing
    for `Model.__init__` to do but set the attributes: they are set directly (a quarter of the CPU, on
    every authenticated request)."""
    if pre_init.has_listeners(model) or post_init.has_listeners(model):
        names = [f.attname for f in model._meta.concrete_fields if f.attname in values]
        return model.from_db("default", names, [values[name] for name in names])
    attnames = _attnames(model)
    instance = model.__new__(model)
    state = instance._state = ModelState()
    state.adding = False
    state.db = "default"
    instance.__dict__.update((name, value) for name, value in values.items() if name in attnames)
    return instance


def _record_from_cache(cached: dict[str, Any]) -> ApiToken:
    record = _from_db(ApiToken, cached["token"])
    record.user = _from_db(get_user_model(), cached["user"])
    return record


def role_default_get() -> Group:
    """The default role (a Django group) holding the generation permissions; created on demand."""
    group, _created = Group.objects.get_or_create(name=settings.DEFAULT_ROLE_NAME)
    if _created:
        group.permissions.add(*generation_permissions())
    return group


def generation_permissions() -> list[Permission]:
    content_type = ContentType.objects.get_for_model(GenerationAccess, for_concrete_model=False)
    perms = []
    for codename, name in GENERATION_PERMISSIONS:
        perm, _ = Permission.objects.get_or_create(
            content_type=content_type, codename=codename, defaults={"name": name}
        )
        perms.append(perm)
    return perms


@transaction.atomic
def user_create(*, username: str, password: str | None = None, email: str = "", is_staff: bool = False) -> User:
    """Create a user; the default role is attached by the post-save signal (any creation path)."""
    user_model = get_user_model()
    user = user_model(username=username, email=email, is_staff=is_staff)
    if password:
        user.set_password(password)
    else:
        user.set_unusable_password()
    user.save()
    return user
