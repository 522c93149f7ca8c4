from __future__ import annotations

import abc
import asyncio
import functools
from dataclasses import replace
from typing import Any, Protocol, cast

from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.http import Http404, HttpResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import auth_cache_keys
from apps.accounts.permissions import CanGenerateWriting
from apps.billing.api import ConsumptionSerializer
from apps.billing.charges import count_chars
from apps.billing.selectors import available_get, available_read, available_statement
from apps.core import db_async
from apps.core.api.fields import MAX_SCALAR_CHARS, ScalarToString, char_value
from apps.core.api.pagination import PagePagination
from apps.core.api.renderers import EventStreamRenderer, JSONRenderer, dumps
from apps.core.api.serializers import StaticSerializer
from apps.core.api.throttling import ScopedRateThrottle, UserRateThrottle, count_on_loop
from apps.core.api.views import AsyncAPIView, peek_json, request_user
from apps.core.cache import fetched_on_loop, prefetched, prefetched_values
from apps.core.db import db_sync_to_async
from apps.generation import selectors, services
from apps.generation.models import Generation
from apps.generation.relay import Relay, respond, upstream_message
from apps.prompts.selectors import prompt_cache_key
from apps.providers.tokens import estimate_tokens
from apps.providers.types import ChatMessage, Role

MAX_TEXT = 200_000


class HistoryMessageSerializer(StaticSerializer):
    role = serializers.ChoiceField(choices=["user", "assistant", "system"])
    content = serializers.CharField(max_length=MAX_TEXT, allow_blank=True, trim_whitespace=False)
    name = serializers.CharField(max_length=100, required=False, allow_blank=True)


class WritingInputSerializer(StaticSerializer):
    promptId = serializers.IntegerField(min_value=1, max_value=2**62)
    parameters = serializers.DictField(child=ScalarToString(), required=False, default=dict)
    userInput = serializers.CharField(
        max_length=MAX_TEXT, required=False, allow_blank=True, default="", trim_whitespace=False
    )
    modelId = serializers.CharField(max_length=100, required=False)
    temperature = serializers.FloatField(min_value=0, max_value=2, required=False, default=0.7)
    maxTokens = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, default=False)
    # DRF stubs: many=True also takes ListSerializer's max_length.
    history = HistoryMessageSerializer(many=True, required=False, default=list, max_length=1000)  # type: ignore[call-arg]

    @staticmethod
    def fast_request(data: Any) -> services.WritingRequest | None:
        return writing_request_fast(data)

    def to_request(self) -> services.WritingRequest:
        data = self.validated_data
        return services.WritingRequest(
            prompt_id=data["promptId"],
            parameters=data["parameters"],
            user_input=data["userInput"],
            model_id=data.get("modelId") or settings.DEFAULT_MODEL_ID,
            temperature=data["temperature"],
            max_tokens=data.get("maxTokens"),
            stream=data["stream"],
            history=tuple(ChatMessage(m["role"], m["content"], m.get("name") or None) for m in data["history"]),
        )


_ROLES = frozenset({"user", "assistant", "system"})


def _history_fast(items: Any) -> tuple[ChatMessage, ...] | None:
    if type(items) is not list or len(items) > 1000:
        return None
    history = []
    for item in items:
        role = item.get("role") if type(item) is dict else None
        if type(role) is not str or role not in _ROLES:  # (a dict or list is not even hashable)
            return None
        content = char_value(item.get("content"), max_length=MAX_TEXT)
        name = char_value(item["name"], max_length=100, trim=True) if "name" in item else ""
        if content is None or name is None:
            return None
        history.append(ChatMessage(cast(Role, role), content, name or None))
    return tuple(history)


def writing_request_fast(data: Any) -> services.WritingRequest | None:
    """`WritingInputSerializer(data=data).to_request()` for a body whose every field is of the plain JSON
    type the field expects (what clients send), without DRF's field machinery; None for any other body,
    which DRF then validates (and refuses or converts) as always. `tests/generation/
    test_writing_fast_path.py` checks that both give the same request."""
    if type(data) is not dict:
        return None
    get = data.get
    prompt_id, temperature, max_tokens, stream = (
        get("promptId"),
        get("temperature", 0.7),
        get("maxTokens"),
        get("stream", False),
    )
    if type(prompt_id) is not int or not 1 <= prompt_id <= 2**62:
        return None
    if type(temperature) not in (int, float) or not 0 <= temperature <= 2:
        return None
    if max_tokens is not None and (type(max_tokens) is not int or not 1 <= max_tokens <= 1_000_000):
        return None
    if type(stream) is not bool:
        return None
    user_input = char_value(get("userInput", ""), max_length=MAX_TEXT)
    model_id = char_value(data["modelId"], max_length=100, trim=True, allow_blank=False) if "modelId" in data else ""
    parameters = get("parameters", {})
    if user_input is None or model_id is None or type(parameters) is not dict:
        return None
    if not all(type(v) is str and len(v) <= MAX_SCALAR_CHARS for v in parameters.values()):
        return None
    history = _history_fast(get("history", []))
    if history is None:
        return None
    return services.WritingRequest(
        prompt_id=prompt_id,
        parameters=dict(parameters),
        user_input=user_input,
        model_id=model_id or settings.DEFAULT_MODEL_ID,
        temperature=float(temperature),
        max_tokens=max_tokens,
        stream=stream,
        history=history,
    )


class UsageSerializer(serializers.Serializer):
    promptTokens = serializers.IntegerField()
    completionTokens = serializers.IntegerField()
    totalTokens = serializers.IntegerField()


class WritingOutputSerializer(serializers.Serializer):
    content = serializers.CharField()
    reasoning = serializers.CharField(required=False)
    generationId = serializers.CharField()
    model = serializers.CharField()
    usage = UsageSerializer()
    finishReason = serializers.ChoiceField(choices=["stop", "length", "content_filter"])
    duration = serializers.IntegerField(help_text="milliseconds")
    consumption = ConsumptionSerializer()


SSE_DESCRIPTION = (
    '`text/event-stream`: one `data: {"content": "…"}` event per upstream delta (plus `reasoning` when the '
    'model thinks aloud), then `data: {"content": "", "finishReason", "generationId", "model", "usage", '
    '"duration", "consumption"}`, then `data: [DONE]`. `: ping` comments every 15 s of silence. Errors before '
    'the stream are JSON with their status; after it, `data: {"content": "", "error": {statusCode, message, '
    "error}}` then `data: [DONE]`."
)


async def available_on_loop(user_id: int) -> int:
    """`billing.selectors.available_get` from the event loop: its statement on the loop's connection
    (on a thread when its reading needs a round trip the loop cannot make)."""
    try:
        return available_read(await db_async.fetchone(available_statement(user_id=user_id)))  # type: ignore[arg-type]  # the statement always answers a row
    except SynchronousOnlyOperation:
        return await db_sync_to_async(available_get)(user_id=user_id)


_ACCEPTS_FIRST = frozenset({"*/*", "application/json"})  # an empty Accept is a 406 from DRF


class GenerationRequest(Protocol):
    """What an input serializer's ``to_request()`` builds (`WritingRequest`, `RoleplayRequest`)."""

    @property
    def stream(self) -> bool: ...


class RequestSerializer[ReqT: GenerationRequest](Protocol):
    def __init__(self, *, data: Any) -> None: ...
    def is_valid(self, *, raise_exception: bool = ...) -> bool: ...
    def to_request(self) -> ReqT: ...


class GenerationView[ReqT: GenerationRequest, PrepT: services.Prepared](AsyncAPIView, abc.ABC):
    """Common to the generation endpoints: the `generation` rate limit, SSE content negotiation, and
    the request path — authentication, permission, rate limit, validation and `open` (prompt or chat,
    assembly, hold, record) in one synchronous step, then the upstream call on the event loop, then
    `finish`. Subclasses name their permission, input serializer, `open` and `finish`; with `open_plan`
    and `finish_plan` as well, a warm call on PostgreSQL does all of it on the event loop (`_open`,
    `Relay._finish`), falling back to the synchronous steps whenever a round trip remains."""

    throttle_classes = (UserRateThrottle, ScopedRateThrottle)
    throttle_scope = "generation"
    renderer_classes = (JSONRenderer, EventStreamRenderer)
    initial_in_handler = frozenset({"post"})
    input_serializer: type[RequestSerializer[ReqT]]
    stream = False  # the `/stream` endpoints always stream; the others when the body says so
    relay_class: type[Relay] = Relay  # the wire format of the answer

    @abc.abstractmethod
    def open(self, user: Any, req: ReqT) -> PrepT:
        """Validate against the database, assemble, place the hold, create the record (synchronous)."""

    @abc.abstractmethod
    def finish(self, *, prepared: PrepT, outcome: services.Outcome) -> services.Finished:
        """Settle or release, complete the record (and the chat): exactly once (synchronous)."""

    def prefetch_keys(self, request: Request) -> list[str]:
        """The cache entries this call reads before the upstream call, fetched in one round trip (the
        token's and its permissions'; subclasses add theirs)."""
        return auth_cache_keys(request)

    def open_plan(self, user: Any, req: ReqT) -> services.OpenPlan[PrepT] | None:
        """`open` up to its hold, for the hold to be placed on the event loop (`apps.core.db_async`).
        None (the default): `open` runs on a database thread."""
        return None

    def finish_plan(self, *, prepared: PrepT, outcome: services.Outcome) -> services.FinishPlan | None:
        """`finish` decided, for its settlement to run on the event loop; None (the default): `finish`
        runs on a database thread."""
        return None

    async def opened_on_loop(self, prepared: PrepT, stream: bool) -> None:
        """After the hold placed from the event loop (`open_plan`): what `open` does besides (nothing)."""

    async def finished_on_loop(self, prepared: PrepT) -> None:
        """After a settlement on the event loop (`finish_plan`): what `finish` does besides (nothing)."""

    def perform_content_negotiation(self, request: Request, force: bool = False) -> Any:
        """DRF's negotiation, its common answer found without parsing: a client that accepts JSON (or
        anything) and sends no query string gets the first renderer, as DRF would choose."""
        meta = request.META
        if not meta.get("QUERY_STRING") and meta.get("HTTP_ACCEPT", "*/*") in _ACCEPTS_FIRST:
            renderer = self.renderer_classes[0]()
            return renderer, renderer.media_type
        return super().perform_content_negotiation(request, force)

    def get_throttles(self) -> list[Any]:
        counted = self._counted_throttles
        return counted if counted is not None else super().get_throttles()

    _counted_throttles: list[Any] | None = None  # the rate limits this request was counted in, on the loop

    def _validated(self, request: Request) -> ReqT:
        fast = getattr(self.input_serializer, "fast_request", None)  # plain bodies without DRF's fields
        req = fast(request.data) if fast is not None else None
        if req is None:
            data = self.input_serializer(data=request.data)
            data.is_valid(raise_exception=True)
            req = data.to_request()
        if self.stream and not req.stream:  # a `/stream` endpoint streams whatever the body says
            req = replace(req, stream=True)  # type: ignore[type-var]  # the requests are dataclasses
        return req

    def _checked_open(self, request: Request, values: dict[str, Any] | None = None) -> tuple[PrepT, bool]:
        """Authentication, permission, rate limits, validation and `open`, on a database thread (with the
        cache entries fetched ahead: `values` when the event loop read them already)."""
        ahead = prefetched(self.prefetch_keys(request)) if values is None else prefetched_values(values)
        with ahead:
            self.initial(request)
            req = self._validated(request)
            return self.open(request.user, req), req.stream

    async def _open(self, request: Request) -> tuple[PrepT, bool]:
        """`_checked_open` without leaving the event loop where it can: the cache entries read on the loop's
        Redis connection, the checks and the assembly run in place (no round trip is left to make: any
        other one raises `SynchronousOnlyOperation` first, and the step is redone on a database thread
        from the start, with what was read and counted), the rate limits counted in one script call, and
        the hold placed by one statement on the loop's database connection."""
        if not db_async.enabled() or type(self).open_plan is GenerationView.open_plan:
            return await db_sync_to_async(self._checked_open)(request)
        values = await fetched_on_loop(self.prefetch_keys(request))
        unread = dict(values) if values is not None else None
        try:
            with prefetched_values(values, on_loop=True):
                self._counted_throttles = []  # counted below, on the loop
                self.initial(request)
            self._counted_throttles = None
            throttles = self.get_throttles()
            if await count_on_loop(throttles, request, self):
                self._counted_throttles = throttles
            with prefetched_values(values, on_loop=True):
                self.check_throttles(request)
                req = self._validated(request)
                plan = self.open_plan(request.user, req)
                attempt = plan.attempt() if plan is not None else None
        except SynchronousOnlyOperation:  # a round trip the loop cannot make: all of it on a thread
            if self._counted_throttles == []:
                self._counted_throttles = None
            return await db_sync_to_async(self._checked_open)(request, unread)
        if plan is None:  # pragma: no cover - open_plan is overridden for this view
            return await db_sync_to_async(self.open)(request.user, req), req.stream
        hold = None
        if attempt is not None:  # the statement runs to its end even if the client goes away meanwhile
            hold = attempt.read(await asyncio.shield(db_async.fetchone(attempt.statement)))
        prepared = plan.opened(hold) if hold is not None else await db_sync_to_async(plan.run)()
        await self.opened_on_loop(prepared, req.stream)
        return prepared, req.stream

    async def generate(self, request: Request) -> HttpResponse | StreamingHttpResponse:
        prepared, wants_stream = await self._open(request)
        answer = await respond(
            prepared,
            self.finish,
            stream=self.stream or wants_stream,
            relay_class=self.relay_class,
            finish_plan=self.finish_plan if db_async.enabled() else None,
            finished_on_loop=functools.partial(self.finished_on_loop, prepared),
        )
        if isinstance(answer, dict):  # rendered here: no DRF Response, renderer and second HttpResponse
            response = HttpResponse(dumps(answer), content_type=JSONRenderer.media_type)
            self.decorate(prepared, response, answer)
            return response
        self.decorate(prepared, answer, None)
        return answer

    def decorate(
        self, prepared: PrepT, response: HttpResponse | StreamingHttpResponse, body: dict[str, Any] | None
    ) -> None:
        """Add headers to the answer (`body` is None for a stream, whose headers go out first).

        `X-Generation-ID` names the record before the first event: a client that stops reading a stream
        (a browser's Stop) can still look up what it was charged (`GET generations/{id}`)."""
        response["X-Generation-ID"] = prepared.generation_id


class WritingView(GenerationView[services.WritingRequest, services.Prepared]):
    permission_classes = (CanGenerateWriting,)
    input_serializer = WritingInputSerializer

    def prefetch_keys(self, request: Request) -> list[str]:
        keys = super().prefetch_keys(request)
        body = peek_json(request)
        prompt_id = body.get("promptId") if body else None
        if keys and type(prompt_id) is int and prompt_id > 0:
            keys.append(prompt_cache_key(prompt_id))
        return keys

    def open(self, user: Any, req: services.WritingRequest) -> services.Prepared:
        return services.writing_prepare(user=user, req=req)

    def open_plan(self, user: Any, req: services.WritingRequest) -> services.OpenPlan[services.Prepared]:
        return services.writing_open_plan(user=user, req=req)

    def finish(self, *, prepared: services.Prepared, outcome: services.Outcome) -> services.Finished:
        return services.generation_finish(prepared=prepared, outcome=outcome)

    def finish_plan(self, *, prepared: services.Prepared, outcome: services.Outcome) -> services.FinishPlan:
        return services.generation_finish_plan(prepared=prepared, outcome=outcome)


class WritingGenerateView(WritingView):
    """API 21: generate with a prompt (JSON; `stream: true` answers like the stream endpoint)."""

    @extend_schema(
        request=WritingInputSerializer,
        responses={
            200: OpenApiResponse(
                WritingOutputSerializer, description="JSON, or SSE when `stream` is true. " + SSE_DESCRIPTION
            )
        },
    )
    async def post(self, request: Request) -> Any:
        return await self.generate(request)


class WritingStreamView(WritingView):
    """API 21: generate with a prompt, streamed as server-sent events."""

    stream = True

    @extend_schema(
        request=WritingInputSerializer,
        responses={(200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description=SSE_DESCRIPTION)},
    )
    async def post(self, request: Request) -> Any:
        return await self.generate(request)


# --- preview ---------------------------------------------------------------------------------------


class PreviewMessageSerializer(serializers.Serializer):
    role = serializers.CharField()
    content = serializers.CharField()
    name = serializers.CharField(required=False, help_text="only when the message has one")
    chars = serializers.IntegerField(help_text="Unicode code points (the unit of billing)")
    tokens = serializers.IntegerField(help_text="estimated (⌈characters / 3.35⌉, or the model's tokenizer)")


class PreviewBudgetSerializer(serializers.Serializer):
    limit = serializers.IntegerField(help_text="prompt tokens available: the model's context − maxTokens")
    used = serializers.IntegerField(help_text="estimated tokens of the assembled messages")


class PreviewCostSerializer(serializers.Serializer):
    inputChars = serializers.IntegerField(help_text="characters of the messages sent (billed input)")
    inputCost = serializers.IntegerField(help_text="exact: 0 below BILLING_INPUT_FREE_THRESHOLD, else ⌈chars / ratio⌉")
    outputCostPer1000Chars = serializers.IntegerField(help_text="⌈1000 / outputRatio⌉; 0 for a member or free model")
    worstCaseCost = serializers.IntegerField(help_text="inputCost + output cost of maxTokens × hold characters/token")
    # named as in the 402's body (DRF's metaclass takes declared fields off the class: no clash at run time)
    required = serializers.IntegerField(  # type: ignore[assignment]
        help_text="needed to start (input and one output character): else 402"
    )
    memberBenefit = serializers.BooleanField(help_text="an active member: output is free")
    isFreeModel = serializers.BooleanField()


class PreviewAvailableSerializer(serializers.Serializer):
    dailyFreeRemaining = serializers.IntegerField()
    paidAvailable = serializers.IntegerField(help_text="paid balance less what running generations hold")
    total = serializers.IntegerField()
    sufficient = serializers.BooleanField(help_text="total ≥ required: the generation would start (no 402)")
    maxOutputChars = serializers.IntegerField(
        allow_null=True, help_text="the most output characters the funds pay for; null when output is free"
    )


class WritingPreviewOutputSerializer(serializers.Serializer):
    model = serializers.CharField()
    maxTokens = serializers.IntegerField()
    messages = PreviewMessageSerializer(many=True)
    totalChars = serializers.IntegerField()
    totalTokens = serializers.IntegerField()
    budget = PreviewBudgetSerializer()
    historyDropped = serializers.IntegerField()
    dropped = PreviewMessageSerializer(many=True, help_text="history left out by the budget, oldest first")
    cost = PreviewCostSerializer()
    available = PreviewAvailableSerializer()


def _message_out(message: ChatMessage) -> dict[str, Any]:
    item: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.name:
        item["name"] = message.name
    item["chars"] = count_chars(message.content)
    item["tokens"] = estimate_tokens(message.content)
    return item


def preview_out(preview: services.WritingPreview) -> dict[str, Any]:
    plan, cost = preview.plan, preview.cost
    messages = [_message_out(m) for m in preview.messages]
    return {
        "model": preview.model_id,
        "maxTokens": plan.max_tokens,
        "messages": messages,
        "totalChars": cost.input_chars,
        "totalTokens": sum(m["tokens"] for m in messages),
        "budget": {"limit": plan.budget, "used": plan.assembled.prompt_tokens},
        "historyDropped": plan.assembled.history_dropped,
        "dropped": [_message_out(m) for m in plan.dropped],
        "cost": {
            "inputChars": cost.input_chars,
            "inputCost": cost.input_cost,
            "outputCostPer1000Chars": cost.output_cost_per_1000,
            "worstCaseCost": cost.worst_case_cost,
            "required": cost.required,
            "memberBenefit": cost.is_member and not cost.is_free_model,
            "isFreeModel": cost.is_free_model,
        },
        "available": {
            "dailyFreeRemaining": cost.daily_free_remaining,
            "paidAvailable": cost.paid_available,
            "total": cost.available,
            "sufficient": cost.available >= cost.required,
            "maxOutputChars": cost.max_output_chars,
        },
    }


class WritingPreviewView(APIView):
    """The exact messages `generation/writing` would send for this body, their size and cost, and what
    the user has: no upstream call, no hold, no charge, nothing stored."""

    permission_classes = (CanGenerateWriting,)

    @extend_schema(
        request=WritingInputSerializer,
        responses={200: WritingPreviewOutputSerializer},
        description=(
            "The same body as `POST generation/writing` (`stream` is ignored) and the same validation and "
            "errors, except 402: nothing is held, so a body that could not be paid answers 200 with "
            "`available.sufficient: false`. `messages` are those the primary model would receive — after "
            "references, macros, budget trimming and the connection's post-processing."
        ),
    )
    def post(self, request: Request) -> Response:
        data = WritingInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(preview_out(services.writing_preview(user=request.user, req=data.to_request())))


# --- generation records ----------------------------------------------------------------------------


class GenerationSummarySerializer(serializers.Serializer):
    generationId = serializers.CharField(source="public_id")
    mode = serializers.CharField()
    status = serializers.CharField()
    promptId = serializers.IntegerField(source="prompt_id", allow_null=True)
    chatId = serializers.IntegerField(source="chat_id", allow_null=True)
    modelRequested = serializers.CharField(source="model_requested")
    model = serializers.CharField(source="model_used")
    stream = serializers.BooleanField()
    finishReason = serializers.CharField(source="finish_reason")
    inputChars = serializers.IntegerField(source="input_chars")
    outputChars = serializers.IntegerField(source="output_chars")
    usage = serializers.SerializerMethodField()
    consumption = serializers.SerializerMethodField()
    duration = serializers.IntegerField(source="duration_ms", allow_null=True)
    timeToFirstToken = serializers.IntegerField(source="ttft_ms", allow_null=True)
    error = serializers.SerializerMethodField()
    createdAt = serializers.DateTimeField(source="created_at")
    finishedAt = serializers.DateTimeField(source="finished_at", allow_null=True)

    def get_usage(self, obj: Generation) -> dict[str, Any]:
        return {**obj.usage(), "estimated": obj.usage_estimated}

    def get_consumption(self, obj: Generation) -> dict[str, Any]:
        return obj.consumption().as_api()

    def get_error(self, obj: Generation) -> dict[str, str] | None:
        if not obj.error_code:
            return None
        # the upstream's own text stays with operators (admin); users get what the answer told them
        message = upstream_message(obj.error_code) if obj.error_code.startswith("upstream_") else obj.error_message
        return {"code": obj.error_code, "message": message}


class GenerationDetailSerializer(GenerationSummarySerializer):
    content = serializers.CharField()
    reasoning = serializers.CharField()
    temperature = serializers.FloatField()
    maxTokens = serializers.IntegerField(source="max_tokens")
    historyDropped = serializers.IntegerField(source="history_dropped")
    attempts = serializers.SerializerMethodField()

    def get_attempts(self, obj: Generation) -> list[dict[str, str]]:
        """The failed attempts before the answer (model, error code, the generic message of that code)."""
        return [
            {
                "model": str(a.get("model", "")),
                "error": str(a.get("error", "")),
                "message": upstream_message(str(a.get("error", ""))),
            }
            for a in obj.attempts or []
            if isinstance(a, dict)
        ]


class GenerationQuerySerializer(serializers.Serializer):
    mode = serializers.ChoiceField(choices=Generation.Mode.choices, required=False)
    status = serializers.ChoiceField(choices=Generation.Status.choices, required=False)


class GenerationListView(APIView):
    @extend_schema(
        parameters=[
            OpenApiParameter("mode", str, enum=Generation.Mode.values),
            OpenApiParameter("status", str, enum=Generation.Status.values),
        ],
        responses=GenerationSummarySerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = GenerationQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = selectors.generation_list(user=request_user(request), **query.validated_data)
        paginator = PagePagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(GenerationSummarySerializer(page, many=True).data)


class GenerationDetailView(APIView):
    @extend_schema(responses=GenerationDetailSerializer)
    def get(self, request: Request, generation_id: str) -> Response:
        record = selectors.generation_get_owned(user=request.user, public_id=generation_id)
        if record is None:
            raise Http404
        return Response(GenerationDetailSerializer(record).data)
