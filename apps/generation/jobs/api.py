"""Resumable generations over HTTP (docs/jobs.md): create (202), status, events (SSE, resumable), cancel."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from django.contrib.auth import get_user_model
from django.http import Http404, StreamingHttpResponse
from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.exceptions import AuthenticationFailed, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response

from apps.accounts.authentication import BearerTokenAuthentication
from apps.accounts.permissions import CanGenerateRoleplay, CanGenerateWriting
from apps.billing.api import ConsumptionSerializer
from apps.core.api.renderers import EventStreamRenderer, JSONRenderer
from apps.core.api.serializers import StaticSerializer
from apps.core.api.throttling import ScopedRateThrottle, UserRateThrottle
from apps.core.api.views import AsyncAPIView, request_user
from apps.core.db import db_sync_to_async
from apps.core.errors import ApplicationError
from apps.generation.api import WritingInputSerializer
from apps.generation.jobs import selectors, services
from apps.generation.jobs.events import START, EventLogUnavailable, valid_event_id
from apps.generation.jobs.log import event_log
from apps.generation.models import Generation, GenerationJob
from apps.generation.relay import PING, PING_INTERVAL
from apps.generation.roleplay.api import RoleplayInputSerializer

CANCEL_WAIT_SECONDS = 5.0
RETRY_MS = 3000  # EventSource's reconnection delay


def events_path(job_id: str) -> str:
    return f"/api/v1/generation/jobs/{job_id}/events"


def events_url(job: GenerationJob) -> str:
    """The job's event stream with a fresh read ticket: usable by `EventSource`, which cannot send headers."""
    return f"{events_path(job.public_id)}?ticket={services.job_ticket(job_id=job.public_id, user_id=job.user_id)}"


def job_out(job: GenerationJob) -> dict[str, Any]:
    """A job as the API shows it: status, the text so far, and once it ended its cost."""
    record = job.generation
    text = selectors.job_text(job=job)
    ended = job.status in GenerationJob.TERMINAL
    body: dict[str, Any] = {
        "jobId": job.public_id,
        "mode": job.mode,
        "status": job.status,
        "generationId": record.public_id,
        "eventsUrl": events_url(job),
        "content": text.content,
    }
    if text.reasoning:
        body["reasoning"] = text.reasoning
    body.update(
        finishReason=(record.finish_reason or None) if ended else None,
        model=record.model_used or None,
        usage=record.usage() if ended else None,
        consumption=record.consumption().as_api() if ended else None,
        error=selectors.job_error_of(job),
        createdAt=job.created_at,
        startedAt=job.started_at,
        finishedAt=job.finished_at,
    )
    if job.mode == Generation.Mode.ROLEPLAY:
        body["messageId"] = selectors.message_id_of(record) if ended else None
    return body


# --- serializers (input and the schema of the answers) ------------------------------------------------


class JobModeSerializer(StaticSerializer):
    mode = serializers.ChoiceField(choices=[Generation.Mode.WRITING, Generation.Mode.ROLEPLAY])


class JobCreatedSerializer(serializers.Serializer):
    jobId = serializers.CharField()
    status = serializers.ChoiceField(choices=GenerationJob.Status.choices)
    generationId = serializers.CharField()
    eventsUrl = serializers.CharField(help_text="the event stream, with a short-lived read ticket for EventSource")


class JobSerializer(JobCreatedSerializer):
    mode = serializers.ChoiceField(choices=[Generation.Mode.WRITING, Generation.Mode.ROLEPLAY])
    content = serializers.CharField(help_text="the text so far")
    reasoning = serializers.CharField(required=False)
    finishReason = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    usage = inline_serializer(
        "JobUsage",
        {
            "promptTokens": serializers.IntegerField(),
            "completionTokens": serializers.IntegerField(),
            "totalTokens": serializers.IntegerField(),
        },
        allow_null=True,
    )
    consumption = ConsumptionSerializer(allow_null=True, help_text="once the job ended")
    error = serializers.DictField(allow_null=True, help_text="the error envelope of a failed job, with its `code`")
    messageId = serializers.IntegerField(required=False, allow_null=True, help_text="roleplay")
    createdAt = serializers.DateTimeField()
    startedAt = serializers.DateTimeField(allow_null=True)
    finishedAt = serializers.DateTimeField(allow_null=True)


JOB_BODY_DOC = (
    "`mode` (`writing` or `roleplay`) plus the body of `POST /generation/writing` or `POST /generation/roleplay` "
    "(`stream` is ignored: a job's events are always streamed). Validated, held and refused (400, 404, 402) "
    "exactly as those endpoints; a queued job answers 202."
)
EVENTS_DOC = (
    "`text/event-stream` of the job from its start, or from after the event named by `Last-Event-ID` (what "
    "`EventSource` sends when it reconnects) or `?after=`. Every event has an `id:`; the deltas are "
    '`data: {"content": "…"}` (plus `reasoning`), then one final event with `status`, `finishReason`, '
    "`usage` and `consumption` (and `error` when the job failed), then `data: [DONE]`. `: ping` every 15 s "
    "of silence. 410 once the job's events expired (`GENERATION_JOB_TTL_SECONDS` after its end): the job "
    "itself stays readable."
)


# --- authentication by read ticket ---------------------------------------------------------------------


class JobTicketAuthentication(BaseAuthentication):
    """`?ticket=` signed for one job's events (the `eventsUrl` of the job): `EventSource` cannot send
    `Authorization`. Scoped to that job and expiring (`GENERATION_JOB_TICKET_SECONDS`)."""

    def authenticate(self, request: Request) -> tuple[Any, None] | None:
        ticket = request.query_params.get("ticket")
        if not ticket:
            return None
        job_id = str((request.parser_context or {}).get("kwargs", {}).get("job_id", ""))
        user_id = services.job_ticket_user(job_id=job_id, ticket=ticket[:500])
        user = get_user_model().objects.filter(pk=user_id, is_active=True).first() if user_id else None
        if user is None:
            raise AuthenticationFailed(
                _("The read ticket is invalid or has expired; get a fresh eventsUrl from the job.")
            )
        return user, None

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="api"'


class JobTicketScheme(OpenApiAuthenticationExtension):
    target_class = "apps.generation.jobs.api.JobTicketAuthentication"
    name = "jobTicket"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "apiKey", "in": "query", "name": "ticket"}


# --- views -----------------------------------------------------------------------------------------------

PERMISSIONS = {Generation.Mode.WRITING: CanGenerateWriting, Generation.Mode.ROLEPLAY: CanGenerateRoleplay}
INPUTS: dict[str, type[Any]] = {
    Generation.Mode.WRITING: WritingInputSerializer,
    Generation.Mode.ROLEPLAY: RoleplayInputSerializer,
}


def _owned(request: Request, job_id: str) -> GenerationJob:
    job = selectors.job_get_owned(user=request_user(request), job_id=job_id)
    if job is None:
        raise Http404
    return job


class JobCreateView(AsyncAPIView):
    """Validation, the hold and the queueing in one database step on the database threads (like the
    direct endpoints): a burst of jobs is prepared in parallel, not one at a time on Django's single
    thread for synchronous views."""

    throttle_classes = (UserRateThrottle, ScopedRateThrottle)
    throttle_scope = "generation"
    initial_in_handler = frozenset({"post"})

    @extend_schema(
        request=inline_serializer("JobCreate", {"mode": serializers.ChoiceField(choices=["writing", "roleplay"])}),
        description=JOB_BODY_DOC,
        responses={202: JobCreatedSerializer},
    )
    async def post(self, request: Request) -> Response:
        created = await db_sync_to_async(self._create)(request)
        return Response(created, status=202, headers={"Location": f"/api/v1/generation/jobs/{created['jobId']}"})

    def _create(self, request: Request) -> dict[str, Any]:
        self.initial(request)
        head = JobModeSerializer(data=request.data)
        head.is_valid(raise_exception=True)
        mode = head.validated_data["mode"]
        permission = PERMISSIONS[mode]()
        if not permission.has_permission(request, self):
            raise PermissionDenied(getattr(permission, "message", None))
        body = INPUTS[mode](data=request.data)
        body.is_valid(raise_exception=True)
        job = services.job_create(user=request.user, mode=mode, req=body.to_request())
        return {
            "jobId": job.public_id,
            "status": job.status,
            "generationId": job.generation_id,
            "eventsUrl": events_url(job),
        }


class JobDetailView(AsyncAPIView):
    @extend_schema(responses=JobSerializer)
    async def get(self, request: Request, job_id: str) -> Response:
        return Response(await db_sync_to_async(_owned_out)(request, job_id))


def _owned_out(request: Request, job_id: str) -> dict[str, Any]:
    return job_out(_owned(request, job_id))


class JobCancelView(AsyncAPIView):
    """Stop a job: the upstream call ends, the delivered text is charged, nothing more."""

    @extend_schema(request=None, responses=JobSerializer)
    async def post(self, request: Request, job_id: str) -> Response:
        job = await db_sync_to_async(_owned)(request, job_id)
        job = await db_sync_to_async(services.job_cancel)(job=job)
        if job.status not in GenerationJob.TERMINAL:  # wait a little for its worker to settle it
            await _wait_done(job.public_id, CANCEL_WAIT_SECONDS)
        return Response(await db_sync_to_async(_reloaded)(job.pk))


def _reloaded(pk: int) -> dict[str, Any]:
    return job_out(GenerationJob.objects.select_related("generation").get(pk=pk))


async def _wait_done(job_id: str, seconds: float) -> None:
    log, after = event_log(), START
    deadline = time.monotonic() + seconds
    try:
        while (left := deadline - time.monotonic()) > 0:
            entries = await log.aread(job_id, after, block=left)
            if any(e.done for e in entries):
                return
            if entries:
                after = entries[-1].id
    except EventLogUnavailable:
        return


class EventsUnavailable(ApplicationError):
    status_code = 410
    default_code = "events_expired"


class JobEventsView(AsyncAPIView):
    authentication_classes = (JobTicketAuthentication, BearerTokenAuthentication)
    renderer_classes = (JSONRenderer, EventStreamRenderer)

    @extend_schema(
        parameters=[
            OpenApiParameter("after", str, description="resume after this event id (`Last-Event-ID` wins)"),
            OpenApiParameter("ticket", str, description="the read ticket of `eventsUrl`"),
            OpenApiParameter("Last-Event-ID", str, location=OpenApiParameter.HEADER),
        ],
        responses={(200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description=EVENTS_DOC)},
    )
    async def get(self, request: Request, job_id: str) -> StreamingHttpResponse:
        job = await db_sync_to_async(_owned)(request, job_id)
        after = request.headers.get("Last-Event-ID") or request.query_params.get("after") or START
        if not valid_event_id(after):
            raise ApplicationError(
                _("The event id must look like 1733462400000-0 (an id: of this stream)."),
                extra={"details": {"after": [_("Not an event id of this stream.")]}},
            )
        log = event_log()
        try:
            exists = await log.aexists(job.public_id)
        except EventLogUnavailable:
            raise services.JobsUnavailable() from None
        if not exists and job.status in GenerationJob.TERMINAL:
            raise EventsUnavailable(
                _("The events of this job have expired; its result stays at GET /api/v1/generation/jobs/%(id)s.")
                % {"id": job.public_id}
            )
        response = StreamingHttpResponse(_events(job.public_id, after), content_type="text/event-stream")
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
        return response


async def _events(job_id: str, after: str) -> AsyncIterator[bytes]:
    """The job's events after `after`, live until `[DONE]`; pings on silence; ends when the stream
    expires under a reader of an ended job."""
    log = event_log()
    yield f"retry: {RETRY_MS}\n\n".encode()
    while True:
        try:
            entries = await log.aread(job_id, after, block=PING_INTERVAL)
        except EventLogUnavailable:
            return  # the client reconnects with Last-Event-ID (and gets a 503 until Redis is back)
        if not entries:
            yield PING
            if not await log.aexists(job_id) and await db_sync_to_async(_ended)(job_id):
                return
            continue
        for entry in entries:
            yield f"id: {entry.id}\ndata: {entry.data}\n\n".encode()
            if entry.done:
                return
        after = entries[-1].id


def _ended(job_id: str) -> bool:
    return GenerationJob.objects.filter(public_id=job_id, status__in=GenerationJob.TERMINAL).exists()
