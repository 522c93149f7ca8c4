"""Relaying an upstream call to the client: the JSON answer or SSE framing, keep-alive pings, and
finishing the record exactly once whatever happens (success, upstream failure, client disconnect).
No ORM here: the one synchronous step, `finish`, runs as a database step (`db_sync_to_async`)
shielded from cancellation.

:func:`respond` is the entry point: a prepared generation (hold placed, record created) in, the
answer out — a `StreamingHttpResponse` of SSE, or the JSON body once the call has ended.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from typing import Any, Protocol

import orjson
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.http import StreamingHttpResponse
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from apps.core import db_async
from apps.core.api.exceptions import envelope
from apps.core.db import db_sync_to_async
from apps.core.errors import ApplicationError
from apps.core.metrics import SSE_STREAMS_OPEN
from apps.generation.metrics import generation_observe
from apps.generation.models import Generation
from apps.generation.services import Finished, FinishPlan, Outcome, Prepared, generation_extend
from apps.providers.adapters import Delta, UpstreamError, UpstreamLoading, UpstreamRateLimited, UpstreamTimeout
from apps.providers.circuit import CircuitOpen, retry_after_header
from apps.providers.health import breaker
from apps.providers.limits import ConcurrencyLimited
from apps.providers.routing import RoutedCall

logger = logging.getLogger("apps.generation.relay")

PING_INTERVAL = 15.0
FIRST_TOKEN_WAIT = 15.0
DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"
_PING_MARK = object()


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


UPSTREAM_MESSAGES: dict[str, str | Promise] = {
    # What a client is told about an upstream failure: never the upstream's own text (it can name the
    # upstream model, hosts or accounts); the details go to the log and to the record (operators, admin).
    "upstream_timeout": gettext_lazy("The model provider did not answer in time."),
    "upstream_rate_limited": gettext_lazy("The model provider is rate limiting requests; please retry later."),
    "upstream_connect_error": gettext_lazy("The model provider could not be reached."),
    "upstream_model_not_found": gettext_lazy("The model is not available at its provider right now."),
    "upstream_server_error": gettext_lazy("The model provider failed."),
    "upstream_bad_request": gettext_lazy("The model provider refused the request."),
    "upstream_auth_error": gettext_lazy("The model provider refused this service's credentials."),
    "upstream_protocol_error": gettext_lazy("The model provider answered something this service cannot read."),
    "circuit_open": gettext_lazy("The model's providers are failing right now; please retry later."),
    "upstream_loading": gettext_lazy("The model is loading; please retry in a few seconds."),
}


def upstream_message(code: str) -> str:
    """The client-facing message of an upstream failure code (a generic one for unknown codes)."""
    return str(UPSTREAM_MESSAGES.get(code) or _("The model provider failed."))


def upstream_api_error(exc: BaseException) -> ApplicationError:
    """The client-facing error for a failed upstream call (502, 504, 429 with Retry-After, 503 busy,
    loading or every connection's circuit open, with Retry-After).
    Its message is generic; the upstream's own text is logged (and kept in the record for operators)."""
    if isinstance(exc, ConcurrencyLimited):
        return ApplicationError(
            _("The model is busy right now; please retry shortly."),
            status_code=503,
            code="busy",
            headers={"Retry-After": str(max(1, int(exc.retry_after)))},
        )
    assert isinstance(exc, UpstreamError)
    logger.warning("upstream failure %s (%s): %s", exc.code, exc.client_status, exc.message)
    headers = {}
    if isinstance(exc, UpstreamRateLimited | UpstreamLoading):
        headers["Retry-After"] = str(max(1, int((exc.retry_after or 1) + 0.999)))
    elif isinstance(exc, CircuitOpen):
        headers["Retry-After"] = retry_after_header(exc.retry_after)
    return ApplicationError(upstream_message(exc.code), status_code=exc.client_status, code=exc.code, headers=headers)


class Finish(Protocol):
    """Settles or releases and completes the record (and, for roleplay, the chat): synchronous,
    idempotent per generation (`generation_finish`, `roleplay_finish`)."""

    def __call__(self, *, prepared: Any, outcome: Outcome) -> Finished: ...


class PlanFinish(Protocol):
    """Decides a generation's end without writing (`generation_finish_plan`); None: `finish` does it all."""

    def __call__(self, *, prepared: Any, outcome: Outcome) -> FinishPlan | None: ...


async def respond(
    prepared: Prepared,
    finish: Finish,
    *,
    stream: bool,
    relay_class: type[Relay] | None = None,
    finish_plan: PlanFinish | None = None,
    finished_on_loop: Callable[[], Awaitable[None]] | None = None,
) -> StreamingHttpResponse | dict[str, Any]:
    """Call the model for a prepared generation and answer: an SSE stream, or the JSON body at the end.

    `finish` completes the record and the billing (and, for roleplay, the chat) exactly once. With
    `finish_plan`, a settlement runs as one statement on the event loop (`apps.core.db_async`), then
    `finished_on_loop` (what `finish` does besides); `finish` on a database thread does the rest
    (releases, a hold found inactive).
    """
    routed = RoutedCall(
        targets=prepared.targets,
        build=prepared.request_for,
        redis_url=settings.REDIS_URL,
        can_use=prepared.covered_by_hold,
        breaker=breaker(),
    )
    relay = (relay_class or Relay)(prepared, routed, finish, finish_plan, finished_on_loop)
    if stream:
        primed = await relay.prime()
        response = StreamingHttpResponse(relay.events(primed), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response
    return await relay.complete()


class Relay:
    """Drives one routed upstream call and collects what it produced."""

    def __init__(
        self,
        prepared: Prepared,
        routed: RoutedCall,
        finish: Finish,
        finish_plan: PlanFinish | None = None,
        finished_on_loop: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.prepared = prepared
        self.routed = routed
        self.finish = finish
        self.finish_plan = finish_plan
        self.finished_on_loop = finished_on_loop
        self.content: list[str] = []
        self.reasoning: list[str] = []
        self.finish_reason: str | None = None
        self.usage: Any = None
        self.ttft_ms: int | None = None
        self.finished: Finished | None = None
        self._deltas = routed.stream()
        self._pending: asyncio.Future[Delta] | None = None
        self._started = time.perf_counter()
        self._ended = False  # the upstream stream finished while priming
        # metered billing: output characters relayed, and how many the hold pays for (None: unmetered)
        self.output_chars = 0
        self.stopped_by_balance = False
        self._allowance: int | None = None
        self._metered_target: Any = None
        # the total deadline (below the hold's lifetime, so the hold never expires under a running call)
        self._deadline = self._started + settings.GENERATION_MAX_SECONDS
        self.stopped_by_deadline = False

    # -- upstream side -----------------------------------------------------------------------------
    async def next_delta(self, silence: float | None) -> Delta | object | None:
        """The next delta (cut where the user's funds end), `_PING_MARK` after `silence` seconds without
        one, None at the end — also right after a cut, the upstream request then cancelled."""
        if self.stopped_by_balance:
            await self.close_upstream()
            return None
        left = self._deadline - time.perf_counter()
        if left <= 0:  # the total deadline: what was delivered stays, and is charged
            self.finish_reason = "length"
            self.stopped_by_deadline = True
            await self.close_upstream()
            return None
        task = self._pending or self._fetch()
        if not task.done():
            pings = silence is not None and silence < left
            done, _pending = await asyncio.wait((task,), timeout=silence if pings else left)
            if not done:
                return _PING_MARK if pings else await self.next_delta(silence)  # else the deadline came first
        self._pending = None
        try:
            delta = task.result()
        except StopAsyncIteration:
            return None
        delta = await self._metered(delta)
        self._collect(delta)
        return delta

    def _fetch(self) -> asyncio.Task[Delta]:
        """Start fetching the next delta, kept in `_pending` until it is taken. The task starts eagerly:
        when the delta is already at hand (parsed from a read received earlier) it is done on return,
        without a trip through the event loop, a timer or `asyncio.wait`."""
        self._pending = asyncio.Task(anext(self._deltas), loop=asyncio.get_running_loop(), eager_start=True)
        return self._pending

    def _at_hand(self) -> bool:
        """Whether `next_delta` would return a delta at once: it has arrived, and taking it needs
        neither a database step (a hold extension) nor closing the upstream (a cut, the deadline).
        An upstream failure or the end is not "at hand": what was gathered goes out before them."""
        if self.stopped_by_balance or time.perf_counter() >= self._deadline:
            return False
        task = self._pending or self._fetch()
        if not task.done() or task.cancelled() or task.exception() is not None:
            return False
        delta = task.result()
        size = len(delta.reasoning) + len(delta.content)
        if not size:
            return True
        target = self.routed.target
        allowance = self._allowance if target is self._metered_target else self.prepared.output_allowance(target)
        return allowance is None or self.output_chars + size <= allowance

    async def _metered(self, delta: Delta) -> Delta:
        """Count the delta's characters against the hold; past it, extend the hold (a database step) and,
        when nothing more can be held, keep exactly the affordable characters (reasoning first, as it
        was generated first) and stop with `finishReason: length`."""
        size = len(delta.reasoning) + len(delta.content)
        if not size:
            return delta
        target = self.routed.target
        if target is not self._metered_target:  # the first text (fallbacks switch only before it)
            self._metered_target = target
            self._allowance = self.prepared.output_allowance(target)
        wanted = self.output_chars + size
        if self._allowance is not None and wanted > self._allowance:
            self._allowance = await db_sync_to_async(generation_extend)(
                prepared=self.prepared, target=target, output_chars=wanted
            )
        if self._allowance is None or wanted <= self._allowance:
            self.output_chars = wanted
            return delta
        keep = max(0, self._allowance - self.output_chars)
        reasoning = delta.reasoning[:keep]
        content = delta.content[: keep - len(reasoning)]
        self.output_chars += len(reasoning) + len(content)
        self.stopped_by_balance = True
        self.finish_reason = "length"
        return Delta(content, reasoning, None, delta.usage)

    def _collect(self, delta: Delta) -> None:
        if (delta.content or delta.reasoning) and self.ttft_ms is None:
            self.ttft_ms = int((time.perf_counter() - self._started) * 1000)
        if delta.content:
            self.content.append(delta.content)
        if delta.reasoning:
            self.reasoning.append(delta.reasoning)
        if delta.finish_reason and not self.stopped_by_balance:
            self.finish_reason = delta.finish_reason
        if delta.usage is not None:
            self.usage = delta.usage

    async def close_upstream(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            with suppress(BaseException):
                await self._pending
            self._pending = None
        with suppress(BaseException):
            await self._deltas.aclose()

    # -- record side -------------------------------------------------------------------------------
    async def settle(self, status: str, error: BaseException | None = None) -> Finished:
        """Finish the record and the billing once; shielded so a second cancellation cannot skip it."""
        if self.finished is not None:
            return self.finished
        outcome = Outcome(
            status=status,
            target=self.routed.target,
            content="".join(self.content),
            reasoning="".join(self.reasoning),
            finish_reason=self.finish_reason or ("stop" if status == Generation.Status.SUCCEEDED else None),
            usage=self.usage,
            error_code=getattr(error, "code", type(error).__name__ if error else ""),
            error_message=getattr(error, "message", str(error)) if error else "",
            ttft_ms=self.ttft_ms,
            attempts=list(self.routed.attempts),
            stopped_by_balance=self.stopped_by_balance,
        )
        self.finished = await asyncio.shield(self._finish(outcome))
        generation_observe(prepared=self.prepared, outcome=outcome, finished=self.finished)
        return self.finished

    async def _finish(self, outcome: Outcome) -> Finished:
        """A settlement as one statement on the event loop when it can be; else `finish` on a thread."""
        finished = await self._settled_on_loop(outcome) if self.finish_plan is not None else None
        if finished is None:
            finished = await db_sync_to_async(self.finish)(prepared=self.prepared, outcome=outcome)
        return finished

    async def _settled_on_loop(self, outcome: Outcome) -> Finished | None:
        """The settlement's one statement on the loop's connection; None when the step needs a thread (a
        release, a round trip before the statement, a hold the statement found no longer active)."""
        assert self.finish_plan is not None
        try:
            plan = self.finish_plan(prepared=self.prepared, outcome=outcome)
            statement = plan.attempt() if plan is not None else None
        except SynchronousOnlyOperation:  # a settings cache to refresh first
            return None
        if plan is None or statement is None:
            return None
        finished = plan.read(await db_async.fetchone(statement))
        if finished is not None and self.finished_on_loop is not None:
            await self.finished_on_loop()
        return finished

    def final_event(self) -> dict[str, Any]:
        assert self.finished is not None
        return {
            "content": "",
            "finishReason": self.finish_reason or "stop",
            "generationId": self.prepared.generation_id,
            "model": self.finished.model,
            "usage": self.finished.usage,
            "duration": self.finished.duration_ms,
            "consumption": self.finished.consumption,
            **self.prepared.answer_fields(),
        }

    # -- the non-streamed answer -------------------------------------------------------------------
    async def complete(self) -> dict[str, Any]:
        """One non-streamed call: the JSON body of the answer once the record is finished. An upstream
        failure finishes the record (released, not charged) and raises the client-facing error.

        When the hold covers the worst case the upstream answers in one piece (metered afterwards, for
        an upstream that ignores `max_tokens`); otherwise it is streamed internally, so that the
        output is cut — and the upstream request cancelled — exactly where the user's funds end."""
        try:
            if self.prepared.hold_covers_worst:
                try:
                    completion = await asyncio.wait_for(self.routed.complete(), settings.GENERATION_MAX_SECONDS)
                except TimeoutError:
                    raise UpstreamTimeout(
                        f"no answer within the {settings.GENERATION_MAX_SECONDS} s a generation may take"
                    ) from None
                delivered = await self._metered(Delta(completion.content, completion.reasoning))
                self.content = [delivered.content]
                self.reasoning = [delivered.reasoning] if delivered.reasoning else []
                if not self.stopped_by_balance:
                    self.finish_reason = completion.finish_reason
                self.usage = completion.usage
            else:
                while await self.next_delta(None) is not None:
                    pass
        except (UpstreamError, ConcurrencyLimited) as exc:
            await self.close_upstream()
            await self.settle(Generation.Status.FAILED, exc)
            raise upstream_api_error(exc) from None
        except asyncio.CancelledError:
            await self.close_upstream()
            await self.settle(Generation.Status.CANCELLED)
            raise
        except Exception as exc:  # a bug of ours: release the hold now rather than at the sweep, then 500
            await self.close_upstream()
            await self.settle(Generation.Status.FAILED, exc)
            raise
        return self.answer(await self.settle(Generation.Status.SUCCEEDED))

    # -- the wire format (this API's; `apps.openai_api` has OpenAI's) ----------------------------------
    def answer(self, finished: Finished) -> dict[str, Any]:
        """The JSON body of a non-streamed answer."""
        content, reasoning = "".join(self.content), "".join(self.reasoning)
        body: dict[str, Any] = {"content": content}
        if reasoning:
            body["reasoning"] = reasoning
        body.update(
            generationId=self.prepared.generation_id,
            model=finished.model,
            usage=finished.usage,
            finishReason=self.finish_reason or "stop",
            duration=finished.duration_ms,
            consumption=finished.consumption,
        )
        body.update(self.prepared.answer_fields())
        return body

    def end_events(self) -> list[bytes]:
        """The events after the last delta of a stream that succeeded."""
        return [sse(self.final_event()), DONE]

    def error_events(self, error: ApplicationError) -> list[bytes]:
        """The events that end a stream the upstream broke off."""
        return [sse({"content": "", "error": envelope(error.status_code, error.message)}), DONE]

    def delta_event(self, delta: Delta) -> bytes | None:
        if not delta.content and not delta.reasoning:
            return None
        payload: dict[str, Any] = {"content": delta.content}
        if delta.reasoning:
            payload["reasoning"] = delta.reasoning
        return sse(payload)

    async def prime(self) -> list[bytes]:
        """Wait (up to FIRST_TOKEN_WAIT) for the first text so that a call failing before its first
        token is answered as a plain JSON error. Raises `ApplicationError` in that case (record finished)."""
        events: list[bytes] = []
        deadline = time.perf_counter() + FIRST_TOKEN_WAIT
        try:
            while not self.content and not self.reasoning:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    events.append(PING)
                    break
                delta = await self.next_delta(remaining)
                if delta is _PING_MARK:
                    events.append(PING)
                    break
                if delta is None:
                    self._ended = True
                    break
                event = self.delta_event(delta)  # type: ignore[arg-type]
                if event:
                    events.append(event)
        except (UpstreamError, ConcurrencyLimited) as exc:
            await self.close_upstream()
            await self.settle(Generation.Status.FAILED, exc)
            raise upstream_api_error(exc) from None
        except asyncio.CancelledError:
            await self.close_upstream()
            await self.settle(Generation.Status.CANCELLED)
            raise
        except Exception as exc:  # a bug of ours: release the hold now rather than at the sweep
            await self.close_upstream()
            await self.settle(Generation.Status.FAILED, exc)
            raise
        return events

    async def events(self, primed: list[bytes]) -> AsyncIterator[bytes]:
        """The SSE body: primed events, then live deltas with pings, the final event and `[DONE]`.

        Events at hand together (several deltas parsed from one upstream read) are yielded as one
        piece: one ASGI message and one socket write instead of one per event. No event waits for a
        later one: what was gathered is yielded before the relay waits for the upstream."""
        status = Generation.Status.CANCELLED
        error: BaseException | None = None
        batch = list(primed)
        SSE_STREAMS_OPEN.inc()
        try:
            while not self._ended:
                if batch and not self._at_hand():
                    yield b"".join(batch)
                    batch.clear()
                delta = await self.next_delta(PING_INTERVAL)
                if delta is None:
                    break
                if delta is _PING_MARK:
                    batch.append(PING)
                    continue
                event = self.delta_event(delta)  # type: ignore[arg-type]
                if event:
                    batch.append(event)
            if batch:
                yield b"".join(batch)
                batch.clear()
            status = Generation.Status.SUCCEEDED
        except (UpstreamError, ConcurrencyLimited) as exc:
            status, error = Generation.Status.FAILED, exc
        except Exception as exc:
            status = Generation.Status.FAILED
            await self.close_upstream()
            await self.settle(status, exc)
            raise
        finally:
            SSE_STREAMS_OPEN.dec()
            if status != Generation.Status.SUCCEEDED:
                await self.close_upstream()
            # An upstream failure is never charged, even after some text was relayed (SPEC §9).
            await self.settle(status, error)
        yield b"".join(self.error_events(upstream_api_error(error)) if error is not None else self.end_events())
