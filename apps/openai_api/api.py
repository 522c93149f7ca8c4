"""`/v1/chat/completions`, `/v1/completions`, `/v1/models`: OpenAI's wire format over this service's
tokens, models and billing. Unknown body fields are ignored (clients send many); the sampling
parameters go to the model's connection where it supports them (docs/providers.md)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from django.http import HttpResponse, StreamingHttpResponse
from django.utils.translation import gettext_lazy as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.authentication import OpenAIKeyAuthentication
from apps.accounts.permissions import CanGenerateChat
from apps.core.api.fields import char_value
from apps.core.api.serializers import StaticSerializer
from apps.generation.api import GenerationView, available_on_loop
from apps.generation.services import Finished, FinishPlan, OpenPlan, Outcome, generation_finish_plan
from apps.openai_api import errors, services
from apps.openai_api.relay import OpenAIRelay
from apps.openai_api.selectors import model_get, models_list
from apps.providers.adapters.base import SAMPLING_PARAMS
from apps.providers.types import ChatMessage

MAX_TEXT = 200_000
MAX_MESSAGES = 2_000
MAX_STOPS = 16
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "user"}
ROLES["function"] = "user"


class OpenAIView:
    """Tokens of either scope, by `Authorization: Bearer` or `x-api-key`; errors in OpenAI's shape."""

    authentication_classes: Sequence[type[BaseAuthentication]] = (OpenAIKeyAuthentication,)

    def get_exception_handler(self) -> Callable[..., Response]:
        return errors.exception_handler


# --- request bodies ------------------------------------------------------------------------------


def _text_of(content: Any, path: str) -> str:
    """A message's content: a string, or OpenAI content parts whose `text` parts are joined by a line
    break (images and other parts are not sent: the upstream request is text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping):
                raise serializers.ValidationError({path: [_("A content part must be an object.")]})
            if part.get("type", "text") == "text":
                value = part.get("text", "")
                if not isinstance(value, str):
                    raise serializers.ValidationError({path: [_("A text part's text must be a string.")]})
                texts.append(value)
        text = "\n".join(texts)
    else:
        raise serializers.ValidationError({path: [_("Content must be a string or a list of content parts.")]})
    if len(text) > MAX_TEXT:
        raise serializers.ValidationError(
            {path: [_("Ensure this field has no more than %(max)s characters.") % {"max": MAX_TEXT}]}
        )
    return text


def _messages(raw: Any) -> tuple[ChatMessage, ...]:
    if not isinstance(raw, list) or not raw:
        raise serializers.ValidationError({"messages": [_("A non-empty list of messages is required.")]})
    if len(raw) > MAX_MESSAGES:
        raise serializers.ValidationError(
            {"messages": [_("Ensure this field has no more than %(max)s elements.") % {"max": MAX_MESSAGES}]}
        )
    out = []
    for index, message in enumerate(raw):
        if not isinstance(message, Mapping):
            raise serializers.ValidationError({f"messages.{index}": [_("A message must be an object.")]})
        role = ROLES.get(str(message.get("role")))
        if role is None:
            raise serializers.ValidationError(
                {f"messages.{index}.role": [_("Use one of system, developer, user, assistant, tool.")]}
            )
        name = message.get("name")
        name = name[:100] if isinstance(name, str) and name else None
        out.append(ChatMessage(role, _text_of(message.get("content"), f"messages.{index}.content"), name))  # type: ignore[arg-type]
    return tuple(out)


@extend_schema_field(
    {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "maxItems": MAX_STOPS}]}
)
class StopField(serializers.Field):
    """`stop`: a string or a list of strings (up to 16, each up to 200 characters)."""

    def to_internal_value(self, data: Any) -> tuple[str, ...]:
        values = [data] if isinstance(data, str) else data
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise serializers.ValidationError(_("Must be a string or a list of strings."))
        if len(values) > MAX_STOPS or any(len(v) > 200 for v in values):
            raise serializers.ValidationError(_("At most 16 stop strings of up to 200 characters."))
        return tuple(v for v in values if v)

    def to_representation(self, value: Any) -> Any:
        return list(value)


class _CallSerializer(StaticSerializer):
    model = serializers.CharField(max_length=200)
    stream = serializers.BooleanField(required=False, default=False)
    stream_options = serializers.DictField(required=False, allow_null=True, default=None)
    max_tokens = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True)
    max_completion_tokens = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True)
    temperature = serializers.FloatField(min_value=0, max_value=2, required=False, allow_null=True)
    stop = StopField(required=False, allow_null=True)
    n = serializers.IntegerField(required=False, allow_null=True)
    # sampling parameters (OpenAI's and those SillyTavern sends to a custom endpoint)
    top_p = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)
    top_k = serializers.IntegerField(min_value=0, max_value=1_000_000, required=False, allow_null=True)
    min_p = serializers.FloatField(min_value=0, max_value=1, required=False, allow_null=True)
    presence_penalty = serializers.FloatField(min_value=-2, max_value=2, required=False, allow_null=True)
    frequency_penalty = serializers.FloatField(min_value=-2, max_value=2, required=False, allow_null=True)
    repetition_penalty = serializers.FloatField(min_value=0, max_value=10, required=False, allow_null=True)
    seed = serializers.IntegerField(min_value=-(2**63), max_value=2**63 - 1, required=False, allow_null=True)
    reasoning_effort = serializers.ChoiceField(
        choices=["minimal", "low", "medium", "high"], required=False, allow_null=True
    )
    include_reasoning = serializers.BooleanField(required=False, allow_null=True)

    def validate_n(self, value: int | None) -> int | None:
        if value not in (None, 1):
            raise serializers.ValidationError(_("Only n = 1 is supported."))
        return value

    def validate_stream_options(self, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and not isinstance(value.get("include_usage", False), bool):
            raise serializers.ValidationError({"include_usage": [_("Must be a valid boolean.")]})
        return value

    def call(self, *, messages: tuple[ChatMessage, ...], prompt: str | None = None) -> services.ChatCall:
        data = self.validated_data
        max_tokens = data.get("max_completion_tokens") or data.get("max_tokens")
        temperature = data.get("temperature")
        options = data.get("stream_options") or {}
        return services.ChatCall(
            model_id=data["model"],
            messages=messages,
            max_tokens=max_tokens,
            temperature=1.0 if temperature is None else temperature,
            stream=data["stream"],
            include_usage=bool(options.get("include_usage")),
            stop=data.get("stop") or (),
            sampling={k: data[k] for k in SAMPLING_PARAMS if data.get(k) is not None},
            prompt=prompt,
        )


class ChatCompletionSerializer(_CallSerializer):
    messages = serializers.JSONField(help_text="OpenAI chat messages: `{role, content, name?}`.")

    def to_request(self) -> services.ChatCall:
        return self.call(messages=_messages(self.validated_data["messages"]))

    @staticmethod
    def fast_request(data: Any) -> services.ChatCall | None:
        return chat_request_fast(data)


_FAST_KEYS = frozenset({"model", "messages", "stream", "stream_options", "max_tokens", "temperature"})


def chat_request_fast(data: Any) -> services.ChatCall | None:
    """`ChatCompletionSerializer(data=data).to_request()` for the common body — only `model`, `messages`,
    `stream`, `stream_options`, `max_tokens`, `temperature`, each of the plain JSON type its field expects —
    without DRF's field machinery (DRF's fields were ~5 % of a `/v1` call's CPU); None for any other body,
    which DRF then validates as always. The messages go through `_messages`, as after DRF (its errors are
    the same). `tests/openai_api/test_chat_fast_path.py` checks that both give the same call."""
    if type(data) is not dict or not data.keys() <= _FAST_KEYS or type(data.get("messages")) is not list:
        return None
    model = char_value(data.get("model"), max_length=200, trim=True, allow_blank=False)
    stream, options = data.get("stream", False), data.get("stream_options")
    max_tokens, temperature = data.get("max_tokens"), data.get("temperature")
    if model is None or type(stream) is not bool:
        return None
    if options is not None and (type(options) is not dict or type(options.get("include_usage", False)) is not bool):
        return None
    if max_tokens is not None and (type(max_tokens) is not int or not 1 <= max_tokens <= 1_000_000):
        return None
    if temperature is not None and (type(temperature) not in (int, float) or not 0 <= temperature <= 2):
        return None
    return services.ChatCall(
        model_id=model,
        messages=_messages(data["messages"]),
        max_tokens=max_tokens,
        temperature=1.0 if temperature is None else float(temperature),
        stream=stream,
        include_usage=bool(options and options.get("include_usage")),
    )


class CompletionSerializer(_CallSerializer):
    prompt = serializers.JSONField(help_text="The prompt: a string (or a list of exactly one string).")

    def validate_prompt(self, value: Any) -> str:
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if not isinstance(value, str):
            raise serializers.ValidationError(_("Must be a string."))
        if len(value) > MAX_TEXT * 5:
            raise serializers.ValidationError(_("The prompt is too long."))
        return value

    def to_request(self) -> services.ChatCall:
        prompt = self.validated_data["prompt"]
        return self.call(messages=(ChatMessage("user", prompt),), prompt=prompt)


# --- generation -----------------------------------------------------------------------------------

SSE = (
    "`text/event-stream` when `stream` is true: OpenAI chunks (`delta.content`, `delta.reasoning_content`), a "
    "last chunk with `finish_reason`, a usage chunk with `usage.consumption` when `stream_options.include_usage`, "
    "then `data: [DONE]`; `: ping` comments on silence. Headers: `X-Consumption-Total` (JSON answers) and "
    "`X-Balance-Remaining` (characters left; for a stream, after its hold)."
)


class _GenerationView(OpenAIView, GenerationView[services.ChatCall, services.ChatPrepared]):
    permission_classes = (CanGenerateChat,)
    relay_class = OpenAIRelay

    def open(self, user: Any, req: services.ChatCall) -> services.ChatPrepared:
        return services.chat_prepare(user=user, call=req)

    def open_plan(self, user: Any, req: services.ChatCall) -> OpenPlan[services.ChatPrepared]:
        return services.chat_open_plan(user=user, call=req)

    async def opened_on_loop(self, prepared: services.ChatPrepared, stream: bool) -> None:
        if stream:  # as `chat_prepare`: the stream's headers say what is left once the hold is placed
            prepared.balance_remaining = await available_on_loop(prepared.user_id)

    def finish(self, *, prepared: services.ChatPrepared, outcome: Outcome) -> Finished:
        return services.chat_finish(prepared=prepared, outcome=outcome)

    def finish_plan(self, *, prepared: services.ChatPrepared, outcome: Outcome) -> FinishPlan:
        return generation_finish_plan(prepared=prepared, outcome=outcome)

    async def finished_on_loop(self, prepared: services.ChatPrepared) -> None:
        prepared.balance_remaining = await available_on_loop(prepared.user_id)  # as `chat_finish`

    def decorate(
        self,
        prepared: services.ChatPrepared,
        response: HttpResponse | StreamingHttpResponse,
        body: dict[str, Any] | None,
    ) -> None:
        if body is not None:
            response["X-Consumption-Total"] = str(body["usage"]["consumption"]["totalCost"])
        if prepared.balance_remaining is not None:
            response["X-Balance-Remaining"] = str(prepared.balance_remaining)


class ChatCompletionsView(_GenerationView):
    """OpenAI Chat Completions over this service's models, billed in characters."""

    input_serializer = ChatCompletionSerializer

    @extend_schema(
        operation_id="v1_chat_completions",
        tags=["OpenAI-compatible"],
        request=ChatCompletionSerializer,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="`chat.completion`, or SSE. " + SSE)},
    )
    async def post(self, request: Request) -> Any:
        return await self.generate(request)


class CompletionsView(_GenerationView):
    """OpenAI (legacy) text completions, on models whose connection does text completion."""

    input_serializer = CompletionSerializer

    @extend_schema(
        operation_id="v1_completions",
        tags=["OpenAI-compatible"],
        request=CompletionSerializer,
        responses={200: OpenApiResponse(OpenApiTypes.OBJECT, description="`text_completion`, or SSE. " + SSE)},
    )
    async def post(self, request: Request) -> Any:
        return await self.generate(request)


# --- models ---------------------------------------------------------------------------------------


class ModelsView(OpenAIView, APIView):
    """The models this token may use, in OpenAI's list shape plus this service's fields."""

    @extend_schema(operation_id="v1_models_list", tags=["OpenAI-compatible"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        return Response({"object": "list", "data": models_list()})


class ModelDetailView(OpenAIView, APIView):
    @extend_schema(operation_id="v1_models_retrieve", tags=["OpenAI-compatible"], responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, model_id: str) -> Response:
        model = model_get(model_id=model_id)
        if model is None:
            raise services.model_not_found(model_id)
        return Response(model)
