"""The process's connection-health breaker, configured from settings (docs/operations.md, "Connection
health"): shared through Redis when ``REDIS_URL`` is set, this process's own otherwise.

``CIRCUIT_FAILURE_THRESHOLD`` consecutive failures open a connection's circuit (0 turns health
tracking off); ``CIRCUIT_COOLDOWN_SECONDS`` later one probe call is let through.
"""

from __future__ import annotations

import threading
import time

from django.conf import settings

from apps.providers.circuit import Breaker, MemoryStore, RedisStore, Store

_lock = threading.Lock()
_breaker: Breaker | None = None
_configured: tuple[int, float, str] | None = None


def _settings() -> tuple[int, float, str]:
    return (int(settings.CIRCUIT_FAILURE_THRESHOLD), float(settings.CIRCUIT_COOLDOWN_SECONDS), settings.REDIS_URL)


def breaker() -> Breaker:
    """The breaker of this process (rebuilt when its settings change, as tests do)."""
    global _breaker, _configured
    current = _settings()
    if _breaker is None or current != _configured:
        with _lock:
            if _breaker is None or current != _configured:
                threshold, cooldown, redis_url = current
                store: Store = RedisStore(redis_url) if redis_url else MemoryStore()
                _breaker = Breaker(store, threshold=threshold, cooldown=cooldown)
                _configured = current
    return _breaker


def circuits_forget() -> None:
    """Forget this process's circuits and its view of the shared ones, back on the wall clock (tests)."""
    if _breaker is not None:
        _breaker.store.clear()
        _breaker.clock = time.time
