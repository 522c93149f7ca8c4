"""Resumable generations (docs/jobs.md): a job is a prepared generation (hold placed, record created,
exactly as the synchronous endpoints do it) run by a worker instead of the request that asked for it.

The life of a job, each step a short transaction on the job's row:

* `job_create` — validate, prepare (402 and every 400 before anything is queued), store the prepared
  call in the job, queue it (a Celery task; in-process without `REDIS_URL`).
* `job_start` — a worker takes it (`queued` → `running`, one attempt more).
* `job_end` — the worker finished the generation (the record and the billing are settled first).
* `job_cancel` — the owner stops it: a queued job ends here, a running one is signalled.
* `job_recover` — the worker running it stopped beating (killed): the text it delivered is charged
  once and the job fails; a job that delivered nothing is queued once more.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import socket
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Protocol

from celery import current_app
from django.conf import settings
from django.core import signing
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.core.api.exceptions import envelope
from apps.core.errors import ApplicationError
from apps.generation import services as generation
from apps.generation.jobs.events import DONE, EventLogUnavailable
from apps.generation.jobs.log import delivered_text, dumps, event_log, stream_ttl
from apps.generation.jobs.selectors import JOBS_UNAVAILABLE, WORKER_LOST, job_final_event
from apps.generation.models import Generation, GenerationJob
from apps.generation.roleplay import services as roleplay
from apps.providers.selectors import model_chain
from apps.providers.types import ChatMessage

logger = logging.getLogger("apps.generation.jobs")

Status = GenerationJob.Status
MAX_ATTEMPTS = 2  # a job whose worker died before any output is run once more
TICKET_SALT = "generation.job.events"


class JobsUnavailable(ApplicationError):
    status_code = 503
    default_code = JOBS_UNAVAILABLE

    def __init__(self) -> None:
        super().__init__(
            _("Background generations are unavailable right now; please retry shortly or generate directly."),
            headers={"Retry-After": "5"},
        )


# --- the prepared call, stored in the job ------------------------------------------------------------


def prepared_dump(prepared: generation.Prepared) -> dict[str, Any]:
    """The prepared call as JSON: the model chain by id (the keys stay in the database), the messages,
    the limits and the hold. Roleplay adds its turn (plain values)."""
    data: dict[str, Any] = {
        "generationId": prepared.generation_id,
        "userId": prepared.user_id,
        "models": [t.model_id for t in prepared.targets],
        "messages": [[m.role, m.content, m.name] for m in prepared.messages],
        "maxTokens": prepared.max_tokens,
        "temperature": prepared.temperature,
        "holdAmount": prepared.hold_amount,
        "isMember": prepared.is_member,
        "historyDropped": prepared.history_dropped,
        "promptTokens": prepared.prompt_tokens_estimate,
        "holdCoversWorst": prepared.hold_covers_worst,
    }
    if isinstance(prepared, roleplay.RoleplayPrepared) and prepared.turn is not None:
        data["turn"] = dataclasses.asdict(prepared.turn)
    return data


def prepared_load(mode: str, data: dict[str, Any]) -> generation.Prepared:
    """The prepared call back, its model chain resolved again (`ApplicationError` when the model has
    been disabled since: the job then fails before calling anyone)."""
    chain = {t.model_id: t for t in model_chain(model_id=data["models"][0])}
    targets = [chain[m] for m in data["models"] if m in chain]
    common: dict[str, Any] = {
        "generation_id": data["generationId"],
        "user_id": data["userId"],
        "targets": targets,
        "messages": tuple(ChatMessage(role, content, name) for role, content, name in data["messages"]),
        "max_tokens": data["maxTokens"],
        "temperature": data["temperature"],
        "hold_amount": data["holdAmount"],
        "is_member": data["isMember"],
        "history_dropped": data["historyDropped"],
        "prompt_tokens_estimate": data["promptTokens"],
        "hold_covers_worst": data["holdCoversWorst"],
    }
    if mode == Generation.Mode.ROLEPLAY:
        turn = data.get("turn")
        return roleplay.RoleplayPrepared(**common, turn=roleplay.Turn(**turn) if turn else None)
    return generation.Prepared(**common)


def finish_of(mode: str) -> Callable[..., generation.Finished]:
    """The mode's finish step (the record, the billing and, for roleplay, the chat: exactly once)."""
    return roleplay.roleplay_finish if mode == Generation.Mode.ROLEPLAY else generation.generation_finish


# --- create, queue -----------------------------------------------------------------------------------


def job_create(*, user: Any, mode: str, req: Any) -> GenerationJob:
    """Prepare the generation as the synchronous endpoint does (its 400s, 404s and 402 come first:
    nothing is queued or held for a refused request), then queue it. 503 when jobs cannot run now
    (the event log is down): no hold is left behind."""
    log = event_log()
    try:
        log.ping()
    except EventLogUnavailable:
        logger.warning("jobs refused: the event log is unreachable")
        raise JobsUnavailable() from None
    req = dataclasses.replace(req, stream=True)
    prepared = (
        roleplay.roleplay_prepare(user=user, req=req)
        if mode == Generation.Mode.ROLEPLAY
        else generation.writing_prepare(user=user, req=req)
    )
    job = GenerationJob.objects.create(
        user_id=user.pk, generation_id=prepared.generation_id, mode=mode, payload=prepared_dump(prepared)
    )
    try:
        log.open(job.public_id, ttl=stream_ttl())
        job_enqueue(job.public_id)
    except Exception:
        logger.exception("job %s could not be queued", job.public_id)
        _abandon(job, prepared)
        raise JobsUnavailable() from None
    return job


GENERATION_JOB_TASK = "apps.generation.tasks.generation_job_run"


class LocalRunner(Protocol):
    def submit(self, job_id: str) -> Any: ...
    def cancel(self, job_id: str) -> None: ...


class LocalRunnerFactory(Protocol):
    def __call__(self) -> LocalRunner: ...
    def started(self) -> bool: ...


_local_runner: LocalRunnerFactory | None = None


def use_local_runner(factory: LocalRunnerFactory) -> None:
    """The process's runner (`apps.generation.jobs.runner`) registers itself here when it is imported:
    the services queue and cancel jobs through it without importing it (it imports them)."""
    global _local_runner
    _local_runner = factory


def local_runner() -> LocalRunner:
    if _local_runner is None:
        raise RuntimeError("apps.generation.jobs.runner was not imported (apps.generation.apps does it)")
    return _local_runner()


def job_enqueue(job_id: str) -> None:
    """Hand the job to a worker: Celery's `generation` queue, or this process's runner without a broker."""
    if settings.REDIS_URL:
        current_app.send_task(GENERATION_JOB_TASK, (job_id,), queue="generation", retry=False)
    else:
        local_runner().submit(job_id)


def _abandon(job: GenerationJob, prepared: generation.Prepared) -> None:
    """A job that could not be queued: release its hold, fail it (nothing ran)."""
    generation.generation_abandon(
        generation_id=prepared.generation_id, status=Generation.Status.FAILED, error_code=JOBS_UNAVAILABLE
    )
    GenerationJob.objects.filter(pk=job.pk).update(
        status=Status.FAILED, error_code=JOBS_UNAVAILABLE, payload={}, finished_at=timezone.now()
    )


# --- the worker's steps ------------------------------------------------------------------------------


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"[:200]


@dataclasses.dataclass(frozen=True, slots=True)
class Started:
    job_id: str
    mode: str
    attempt: int
    prepared: generation.Prepared


def job_start(*, job_id: str, worker: str) -> Started | None:
    """Take a queued job (`running`, one attempt more). None when there is nothing to run: the job ended
    (cancelled while queued, recovered), another worker is running it, or its hold expired while it
    waited (the job then fails here; nothing was called). A running job whose worker stopped beating
    is recovered first (a redelivered task after its worker died)."""
    now = timezone.now()
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().filter(public_id=job_id).first()
        if job is None or job.status in GenerationJob.TERMINAL:
            return None
        if job.status == Status.RUNNING:
            stale = job.heartbeat_at is None or job.heartbeat_at < now - _stale()
            if not stale:
                return None
        else:
            pending = Generation.objects.filter(public_id=job.generation_id, status=Generation.Status.PENDING)
            if not pending.exists():  # the hold expired while the job waited (the sweep failed the record)
                _end_locked(job, Status.FAILED, "hold_expired")
                transaction.on_commit(lambda: _publish_end(job_id, _ended_event(job_id)))
                return None
            try:
                prepared = prepared_load(job.mode, job.payload)
            except ApplicationError as exc:  # the model was disabled since
                code = exc.code
                transaction.on_commit(lambda: _fail_unstarted(job_id, code))
                return None
            job.status, job.attempts, job.worker = Status.RUNNING, job.attempts + 1, worker
            job.started_at = job.started_at or now
            job.heartbeat_at = now
            job.save(update_fields=["status", "attempts", "worker", "started_at", "heartbeat_at"])
            return Started(job_id, job.mode, job.attempts, prepared)
    job_recover(job_id=job_id)  # stale: the previous worker died
    return None


def _stale() -> timedelta:
    return timedelta(seconds=settings.GENERATION_JOB_STALE_SECONDS)


def _end_locked(job: GenerationJob, status: str, error_code: str = "") -> None:
    job.status, job.error_code, job.payload, job.finished_at = status, error_code[:50], {}, timezone.now()
    job.save(update_fields=["status", "error_code", "payload", "finished_at"])


def _fail_unstarted(job_id: str, error_code: str) -> None:
    """Release the hold of a job that cannot run (its model is gone) and fail it."""
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().filter(public_id=job_id).first()
        if job is None or job.status in GenerationJob.TERMINAL:
            return
        generation.generation_abandon(
            generation_id=job.generation_id, status=Generation.Status.FAILED, error_code=error_code
        )
        _end_locked(job, Status.FAILED, error_code)
    _publish_end(job_id, _ended_event(job_id))


def job_end(*, job_id: str, attempt: int, status: str, error_code: str = "") -> None:
    """The worker of `attempt` finished the job (its record and billing are settled)."""
    GenerationJob.objects.filter(public_id=job_id, attempts=attempt, status=Status.RUNNING).update(
        status=status, error_code=error_code[:50], payload={}, finished_at=timezone.now()
    )


def jobs_heartbeat(*, job_ids: list[str], worker: str) -> list[str]:
    """The running worker's beat for its jobs; returns those whose owner asked to cancel them."""
    if not job_ids:
        return []
    running = GenerationJob.objects.filter(public_id__in=job_ids, status=Status.RUNNING, worker=worker)
    running.update(heartbeat_at=timezone.now())
    return list(running.filter(cancel_requested=True).values_list("public_id", flat=True))


# --- cancel -----------------------------------------------------------------------------------------


def job_cancel(*, job: GenerationJob) -> GenerationJob:
    """Stop the job: a queued one ends now (its hold released, nothing charged); a running one is
    signalled — its worker stops the upstream and charges the delivered text. Idempotent."""
    with transaction.atomic():
        locked = GenerationJob.objects.select_for_update().get(pk=job.pk)
        if locked.status in GenerationJob.TERMINAL:
            return locked
        if locked.status == Status.QUEUED:
            generation.generation_abandon(generation_id=locked.generation_id, status=Generation.Status.CANCELLED)
            _end_locked(locked, Status.CANCELLED)
            transaction.on_commit(lambda: _publish_end(locked.public_id, _ended_event(locked.public_id)))
            return locked
        locked.cancel_requested = True
        locked.save(update_fields=["cancel_requested"])
        transaction.on_commit(lambda: cancel_signal(locked.public_id))
    return locked


CANCEL_CHANNEL = "ws:jobs:cancel"


def cancel_signal(job_id: str) -> None:
    """Tell the runner of the job to stop it: this process's runner directly, the others over Redis
    (their heartbeat also reads the flag, in case the message is missed)."""
    if _local_runner is not None and _local_runner.started():
        local_runner().cancel(job_id)
    if settings.REDIS_URL:
        try:
            import redis

            redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2).publish(
                CANCEL_CHANNEL, job_id
            )
        except redis.RedisError:
            logger.warning("cancel of job %s not published; its worker's heartbeat will see it", job_id)


# --- recovery ---------------------------------------------------------------------------------------


def jobs_reap(*, now: Any = None) -> dict[str, int]:
    """Recover the jobs whose worker stopped beating (housekeeping, every few seconds)."""
    now = now or timezone.now()
    stale = GenerationJob.objects.filter(status=Status.RUNNING, heartbeat_at__lt=now - _stale()).values_list(
        "public_id", flat=True
    )
    counts = {"failed": 0, "requeued": 0}
    for job_id in list(stale[:500]):
        result = job_recover(job_id=job_id, now=now)
        if result in counts:
            counts[result] += 1
    # queued jobs whose hold expired before any worker took them (the hold sweep failed their record)
    lost = GenerationJob.objects.filter(status=Status.QUEUED, generation__status=Generation.Status.FAILED)
    for job_id in list(lost.values_list("public_id", flat=True)[:500]):
        if GenerationJob.objects.filter(public_id=job_id, status=Status.QUEUED).update(
            status=Status.FAILED, error_code="hold_expired", payload={}, finished_at=now
        ):
            _publish_end(job_id, _ended_event(job_id))
            counts["failed"] += 1
    return counts


def job_recover(*, job_id: str, now: Any = None) -> str:
    """A running job whose worker is gone: queued again when it delivered nothing yet and has an attempt
    left; otherwise failed with `worker_lost`, the delivered text (what its readers were given: the
    event log) charged exactly once and the rest of the hold released. Returns what was done."""
    now = now or timezone.now()
    log = event_log()
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().filter(public_id=job_id).first()
        if job is None or job.status != Status.RUNNING:
            return "none"
        if job.heartbeat_at is not None and job.heartbeat_at >= now - _stale():
            return "alive"
        record = Generation.objects.filter(public_id=job.generation_id).values_list("status", flat=True).first()
        if record != Generation.Status.PENDING:  # the worker settled, then died before ending the job
            status: dict[str, str] = {
                Generation.Status.SUCCEEDED: Status.SUCCEEDED,
                Generation.Status.CANCELLED: Status.CANCELLED,
            }
            _end_locked(job, status.get(record or "", Status.FAILED), "" if record in status else WORKER_LOST)
            transaction.on_commit(lambda: _publish_end(job_id, _ended_event(job_id)))
            return "ended"
        content, reasoning, model = delivered_text(log.entries(job_id))
        if not content and not reasoning and job.attempts < MAX_ATTEMPTS and not job.cancel_requested:
            job.status, job.heartbeat_at, job.worker = Status.QUEUED, None, ""
            job.save(update_fields=["status", "heartbeat_at", "worker"])
            transaction.on_commit(lambda: job_enqueue(job_id))
            logger.warning("job %s: its worker was lost before any output; queued again", job_id)
            return "requeued"
        _settle_delivered(job, content, reasoning, model)
        _end_locked(job, Status.FAILED, WORKER_LOST)
        transaction.on_commit(lambda: _publish_end(job_id, _ended_event(job_id)))
    logger.warning("job %s: its worker was lost; %s characters delivered were charged", job_id, len(content))
    return "failed"


def _settle_delivered(job: GenerationJob, content: str, reasoning: str, model: str) -> None:
    """Charge what a lost worker delivered (priced on the model that wrote it) and release the rest;
    release everything when nothing was delivered."""
    error = "the worker running the job stopped (killed or lost) before the end"
    try:
        prepared = prepared_load(job.mode, job.payload) if model else None
    except ApplicationError:  # the model was removed since: the text is not charged (logged)
        logger.error(
            "job %s: model %s is gone; %s delivered characters not charged", job.public_id, model, len(content)
        )
        prepared = None
    target = next((t for t in prepared.targets if t.model_id == model), None) if prepared else None
    if prepared is None or target is None:
        generation.generation_abandon(
            generation_id=job.generation_id,
            status=Generation.Status.FAILED,
            error_code=WORKER_LOST,
            error_message=error,
        )
        return
    finish_of(job.mode)(
        prepared=prepared,
        outcome=generation.Outcome(
            status=Generation.Status.FAILED,
            target=target,
            content=content,
            reasoning=reasoning,
            error_code=WORKER_LOST,
            error_message=error,
            charge_delivered=True,
        ),
    )


# --- the last events of a job -----------------------------------------------------------------------


def _ended_event(job_id: str) -> dict[str, Any]:
    """The final event of a job ended outside its worker (cancelled while queued, recovered)."""
    return job_final_event(job_id=job_id)


def _publish_end(job_id: str, final: dict[str, Any]) -> None:
    """Append the final event and `[DONE]` (unless the log already ends), then let the log expire."""
    log = event_log()
    try:
        last = log.last(job_id)
        if last is not None and last.done:
            return
        log.append(job_id, dumps(final), ttl=stream_ttl())
        log.append(job_id, DONE, ttl=stream_ttl())
        log.expire(job_id, settings.GENERATION_JOB_TTL_SECONDS)
    except EventLogUnavailable:
        logger.warning("the end of job %s could not be published (event log down)", job_id)


# --- read tickets (EventSource cannot send Authorization) --------------------------------------------


def job_ticket(*, job_id: str, user_id: int) -> str:
    """A signed, short-lived ticket to read the events of one job (never the bearer token)."""
    return signing.dumps({"j": job_id, "u": user_id}, salt=TICKET_SALT, compress=False)


def job_ticket_user(*, job_id: str, ticket: str) -> int | None:
    """The user id a valid ticket for this job names; None when forged, expired or for another job."""
    try:
        data = signing.loads(ticket, salt=TICKET_SALT, max_age=settings.GENERATION_JOB_TICKET_SECONDS)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("j") != job_id or not isinstance(data.get("u"), int):
        return None
    return int(data["u"])


def error_envelope(status: int, message: str) -> dict[str, Any]:
    return envelope(status, message)
