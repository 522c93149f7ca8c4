"""Reads of resumable generations: a user's job, its text so far, the final event of an ended job."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils.functional import Promise
from django.utils.translation import gettext_lazy

from apps.core.api.exceptions import envelope
from apps.generation.jobs.events import EventLogUnavailable
from apps.generation.jobs.log import delivered_text, event_log
from apps.generation.models import ChatMessage, Generation, GenerationJob
from apps.generation.relay import upstream_message
from apps.providers.adapters import UpstreamError


def job_get_owned(*, user: Any, job_id: str) -> GenerationJob | None:
    """The user's job with its generation record (None for another user's: a 404, as for a missing one)."""
    if not job_id.startswith("job_") or len(job_id) > 40:
        return None
    return GenerationJob.objects.select_related("generation").filter(public_id=job_id, user_id=user.pk).first()


WORKER_LOST = "worker_lost"
JOBS_UNAVAILABLE = "jobs_unavailable"
JOB_ERRORS: dict[str, tuple[int, Promise]] = {
    WORKER_LOST: (
        503,
        gettext_lazy("The generation stopped: the worker running it was lost. The delivered text was charged."),
    ),
    "hold_expired": (503, gettext_lazy("The generation waited too long for a worker; nothing was charged.")),
    JOBS_UNAVAILABLE: (503, gettext_lazy("Background generations are unavailable right now; nothing was charged.")),
}


def job_error(code: str) -> tuple[int, str]:
    """The status and client-facing message of a job's own error code (upstream codes excepted)."""
    status, message = JOB_ERRORS.get(code, (502, gettext_lazy("The generation failed.")))
    return status, str(message)


def _upstream_statuses() -> dict[str, int]:
    found: dict[str, int] = {}
    pending = [UpstreamError]
    while pending:
        cls = pending.pop()
        found[cls.code] = cls.client_status
        pending += cls.__subclasses__()
    return found


UPSTREAM_STATUS = _upstream_statuses()
"""The status each upstream failure code is answered with (`UpstreamError.client_status`, as
`relay.upstream_api_error`): a job's recorded code gives its error the same status."""


@dataclass(frozen=True, slots=True)
class JobText:
    content: str
    reasoning: str


def job_text(*, job: GenerationJob) -> JobText:
    """The text so far: the record's once the job ended, its delivered events while it runs."""
    if job.status in GenerationJob.TERMINAL:
        return JobText(job.generation.content, job.generation.reasoning)
    try:
        content, reasoning, _model = delivered_text(event_log().entries(job.public_id))
    except EventLogUnavailable:
        content = reasoning = ""
    return JobText(content, reasoning)


def job_error_of(job: GenerationJob) -> dict[str, Any] | None:
    """The client-facing error of an ended job (the envelope), None when it did not fail."""
    if job.status != GenerationJob.Status.FAILED:
        return None
    code = job.error_code or job.generation.error_code
    if code.startswith("upstream_"):
        return envelope(UPSTREAM_STATUS.get(code, 502), upstream_message(code), code=code)
    status, message = job_error(code)
    return envelope(status, message, code=code or "failed")


def message_id_of(record: Generation) -> int | None:
    """The chat message a roleplay generation wrote (None for impersonate and unpaid turns)."""
    if record.mode != Generation.Mode.ROLEPLAY:
        return None
    return ChatMessage.objects.filter(generation_id=record.public_id).values_list("pk", flat=True).first()


def job_final_event(*, job_id: str) -> dict[str, Any]:
    """The final event of an ended job, from its records (as its worker would have published it)."""
    job = GenerationJob.objects.select_related("generation").get(public_id=job_id)
    record = job.generation
    event: dict[str, Any] = {
        "content": "",
        "status": job.status,
        "finishReason": record.finish_reason or None,
        "generationId": record.public_id,
        "model": record.model_used,
        "usage": record.usage(),
        "duration": record.duration_ms,
        "consumption": record.consumption().as_api(),
    }
    if record.mode == Generation.Mode.ROLEPLAY:
        event["messageId"] = message_id_of(record)
    error = job_error_of(job)
    if error is not None:
        event["error"] = error
    return event
