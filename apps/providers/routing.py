"""Calling a model with retries and fallbacks (no Django imports).

Before the first token, a retryable failure (timeout, connect error, 429, 404 model, 5xx/overloaded)
is retried once with jittered backoff, then the next fallback model is tried; an authentication
failure skips straight to the next fallback (another connection may work); anything else (a bad
request, a protocol error) ends the call. After the first token nothing switches: a failure mid-stream
is the caller's to report. Rate-limit waits longer than `MAX_RETRY_AFTER` go to the next model, and so
does a model still loading (it answers 503 with `Retry-After` when there is none; not a circuit failure).

Connection health (:mod:`apps.providers.circuit`): a target whose connection's circuit is open is
skipped (an attempt ``circuit_open`` is logged) and the next fallback is tried; each call's outcome is
reported to the breaker — the first token as a success, a 5xx, timeout or broken connection as a
failure. When no target could be tried because every circuit is open, the call fails with
:class:`~apps.providers.circuit.CircuitOpen` (503 with the seconds until the first one may take a call).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Any, Protocol

from apps.providers.adapters import (
    ChatRequest,
    Completion,
    Delta,
    UpstreamAuthError,
    UpstreamError,
    UpstreamLoading,
    UpstreamRateLimited,
    error_retry_delay,
    get_adapter,
)
from apps.providers.circuit import Breaker, CircuitOpen, MemoryStore, Permit
from apps.providers.limits import ConcurrencyLimited, concurrency_slot

RETRIES_PER_TARGET = 1
MAX_RETRY_AFTER = 5.0
NO_BREAKER = Breaker(MemoryStore(), threshold=0)  # admits everything, records nothing


class Target(Protocol):
    model_id: str
    connection_id: int
    max_concurrency: int

    @property
    def config(self) -> Any: ...


@dataclass(slots=True)
class AttemptLog:
    model_id: str
    error_code: str
    message: str


@dataclass(slots=True)
class RoutedCall:
    """One logical call over a chain of targets.

    `build(target)` makes the upstream request for a target (post-processing differs per connection).
    After the call, `target` is the target that answered (or the last one tried) and `attempts` lists
    the failures that led there.
    """

    targets: Sequence[Any]
    build: Callable[[Any], ChatRequest]
    redis_url: str = ""
    slot_wait: float = 2.0
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    can_use: Callable[[Any], bool] = lambda _target: True
    breaker: Breaker = NO_BREAKER
    target: Any = None
    request: ChatRequest | None = None
    attempts: list[AttemptLog] = field(default_factory=list)
    _refused: list[int] = field(default_factory=list, init=False)

    def _plan(self) -> list[Any]:
        usable = [t for t in self.targets if self.can_use(t)]
        return usable or list(self.targets[:1])

    async def _admit(self, target: Any) -> Permit | None:
        """The breaker's permit for the target's connection; None (and an attempt logged) while open."""
        config = target.config
        name = getattr(target, "connection_name", "") or str(target.connection_id)
        lease = float(getattr(config, "connect_timeout", 10.0)) + float(getattr(config, "read_timeout", 120.0))
        permit = await self.breaker.admit(target.connection_id, name=name, lease=lease)
        if permit is None:
            self._refused.append(target.connection_id)
            self.attempts.append(
                AttemptLog(target.model_id, CircuitOpen.code, f"connection {name}: circuit open, skipped")
            )
        return permit

    async def _all_open(self) -> CircuitOpen:
        waits = [await self.breaker.retry_after(key) for key in dict.fromkeys(self._refused)]
        return CircuitOpen(
            "every connection of this model has an open circuit (failing upstream)", retry_after=min(waits, default=1.0)
        )

    async def _backoff_or_next(self, error: UpstreamError, attempt: int) -> bool:
        """Log the failure; sleep and return True to retry the same target, False to move on."""
        self.attempts.append(AttemptLog(self.target.model_id, error.code, error.message))
        if (
            isinstance(error, UpstreamAuthError | UpstreamLoading)
            or not error.retryable
            or attempt >= RETRIES_PER_TARGET
        ):
            return False
        if isinstance(error, UpstreamRateLimited) and (error.retry_after or 0) > MAX_RETRY_AFTER:
            return False
        await self.sleep(error_retry_delay(error, attempt, max_retry_after=MAX_RETRY_AFTER))
        return True

    def _slot(self, target: Any) -> Any:
        return concurrency_slot(
            f"conn{target.connection_id}", target.max_concurrency, redis_url=self.redis_url, wait=self.slot_wait
        )

    @staticmethod
    def _may_fall_back(error: UpstreamError) -> bool:
        return error.retryable or isinstance(error, UpstreamAuthError)

    async def stream(self) -> AsyncGenerator[Delta, None]:
        """Deltas of the first target that produces one; see the module docstring for the rules."""
        last: UpstreamError | ConcurrencyLimited | None = None
        for target in self._plan():
            self.target = target
            attempt = 0
            while (permit := await self._admit(target)) is not None:
                self.request = self.build(target)
                started = False
                try:
                    async with (
                        self._slot(target),
                        aclosing(get_adapter(target.config).stream(self.request)) as deltas,
                    ):
                        async for delta in deltas:
                            if not started:
                                started = True
                                await self.breaker.success(permit)
                            yield delta
                    if not started:
                        await self.breaker.success(permit)
                    return
                except ConcurrencyLimited as exc:
                    await self.breaker.release(permit)
                    last = exc
                    break
                except UpstreamError as exc:
                    await self.breaker.failure(permit, exc)
                    if started:
                        raise
                    last = exc
                    if await self._backoff_or_next(exc, attempt):
                        attempt += 1
                        continue
                    if not self._may_fall_back(exc):
                        raise
                    break
                except BaseException:  # cancelled, closed by the consumer: no verdict on the upstream
                    if not started:
                        self.breaker.release_soon(permit)
                    raise
        raise last if last is not None else await self._all_open()

    async def complete(self) -> Completion:
        last: UpstreamError | ConcurrencyLimited | None = None
        for target in self._plan():
            self.target = target
            attempt = 0
            while (permit := await self._admit(target)) is not None:
                self.request = self.build(target)
                try:
                    async with self._slot(target):
                        completion = await get_adapter(target.config).complete(self.request)
                except ConcurrencyLimited as exc:
                    await self.breaker.release(permit)
                    last = exc
                    break
                except UpstreamError as exc:
                    await self.breaker.failure(permit, exc)
                    last = exc
                    if await self._backoff_or_next(exc, attempt):
                        attempt += 1
                        continue
                    if not self._may_fall_back(exc):
                        raise
                    break
                except BaseException:  # cancelled (the client went away, the deadline): no verdict
                    self.breaker.release_soon(permit)
                    raise
                await self.breaker.success(permit)
                return completion
        raise last if last is not None else await self._all_open()
