"""Per-user rate limits as fixed windows counted with atomic cache increments.

With `REDIS_URL` set the cache is Redis, so limits hold across app processes; otherwise they are
per process. A refused request gets 429 with `Retry-After` (seconds to the end of the window).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

import redis
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.translation import gettext as _
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle

from apps.core.cache import SharedRedisCache, loop_backend
from apps.core.metrics import RATE_LIMIT_REFUSALS
from apps.core.redis_pipelined import Script, for_loop

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


class Window(NamedTuple):
    """A rate limit's current window for one client: its cache key, limit, length, and the time read."""

    key: str
    limit: int
    period: int
    now: float


class WindowRateThrottle(BaseThrottle):
    scope = "user"
    wait_seconds: float | None = None
    #: the window this request was already counted in, and its count (`count_on_loop`)
    counted: tuple[Window, int] | None = None

    def get_scope(self, request: Any, view: Any) -> str:
        return self.scope

    def get_ident(self, request: Any) -> str:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            return f"u{user.pk}"
        return f"ip{client_ip(request)}"

    def window(self, request: Any, view: Any) -> Window | None:
        """The window this request counts in; None when the scope has no limit."""
        parsed = parse_rate(api_settings.DEFAULT_THROTTLE_RATES.get(self.get_scope(request, view)))  # type: ignore[arg-type]  # stubs: rates are "n/period" strings
        if parsed is None:
            return None
        limit, period = parsed
        now = time.time()
        return Window(
            f"throttle:{self.get_scope(request, view)}:{self.get_ident(request)}:{int(now // period)}",
            limit,
            period,
            now,
        )

    def allow_request(self, request: Any, view: Any) -> bool:
        if self.counted is not None:
            window, count = self.counted
        else:
            found = self.window(request, view)
            if found is None:
                return True
            window, count = found, self.count(found)
        self.wait_seconds = window.period - (window.now % window.period)
        if count > window.limit:
            RATE_LIMIT_REFUSALS.labels(self.get_scope(request, view)).inc()
            return False
        return True

    @staticmethod
    def count(window: Window) -> int:
        """Count one request in `window` (the cache's atomic add, then increments)."""
        if cache.add(window.key, 1, window.period + 1):
            return 1
        try:
            return cache.incr(window.key)
        except ValueError:  # expired between add and incr
            cache.add(window.key, 1, window.period + 1)
            return 1

    def wait(self) -> float | None:
        return self.wait_seconds


_COUNT = Script("""
local counts = {}
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, ARGV[i]) end
  counts[i] = count
end
return counts
""")


async def count_on_loop(throttles: list[BaseThrottle], request: Any, view: Any) -> bool:
    """Count the request in the windows of `throttles` on the event loop — one script call on the loop's
    pipelined Redis connection for all of them, the same keys and expiry as `WindowRateThrottle.count` —
    and remember each count on its throttle, for `allow_request`. False when the cache is not one shared
    Redis server: the throttles count in place (the per-process cache needs no round trip). Redis
    unreachable: counted as 1, as the synchronous count fails open."""
    backend = loop_backend()
    servers: list[str] = getattr(backend, "_servers", [])  # RedisCache's private, untyped attribute
    if not isinstance(backend, SharedRedisCache) or len(servers) != 1:
        return False
    limited = [t for t in throttles if isinstance(t, WindowRateThrottle)]
    windows = [(t, t.window(request, view)) for t in limited]
    counted = [(t, w) for t, w in windows if w is not None]
    if not counted:
        return True
    keys = [backend.make_key(w.key) for _t, w in counted]
    try:
        counts = await for_loop(servers[0]).run_script(_COUNT, keys, [w.period + 1 for _t, w in counted])
    except (redis.ConnectionError, redis.TimeoutError):
        counts = [1] * len(counted)
    for (throttle, window), count in zip(counted, counts, strict=True):
        throttle.counted = (window, int(count))
    return True


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
