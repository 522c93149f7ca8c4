"""Connection health: one circuit breaker per upstream connection (no Django imports).

A connection's circuit is **closed** (healthy) while its calls succeed. Each *counted* failure — a 5xx or
an upstream error event, a timeout, a connection that could not be made or broke (reset, closed
mid-answer) — adds one to its consecutive failures; a success resets them. When they reach
``threshold`` the circuit **opens**: routing skips the connection (the model's fallbacks answer) for
``cooldown`` seconds. Then it is **half-open**: the next call is let through as the one *probe* (a real
request; concurrent calls keep skipping it). The probe's first token closes the circuit; a counted failure
re-opens it for another cool-down. A probe that ends without a verdict (the client went away, a 4xx)
gives the probe back, so the next call probes.

Not counted: what the request itself caused or the upstream refused for a reason of its own (400, 401/403,
404, 429), answers we cannot parse, our own concurrency limit, and cancellations (client disconnects,
the balance or deadline cut) — those say nothing about the upstream's health.

State lives in a :class:`MemoryStore` (one process) or a :class:`RedisStore` (shared by every process;
atomic Lua scripts). The hot path costs no I/O while a circuit is closed: the Redis store keeps what it
last read for ``snapshot_seconds`` and writes only on a failure, on the success that follows failures,
and for a probe. An unreachable store never fails a call: the call is admitted and goes untracked (one
warning a minute). Times are wall-clock seconds from an injectable ``clock`` (comparable across processes,
and tests move it instead of sleeping).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal, Protocol

from apps.providers.adapters.errors import UpstreamConnectError, UpstreamError, UpstreamServerError, UpstreamTimeout

logger = logging.getLogger("apps.providers.circuit")

Status = Literal["closed", "open", "half_open"]
Event = Literal["", "opened", "reopened", "closed"]

COUNTED: tuple[type[UpstreamError], ...] = (UpstreamServerError, UpstreamTimeout, UpstreamConnectError)
PROBE_RETRY_AFTER = 5.0  # Retry-After while another call is probing a half-open circuit
KEY_TTL_SECONDS = 7 * 24 * 3600  # a Redis circuit nobody touched for a week is forgotten (closed)


def counts_as_failure(exc: BaseException) -> bool:
    """Does this failure say the upstream is unhealthy (see the module docstring)?"""
    return isinstance(exc, COUNTED)


class CircuitOpen(UpstreamError):
    """Every connection that could answer the call has an open circuit (503 with ``Retry-After``)."""

    code = "circuit_open"
    client_status = 503

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class CircuitState:
    """One connection's circuit. Times are wall-clock seconds (0: never / none)."""

    failures: int = 0  # consecutive counted failures
    opened_at: float = 0.0  # when it opened (or re-opened); 0 while closed
    probe_until: float = 0.0  # a half-open probe is in flight until then
    changed_at: float = 0.0  # the last open or close

    def status(self, now: float, cooldown: float) -> Status:
        if not self.opened_at:
            return "closed"
        return "open" if now < self.opened_at + cooldown else "half_open"

    def retry_after(self, now: float, cooldown: float) -> float:
        """Seconds until this circuit may take a call again (0 when it may now)."""
        status = self.status(now, cooldown)
        if status == "open":
            return self.opened_at + cooldown - now
        if status == "half_open" and self.probe_until > now:
            return min(PROBE_RETRY_AFTER, self.probe_until - now)
        return 0.0


# -- the transitions (the Redis scripts below do exactly these) -----------------------------------


def after_failure(state: CircuitState, *, now: float, threshold: int, probe: bool) -> tuple[CircuitState, Event]:
    failures = state.failures + 1
    if not state.opened_at:
        if failures >= threshold:
            return CircuitState(failures, now, 0.0, now), "opened"
        return replace(state, failures=failures), ""
    if probe:  # the probe failed: another cool-down
        return CircuitState(failures, now, 0.0, now), "reopened"
    return replace(state, failures=failures), ""  # a call from before it opened: no new cool-down


def after_success(state: CircuitState, *, now: float) -> tuple[CircuitState, Event]:
    if state.opened_at:
        return CircuitState(0, 0.0, 0.0, now), "closed"
    return replace(state, failures=0), ""


Admission = Literal["closed", "refused", "probe"]


def admit(state: CircuitState, *, now: float, cooldown: float, lease: float) -> tuple[CircuitState, Admission]:
    """May a call go to this connection? A half-open circuit with no probe in flight takes this call as
    its probe, for ``lease`` seconds at most (after that, a crashed probe's process is given up on)."""
    status = state.status(now, cooldown)
    if status == "closed":
        return state, "closed"
    if status == "open" or state.probe_until > now:
        return state, "refused"
    return replace(state, probe_until=now + lease), "probe"


def after_release(state: CircuitState, *, probe_until: float) -> CircuitState:
    """Give back a probe that ended without a verdict (only if it is still ours)."""
    if state.opened_at and abs(state.probe_until - probe_until) < 0.01:
        return replace(state, probe_until=0.0)
    return state


# -- stores ----------------------------------------------------------------------------------------


class Store(Protocol):
    shared: bool  # seen by every process (Redis), or by this one only

    async def get(self, key: int, now: float) -> CircuitState: ...
    async def admit(self, key: int, *, now: float, cooldown: float, lease: float) -> Admission: ...
    async def failure(self, key: int, *, now: float, threshold: int, probe: bool) -> tuple[CircuitState, Event]: ...
    async def success(self, key: int, *, now: float) -> tuple[CircuitState, Event]: ...
    async def release(self, key: int, *, probe_until: float) -> None: ...
    def read(self, keys: Iterable[int]) -> dict[int, CircuitState]: ...
    def reset(self, key: int) -> CircuitState: ...
    def clear(self) -> None: ...


class MemoryStore:
    """The circuits of this process (no Redis): a dict under a lock (the admin reads it from a thread)."""

    shared = False

    def __init__(self) -> None:
        self._states: dict[int, CircuitState] = {}
        self._lock = threading.Lock()

    def _apply[T](self, key: int, step: Callable[[CircuitState], tuple[CircuitState, T]]) -> tuple[CircuitState, T]:
        with self._lock:
            state, result = step(self._states.get(key, CircuitState()))
            self._states[key] = state
            return state, result

    async def get(self, key: int, now: float) -> CircuitState:
        return self._states.get(key, CircuitState())

    async def admit(self, key: int, *, now: float, cooldown: float, lease: float) -> Admission:
        state = self._states.get(key)
        if state is None or not state.opened_at:  # the hot path: no lock
            return "closed"
        return self._apply(key, lambda s: admit(s, now=now, cooldown=cooldown, lease=lease))[1]

    async def failure(self, key: int, *, now: float, threshold: int, probe: bool) -> tuple[CircuitState, Event]:
        return self._apply(key, lambda s: after_failure(s, now=now, threshold=threshold, probe=probe))

    async def success(self, key: int, *, now: float) -> tuple[CircuitState, Event]:
        return self._apply(key, lambda s: after_success(s, now=now))

    async def release(self, key: int, *, probe_until: float) -> None:
        self._apply(key, lambda s: (after_release(s, probe_until=probe_until), None))

    def read(self, keys: Iterable[int]) -> dict[int, CircuitState]:
        with self._lock:
            return {key: self._states.get(key, CircuitState()) for key in keys}

    def reset(self, key: int) -> CircuitState:
        with self._lock:
            return self._states.pop(key, CircuitState())

    def clear(self) -> None:
        with self._lock:
            self._states.clear()


_FIELDS = ("f", "o", "p", "c")
_STATE = """
local s = redis.call('HMGET', KEYS[1], 'f', 'o', 'p', 'c')
local f, o, p, c = tonumber(s[1]) or 0, tonumber(s[2]) or 0, tonumber(s[3]) or 0, tonumber(s[4]) or 0
local now = tonumber(ARGV[1])
local function num(x) return string.format('%.17g', x) end  -- 17 digits: the exact double back in Python
"""
_SAVE = """
redis.call('HSET', KEYS[1], 'f', f, 'o', num(o), 'p', num(p), 'c', num(c))
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""
_RESULT = "return {tostring(f), num(o), num(p), num(c), result}"
# ARGV: now, ttl, threshold, probe (1/0)
_FAILURE = (
    _STATE
    + """
local result = ''
f = f + 1
if o == 0 then
  if f >= tonumber(ARGV[3]) then o, p, c, result = now, 0, now, 'opened' end
elseif ARGV[4] == '1' then
  o, p, c, result = now, 0, now, 'reopened'
end
"""
    + _SAVE
    + _RESULT
)
# ARGV: now, ttl
_SUCCESS = (
    _STATE
    + """
local result = ''
if o ~= 0 then o, p, c, result = 0, 0, now, 'closed' end
f = 0
"""
    + _SAVE
    + _RESULT
)
# ARGV: now, ttl, cooldown, lease
_ADMIT = (
    _STATE
    + """
local result = 'closed'
if o ~= 0 then
  if now < o + tonumber(ARGV[3]) or p > now then
    result = 'refused'
  else
    p, result = now + tonumber(ARGV[4]), 'probe'
"""
    + _SAVE
    + """
  end
end
"""
    + _RESULT
)
# ARGV: now, ttl, probe_until (ours: a probe given up on and taken by another call is not released)
_RELEASE = (
    _STATE
    + """
local result = ''
if o ~= 0 and math.abs(p - tonumber(ARGV[3])) < 0.01 then
  p = 0
"""
    + _SAVE
    + """
end
"""
    + _RESULT
)


def _state(values: Iterable[Any]) -> CircuitState:
    f, o, p, c = (float(v) if v not in (None, b"", "") else 0.0 for v in values)
    return CircuitState(int(f), o, p, c)


class RedisStore:
    """Circuits shared by every process through Redis hashes (``ws:circuit:<connection id>``).

    ``get`` answers from what this process last saw of the key when that is under ``snapshot_seconds``
    old, so a closed circuit costs no round trip; a circuit another process opened is seen within that
    time. Every change is one atomic script that also refreshes the local view.
    """

    shared = True
    prefix: ClassVar[str] = "ws:circuit:"

    def __init__(self, url: str, *, snapshot_seconds: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self.url = url
        self.snapshot_seconds = snapshot_seconds
        self.clock = clock
        self._seen: dict[int, tuple[float, CircuitState]] = {}
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = weakref.WeakKeyDictionary()
        self._sync: Any = None

    def _async(self) -> Any:
        import redis.asyncio as aioredis

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = aioredis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2)
        return client

    def _client(self) -> Any:
        if self._sync is None:
            import redis

            self._sync = redis.Redis.from_url(self.url, socket_connect_timeout=1, socket_timeout=2)
        return self._sync

    def _key(self, key: int) -> str:
        return f"{self.prefix}{key}"

    async def _run(self, script: str, key: int, now: float, *args: Any) -> tuple[CircuitState, str]:
        reply = await self._async().eval(script, 1, self._key(key), repr(now), KEY_TTL_SECONDS, *args)
        state = _state(reply[:4])
        self._seen[key] = (self.clock(), state)
        result = reply[4]
        return state, result.decode() if isinstance(result, bytes) else str(result)

    async def get(self, key: int, now: float) -> CircuitState:
        seen = self._seen.get(key)
        if seen is not None and 0 <= self.clock() - seen[0] < self.snapshot_seconds:
            return seen[1]
        state = _state(await self._async().hmget(self._key(key), _FIELDS))
        self._seen[key] = (self.clock(), state)
        return state

    async def admit(self, key: int, *, now: float, cooldown: float, lease: float) -> Admission:
        state = await self.get(key, now)
        status = state.status(now, cooldown)
        if status == "closed":
            return "closed"
        if status == "open" or state.probe_until > now:
            return "refused"
        _state_now, result = await self._run(_ADMIT, key, now, repr(cooldown), repr(lease))
        return result  # type: ignore[return-value]  # one of Admission's values, by the script

    async def failure(self, key: int, *, now: float, threshold: int, probe: bool) -> tuple[CircuitState, Event]:
        state, event = await self._run(_FAILURE, key, now, threshold, "1" if probe else "0")
        return state, event  # type: ignore[return-value]

    async def success(self, key: int, *, now: float) -> tuple[CircuitState, Event]:
        state, event = await self._run(_SUCCESS, key, now)
        return state, event  # type: ignore[return-value]

    async def release(self, key: int, *, probe_until: float) -> None:
        await self._run(_RELEASE, key, self.clock(), repr(probe_until))

    def read(self, keys: Iterable[int]) -> dict[int, CircuitState]:
        keys = list(keys)
        pipe = self._client().pipeline(transaction=False)
        for key in keys:
            pipe.hmget(self._key(key), _FIELDS)
        return {key: _state(values) for key, values in zip(keys, pipe.execute(), strict=True)}

    def reset(self, key: int) -> CircuitState:
        pipe = self._client().pipeline(transaction=True)
        pipe.hmget(self._key(key), _FIELDS)
        pipe.delete(self._key(key))
        values, _deleted = pipe.execute()
        self._seen.pop(key, None)
        return _state(values)

    def clear(self) -> None:
        self._seen.clear()


# -- the breaker -----------------------------------------------------------------------------------


@dataclass(slots=True)
class Permit:
    """A call admitted to a connection; ``probe_until`` is set when it is the half-open probe."""

    key: int
    name: str
    probe_until: float = 0.0

    @property
    def probe(self) -> bool:
        return bool(self.probe_until)


class Breaker:
    """The circuit rules over a store. ``threshold`` 0 turns the breaker off (every call is admitted,
    nothing is recorded)."""

    def __init__(
        self,
        store: Store,
        *,
        threshold: int = 5,
        cooldown: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.threshold = threshold
        self.cooldown = cooldown
        self.clock = clock
        self._releases: set[asyncio.Task[None]] = set()
        self._store_warned = -60.0

    @property
    def enabled(self) -> bool:
        return self.threshold > 0

    async def admit(self, key: int, *, name: str = "", lease: float = 60.0) -> Permit | None:
        """A permit to call connection ``key``, or None while its circuit is open (or being probed)."""
        if not self.enabled:
            return Permit(key, name)
        now = self.clock()
        try:
            admission = await self.store.admit(key, now=now, cooldown=self.cooldown, lease=lease)
        except Exception as exc:  # health tracking never fails a call: the store unreachable admits it
            self._store_failed(exc)
            return Permit(key, name)
        if admission == "refused":
            return None
        if admission == "probe":
            logger.info("circuit half-open: connection %s (#%d) takes one probe call", name, key)
            return Permit(key, name, now + lease)
        return Permit(key, name)

    async def retry_after(self, key: int) -> float:
        """Seconds until connection ``key`` may take a call (what its last refusal was based on)."""
        now = self.clock()
        try:
            return (await self.store.get(key, now)).retry_after(now, self.cooldown)
        except Exception as exc:  # as in `admit`: a guess rather than a failed call
            self._store_failed(exc)
            return 1.0

    async def failure(self, permit: Permit, exc: BaseException) -> None:
        """The call failed: count it when it says the upstream is unhealthy, else give the probe back."""
        if not self.enabled:
            return
        if not counts_as_failure(exc):
            await self.release(permit)
            return
        try:
            state, event = await self.store.failure(
                permit.key, now=self.clock(), threshold=self.threshold, probe=permit.probe
            )
        except Exception as store_error:  # as in `admit`: the failure goes uncounted, the call goes on
            self._store_failed(store_error)
            return
        code = getattr(exc, "code", type(exc).__name__)
        if event == "opened":
            logger.warning(
                "circuit opened: connection %s (#%d) after %d consecutive failures (last: %s); "
                "calls go to the fallbacks for %g s",
                permit.name,
                permit.key,
                state.failures,
                code,
                self.cooldown,
            )
        elif event == "reopened":
            logger.warning(
                "circuit re-opened: connection %s (#%d): the probe failed (%s); next probe in %g s",
                permit.name,
                permit.key,
                code,
                self.cooldown,
            )

    async def success(self, permit: Permit) -> None:
        """The upstream answered (its first token): reset the failures, close an open circuit."""
        if not self.enabled:
            return
        try:
            if not permit.probe:
                seen = await self.store.get(permit.key, self.clock())
                if not seen.failures and not seen.opened_at:
                    return  # healthy as far as this process knows: nothing to write
            _state, event = await self.store.success(permit.key, now=self.clock())
        except Exception as exc:  # as in `admit`
            self._store_failed(exc)
            return
        if event == "closed":
            logger.warning("circuit closed: connection %s (#%d) answered again", permit.name, permit.key)

    async def release(self, permit: Permit) -> None:
        if permit.probe:
            try:
                await self.store.release(permit.key, probe_until=permit.probe_until)
            except Exception as exc:  # as in `admit`: the probe's lease runs out by itself
                self._store_failed(exc)

    def _store_failed(self, exc: BaseException) -> None:
        """Say so at most once a minute (the store is down for every call, not for one)."""
        now = time.monotonic()
        if now - self._store_warned >= 60:
            self._store_warned = now
            logger.warning("connection health unavailable (%s): calls are admitted untracked", type(exc).__name__)

    def release_soon(self, permit: Permit) -> None:
        """Give the probe back from a cancelled call (where awaiting is not possible): in the background."""
        if not permit.probe:
            return
        task = asyncio.get_running_loop().create_task(self.release(permit))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def states(self, keys: Iterable[int]) -> dict[int, CircuitState]:
        """The current state of each connection (synchronous: admin pages, commands)."""
        return self.store.read(keys)

    def reset(self, key: int) -> CircuitState:
        """Close connection ``key``'s circuit now (an operator's decision); returns the state it had."""
        return self.store.reset(key)


def retry_after_header(seconds: float) -> str:
    """A ``Retry-After`` value: whole seconds, at least 1."""
    return str(max(1, math.ceil(seconds)))
