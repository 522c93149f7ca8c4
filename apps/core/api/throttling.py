"""Per-user rate limits as fixed windows counted with atomic cache increments.

With `REDIS_URL` set the cache is Redis, so limits hold across app processes; otherwise they are
per process. A refused request gets 429 with `Retry-After` (seconds to the end of the window).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.translation import gettext as _
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from apps.core.metrics import RATE_LIMIT_REFUSALS

_PERIODS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str | None) -> tuple[int, int] | None:
    """`"60/min"` → (60, 60). Empty or `"0"` disables the limit."""
    if not rate or rate.strip() in ("0", "none", "off"):
        return None
    num, _, period = rate.partition("/")
    seconds = _PERIODS.get((period.strip() or "s")[0].lower(), 1)
    return int(num), seconds


def client_ip(request: Any) -> str:
    """The client's address: `REMOTE_ADDR`, or behind `NUM_PROXIES` trusted proxies the address the
    farthest trusted one saw (`X-Forwarded-For`, counted from the right: entries further left are the
    client's own claims and cannot be trusted)."""
    remote = request.META.get("REMOTE_ADDR") or "unknown"
    proxies = api_settings.NUM_PROXIES or 0
    forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
    if proxies > 0 and forwarded:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        if hops:
            return hops[-min(proxies, len(hops))]
    return remote


def rate_limited(scope: str, *, methods: frozenset[str] = frozenset({"POST"})) -> Callable[[V], V]:
    """Limit a plain Django view (the admin login) per client address with the `scope` rate of
    `DEFAULT_THROTTLE_RATES`: past it, 429 with `Retry-After`, the view not called."""

    def decorate(view: V) -> V:
        @functools.wraps(view)
        def limited(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if request.method in methods:
                throttle = AnonymousRateThrottle(scope)
                if not throttle.allow_request(request, None):
                    wait = max(1, int((throttle.wait_seconds or 1) + 0.999))
                    response = HttpResponse(_("Too many attempts; try again later."), status=429)
                    response["Retry-After"] = str(wait)
                    return response
            return view(request, *args, **kwargs)

        return limited  # type: ignore[return-value]

    return decorate


class WindowRateThrottle(BaseThrottle):
    scope = "user"
    wait_seconds: float | None = None

    def get_scope(self, request: Any, view: Any) -> str:
        return self.scope

    def get_ident(self, request: Any) -> str:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"u{user.pk}"
        return f"ip{client_ip(request)}"

    def allow_request(self, request: Any, view: Any) -> bool:
        scope = self.get_scope(request, view)
        parsed = parse_rate(api_settings.DEFAULT_THROTTLE_RATES.get(scope))  # type: ignore[arg-type]  # stubs: rates are "n/period" strings
        if parsed is None:
            return True
        limit, period = parsed
        now = time.time()
        window = int(now // period)
        key = f"throttle:{scope}:{self.get_ident(request)}:{window}"
        if cache.add(key, 1, period + 1):
            count = 1
        else:
            try:
                count = cache.incr(key)
            except ValueError:  # expired between add and incr
                cache.add(key, 1, period + 1)
                count = 1
        self.wait_seconds = period - (now % period)
        if count > limit:
            RATE_LIMIT_REFUSALS.labels(scope).inc()
            return False
        return True

    def wait(self) -> float | None:
        return self.wait_seconds


class UserRateThrottle(WindowRateThrottle):
    """The default: `user` rate for authenticated users, `anon` rate per IP otherwise."""

    def get_scope(self, request: Any, view: Any) -> str:
        user = getattr(request, "user", None)
        return "user" if user is not None and user.is_authenticated else "anon"


class ScopedRateThrottle(WindowRateThrottle):
    """Uses the view's `throttle_scope` (e.g. `auth`, `generation`)."""

    def get_scope(self, request: Any, view: Any) -> str:
        return getattr(view, "throttle_scope", None) or "user"


class AnonymousRateThrottle(WindowRateThrottle):
    """Per client address whoever is signed in (logins: nobody is yet)."""

    def __init__(self, scope: str) -> None:
        self.scope = scope

    def get_ident(self, request: Any) -> str:
        return f"ip{client_ip(request)}"


V = TypeVar("V", bound=Callable[..., Any])
