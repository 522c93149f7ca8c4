"""Running jobs: one event loop per process carries every job the process runs.

A Celery worker (`make worker`: the thread pool, one thread per task waiting on its job's future)
or, without `REDIS_URL`, the server process itself hands jobs to `runner()`: a daemon thread with an
asyncio loop on which each job is one task — the same async relay as the synchronous endpoints, so a
few hundred concurrent generations cost a few hundred coroutines, not processes. The loop also beats
for its running jobs (`GENERATION_JOB_HEARTBEAT_SECONDS`; a job whose beat stops is recovered by the
housekeeping) and listens for cancellations (Redis pub/sub; the beat reads the flag as a backstop).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
from contextlib import suppress
from typing import Any, cast

from celery.signals import worker_shutdown
from django.conf import settings
from django.db import OperationalError

from apps.core.api.exceptions import envelope
from apps.core.db import db_sync_to_async
from apps.generation.jobs import services
from apps.generation.jobs.events import DONE, EventLogUnavailable
from apps.generation.jobs.log import dumps, event_log, stream_ttl
from apps.generation.jobs.selectors import job_error
from apps.generation.models import Generation, GenerationJob
from apps.generation.relay import Relay, upstream_api_error
from apps.providers.adapters import Delta, UpstreamError
from apps.providers.limits import ConcurrencyLimited
from apps.providers.routing import RoutedCall

logger = logging.getLogger("apps.generation.jobs")

JOB_STATUS: dict[str, str] = {
    Generation.Status.SUCCEEDED: GenerationJob.Status.SUCCEEDED,
    Generation.Status.FAILED: GenerationJob.Status.FAILED,
    Generation.Status.CANCELLED: GenerationJob.Status.CANCELLED,
}


JOB_SLOT_WAIT_SECONDS = 120.0


class JobRelay(Relay):
    """The relay of a job: every delta goes to the job's event log instead of an HTTP response."""

    def __init__(self, started: services.Started, routed: RoutedCall) -> None:
        super().__init__(started.prepared, routed, services.finish_of(started.mode))
        self.job_id = started.job_id
        self.log = event_log()
        self._model_told = False
        self.error_code = ""

    async def publish(self, payload: dict[str, Any], *, last: bool = False) -> None:
        model, ttl = "", None
        if not self._model_told and not last:
            # the first text: its model (recovery prices what was delivered) and the stream's expiry
            model, ttl, self._model_told = self.routed.target.model_id, stream_ttl(), True
        await self.log.aappend(self.job_id, dumps(payload), model=model, ttl=stream_ttl() if last else ttl)

    async def run(self) -> str:
        """Generate to the end (or to a cancellation), settle once, publish the final event. Returns the
        generation's status. Cancelling the task is the owner's cancel: the job ends `cancelled`, the
        delivered text charged."""
        status: str = Generation.Status.CANCELLED
        error: BaseException | None = None
        try:
            while (delta := cast(Delta | None, await self.next_delta(None))) is not None:
                if delta.content or delta.reasoning:
                    payload: dict[str, Any] = {"content": delta.content}
                    if delta.reasoning:
                        payload["reasoning"] = delta.reasoning
                    try:
                        await self.publish(payload)
                    except EventLogUnavailable:  # readers never got it: not delivered, not charged
                        self._unsay(delta)
                        raise
            status = Generation.Status.SUCCEEDED
        except (UpstreamError, ConcurrencyLimited) as exc:
            status, error = Generation.Status.FAILED, exc
        except asyncio.CancelledError:
            status = Generation.Status.CANCELLED
        except Exception as exc:  # a bug of ours, or the event log went down: released, logged
            logger.exception("job %s failed", self.job_id)
            status, error = Generation.Status.FAILED, exc
        finally:
            if status != Generation.Status.SUCCEEDED:
                await self.close_upstream()
            await self.settle(status, error)
        if isinstance(error, UpstreamError | ConcurrencyLimited):
            self.error_code = upstream_api_error(error).code
        elif error is not None:
            self.error_code = "failed"
        with suppress(EventLogUnavailable):
            await self.publish(self._final(status, error), last=True)
        return status

    def _unsay(self, delta: Delta) -> None:
        if delta.content and self.content:
            self.content.pop()
        if delta.reasoning and self.reasoning:
            self.reasoning.pop()
        self.output_chars -= len(delta.content) + len(delta.reasoning)

    def _final(self, status: str, error: BaseException | None) -> dict[str, Any]:
        final = {**self.final_event(), "status": JOB_STATUS[status]}
        if status != Generation.Status.SUCCEEDED:  # `status` says why it ended
            final["finishReason"] = None
        if error is not None:
            if isinstance(error, UpstreamError | ConcurrencyLimited):
                api_error = upstream_api_error(error)
                final["error"] = envelope(api_error.status_code, api_error.message, code=api_error.code)
            else:
                code, (code_status, message) = "failed", job_error("failed")
                final["error"] = envelope(code_status, message, code=code)
        return final


async def run_job(job_id: str, *, worker: str, on_start: Any = None) -> str | None:
    """Run one job to its end; None when there was nothing to run (see `services.job_start`)."""
    started = await _with_retries(services.job_start, job_id=job_id, worker=worker)
    if started is None:
        return None
    routed = RoutedCall(
        targets=started.prepared.targets,
        build=started.prepared.request_for,
        redis_url=settings.REDIS_URL,
        can_use=started.prepared.covered_by_hold,
        # queued work waits for a free slot of a busy connection rather than failing like a live request
        slot_wait=JOB_SLOT_WAIT_SECONDS,
    )
    relay = JobRelay(started, routed)
    if on_start is not None:
        on_start()
    status = await relay.run()
    try:
        await asyncio.shield(
            _with_retries(
                services.job_end,
                job_id=job_id,
                attempt=started.attempt,
                status=JOB_STATUS[status],
                error_code=relay.error_code,
            )
        )
    except Exception:  # the record is settled; the job row is ended by recovery once its beat is stale
        logger.exception("job %s: ending its row failed", job_id)
    # `[DONE]` last, once the job's record says it ended; the events stay GENERATION_JOB_TTL_SECONDS more
    with suppress(EventLogUnavailable):
        await relay.log.aappend(job_id, DONE, ttl=settings.GENERATION_JOB_TTL_SECONDS)
    return status


async def _with_retries(step: Any, **kwargs: Any) -> Any:
    """A database step retried on a transient database error (a lock timeout, a dropped connection)."""
    for delay in (0.1, 0.5, 2.0):
        try:
            return await db_sync_to_async(step)(**kwargs)
        except OperationalError:
            logger.warning("job step %s failed; retrying in %s s", step.__name__, delay, exc_info=True)
            await asyncio.sleep(delay)
    return await db_sync_to_async(step)(**kwargs)


class Runner:
    """A daemon thread running an asyncio loop: the jobs of this process, their beat, their cancels."""

    def __init__(self) -> None:
        self.worker = services.worker_name()
        self.loop = asyncio.new_event_loop()
        self.running: dict[str, asyncio.Task[Any]] = {}
        self._ready = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True, name="generation-jobs")
        self.thread.start()
        self._ready.wait(10)
        atexit.register(self.stop)

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        # the loop keeps only weak references to its tasks: without these the listener was collected
        # while it waited on Redis (and cancels then relied on the beat alone)
        self._background = [self.loop.create_task(self._beat())]
        if settings.REDIS_URL:
            self._background.append(self.loop.create_task(self._listen()))
        self.loop.call_soon(self._ready.set)
        self.loop.run_forever()

    def stop(self, timeout: float = 5.0) -> None:
        """End the loop at process exit: its beat and listener are cancelled (jobs still running are
        cancelled too — they settle as cancelled, the delivered text charged — though a warm shutdown of
        a Celery worker waits for its tasks first), so nothing is left pending when the interpreter ends."""
        if self.loop.is_closed() or not self.thread.is_alive():
            return

        async def shutdown() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with suppress(Exception):
            asyncio.run_coroutine_threadsafe(shutdown(), self.loop).result(timeout)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)

    def submit(self, job_id: str) -> concurrent.futures.Future[str | None]:
        """Run the job on this runner; the future ends with the job."""
        return asyncio.run_coroutine_threadsafe(self._run(job_id), self.loop)

    def cancel(self, job_id: str) -> None:
        """Stop the job if it runs here (from any thread)."""
        self.loop.call_soon_threadsafe(self._cancel, job_id)

    def _cancel(self, job_id: str) -> None:
        task = self.running.get(job_id)
        if task is not None:
            task.cancel()

    async def _run(self, job_id: str) -> str | None:
        task = asyncio.current_task()
        assert task is not None

        def started() -> None:
            self.running[job_id] = task

        try:
            return await run_job(job_id, worker=self.worker, on_start=started)
        except Exception:  # a job that could not even start stays queued: logged, recovered by its beat
            logger.exception("job %s could not run", job_id)
            raise
        finally:
            self.running.pop(job_id, None)

    async def _beat(self) -> None:
        beat = db_sync_to_async(services.jobs_heartbeat)
        while True:
            await asyncio.sleep(settings.GENERATION_JOB_HEARTBEAT_SECONDS)
            if not self.running:
                continue
            try:
                for job_id in await beat(job_ids=list(self.running), worker=self.worker):
                    self._cancel(job_id)
            except Exception:  # the next beat tries again; a missed one is far from the stale limit
                logger.exception("job heartbeat failed")

    async def _listen(self) -> None:
        import redis.asyncio as aioredis

        while True:
            try:
                client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(services.CANCEL_CHANNEL)
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._cancel(message["data"].decode())
            except asyncio.CancelledError:
                raise
            except Exception:  # Redis restarted: subscribe again (the beat covers the gap)
                logger.warning("job cancel listener lost Redis; retrying")
                await asyncio.sleep(2)


_runner: Runner | None = None
_lock = threading.Lock()


def runner() -> Runner:
    """This process's runner (started on first use)."""
    global _runner
    if _runner is None:
        with _lock:
            if _runner is None:
                _runner = Runner()
    return _runner


@worker_shutdown.connect
def _stop_on_worker_shutdown(**kwargs: Any) -> None:
    """A Celery worker's warm shutdown (its tasks have ended): end the loop before the process does."""
    if _runner is not None:
        _runner.stop()


def _started() -> bool:
    return _runner is not None


runner.started = _started  # type: ignore[attr-defined]  # the services' LocalRunnerFactory protocol
services.use_local_runner(runner)  # type: ignore[arg-type]
