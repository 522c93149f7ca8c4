"""Roleplay mode API: personas, chats, chat messages, generation (JSON / SSE), the free preview, and
the lorebook dry run (``POST /api/v1/lorebooks/activate``: it runs the turn's world info with a chat's or
persona's context, which live here)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.accounts.permissions import CanGenerateRoleplay
from apps.core.api.fields import WholeSerializer
from apps.core.api.pagination import PagePagination
from apps.core.api.serializers import StaticSerializer
from apps.core.api.views import request_user
from apps.generation import selectors
from apps.generation.api import MAX_TEXT, SSE_DESCRIPTION, GenerationView, WritingOutputSerializer
from apps.generation.models import Chat, ChatMessage, Persona
from apps.generation.roleplay import services
from apps.generation.services import Finished, Outcome
from apps.macros.limits import variables_too_large
from apps.worldviews.api import (
    ActivationOutputSerializer,
    ActivationSettingsSerializer,
    ChatMessageSerializer,
    EntryField,
    activation_out,
    budget_out,
    trace_out,
)
from apps.worldviews.engine import GENERATION_TYPES, ChatLine
from apps.worldviews.engine.entry_schema import MAX_ENTRIES

POSITION_NAMES = {int(value): label for value, label in Persona.Position.choices}
POSITION_VALUES = {label: value for value, label in POSITION_NAMES.items()}

# --------------------------------------------------------------------------------------- personas


class PersonaInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(max_length=MAX_TEXT, required=False, allow_blank=True, trim_whitespace=False)
    descriptionPosition = serializers.ChoiceField(choices=list(POSITION_VALUES), required=False)
    depth = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    role = serializers.ChoiceField(choices=services.ROLES, required=False)
    isDefault = serializers.BooleanField(required=False)

    def to_fields(self) -> dict[str, Any]:
        data = self.validated_data
        mapping = {"description": "description", "depth": "depth", "role": "role", "isDefault": "is_default"}
        fields = {model: data[api] for api, model in mapping.items() if api in data}
        if "name" in data:
            fields["name"] = data["name"]
        if "descriptionPosition" in data:
            fields["description_position"] = POSITION_VALUES[data["descriptionPosition"]]
        return fields


def persona_out(persona: Persona) -> dict[str, Any]:
    return {
        "id": persona.pk,
        "name": persona.name,
        "description": persona.description,
        "descriptionPosition": POSITION_NAMES[persona.description_position],
        "depth": persona.depth,
        "role": persona.role,
        "isDefault": persona.is_default,
        "createdAt": persona.created_at,
        "updatedAt": persona.updated_at,
    }


class PersonaListCreateView(APIView):
    @extend_schema(operation_id="personas_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        paginator = PagePagination()
        page = paginator.paginate_queryset(selectors.persona_list(user=request_user(request)), request, self)
        return paginator.get_paginated_response([persona_out(p) for p in page])

    @extend_schema(request=PersonaInputSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = PersonaInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        persona = services.persona_save(user=request.user, **data.to_fields())
        return Response(persona_out(persona), status=201)


class PersonaDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        return Response(persona_out(services.persona_get(user=request.user, persona_id=pk)))

    @extend_schema(request=PersonaInputSerializer, responses=OpenApiTypes.OBJECT)
    def patch(self, request: Request, pk: int) -> Response:
        persona = services.persona_get(user=request.user, persona_id=pk)
        data = PersonaInputSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        persona = services.persona_save(user=request.user, persona=persona, **data.to_fields())
        return Response(persona_out(persona))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.persona_delete(persona=services.persona_get(user=request.user, persona_id=pk))
        return Response(status=204)


# ------------------------------------------------------------------------------------------ chats


class AuthorsNoteSerializer(WholeSerializer):
    text = serializers.CharField(max_length=MAX_TEXT, required=False, allow_blank=True, trim_whitespace=False)
    depth = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    frequency = serializers.IntegerField(min_value=0, max_value=1000, required=False)
    role = serializers.ChoiceField(choices=services.ROLES, required=False)
    position = serializers.ChoiceField(choices=services.AN_POSITIONS, required=False)


class ChatInputSerializer(serializers.Serializer):
    characterId = serializers.IntegerField(min_value=1)
    personaId = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    lorebookIds = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=100)
    authorsNote = AuthorsNoteSerializer(required=False)
    scenarioOverride = serializers.CharField(
        max_length=MAX_TEXT, required=False, allow_blank=True, trim_whitespace=False
    )


class ChatPatchSerializer(ChatInputSerializer):
    characterId = None  # type: ignore[assignment]
    variables = serializers.DictField(required=False)

    def validate_variables(self, value: dict[str, Any]) -> dict[str, Any]:
        problem = variables_too_large(value)  # the caps the macros' writes have (MACRO_VARIABLES_MAX_*)
        if problem:
            raise serializers.ValidationError(problem)
        return value


def chat_out(chat: Chat) -> dict[str, Any]:
    return {
        "id": chat.pk,
        "characterId": chat.character_id,
        "personaId": chat.persona_id,
        "lorebookIds": sorted(book.pk for book in chat.lorebooks.all()),
        "authorsNote": chat.authors_note,
        "scenarioOverride": chat.scenario_override,
        "variables": chat.variables,
        "createdAt": chat.created_at,
        "updatedAt": chat.updated_at,
    }


class ChatListCreateView(APIView):
    @extend_schema(operation_id="chats_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request) -> Response:
        paginator = PagePagination()
        page = paginator.paginate_queryset(selectors.chat_list(user=request_user(request)), request, self)
        return paginator.get_paginated_response([chat_out(c) for c in page])

    @extend_schema(request=ChatInputSerializer, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = ChatInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        chat = services.chat_create(
            user=request.user,
            character_id=values["characterId"],
            persona_id=values.get("personaId"),
            lorebook_ids=values.get("lorebookIds", []),
            authors_note=values.get("authorsNote"),
            scenario_override=values.get("scenarioOverride", ""),
        )
        return Response(chat_out(chat), status=201)


class ChatDetailView(APIView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        return Response(chat_out(services.chat_get(user=request.user, chat_id=pk)))

    @extend_schema(request=ChatPatchSerializer, responses=OpenApiTypes.OBJECT)
    def patch(self, request: Request, pk: int) -> Response:
        chat = services.chat_get(user=request.user, chat_id=pk)
        data = ChatPatchSerializer(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        names = {
            "personaId": "persona_id",
            "lorebookIds": "lorebook_ids",
            "authorsNote": "authors_note",
            "scenarioOverride": "scenario_override",
            "variables": "variables",
        }
        changes = {model: data.validated_data[api] for api, model in names.items() if api in data.validated_data}
        chat = services.chat_update(user=request.user, chat=chat, **changes)
        return Response(chat_out(chat))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.chat_delete(chat=services.chat_get(user=request.user, chat_id=pk))
        return Response(status=204)


# --------------------------------------------------------------------------------------- messages


def message_out(message: ChatMessage) -> dict[str, Any]:
    return {
        "id": message.pk,
        "role": message.role,
        "name": message.name,
        "content": message.content,
        "swipes": list(message.swipes),
        "swipeId": message.swipe_id,
        "hidden": message.hidden,
        "createdAt": message.created_at,
    }


class MessagePatchSerializer(serializers.Serializer):
    content = serializers.CharField(max_length=MAX_TEXT, required=False, allow_blank=True, trim_whitespace=False)
    swipeId = serializers.IntegerField(min_value=0, required=False)
    hidden = serializers.BooleanField(required=False)


class ChatMessageListView(APIView):
    @extend_schema(operation_id="chats_messages_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        chat = services.chat_get(user=request.user, chat_id=pk)
        paginator = PagePagination()
        page = paginator.paginate_queryset(selectors.message_list(chat=chat), request, self)
        return paginator.get_paginated_response([message_out(m) for m in page])


class ChatMessageDetailView(APIView):
    @extend_schema(request=MessagePatchSerializer, responses=OpenApiTypes.OBJECT)
    def patch(self, request: Request, pk: int, message_id: int) -> Response:
        message = services.message_get(user=request.user, chat_id=pk, message_id=message_id)
        data = MessagePatchSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        message = services.message_update(
            message=message,
            content=values.get("content"),
            swipe_id=values.get("swipeId"),
            hidden=values.get("hidden"),
        )
        return Response(message_out(message))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int, message_id: int) -> Response:
        services.message_delete(message=services.message_get(user=request.user, chat_id=pk, message_id=message_id))
        return Response(status=204)


# ------------------------------------------------------------------------------------- generation


class RoleplayInputSerializer(StaticSerializer):
    chatId = serializers.IntegerField(min_value=1, max_value=2**62)
    userInput = serializers.CharField(
        max_length=MAX_TEXT, required=False, allow_blank=True, default="", trim_whitespace=False
    )
    generationType = serializers.ChoiceField(choices=services.GENERATION_TYPES, required=False, default="normal")
    modelId = serializers.CharField(max_length=100, required=False)
    temperature = serializers.FloatField(min_value=0, max_value=2, required=False, default=0.7)
    maxTokens = serializers.IntegerField(min_value=1, max_value=1_000_000, required=False, allow_null=True)
    stream = serializers.BooleanField(required=False, default=False)

    def to_request(self) -> services.RoleplayRequest:
        data = self.validated_data
        return services.RoleplayRequest(
            chat_id=data["chatId"],
            user_input=data["userInput"],
            generation_type=data["generationType"],
            model_id=data.get("modelId") or settings.DEFAULT_MODEL_ID,
            temperature=data["temperature"],
            max_tokens=data.get("maxTokens"),
            stream=data["stream"],
        )


class RoleplayOutputSerializer(WritingOutputSerializer):
    messageId = serializers.IntegerField(allow_null=True, help_text="null for impersonate (nothing is stored)")


ROLEPLAY_SSE = SSE_DESCRIPTION + " The final event also carries `messageId`."


class RoleplayView(GenerationView[services.RoleplayRequest, services.RoleplayPrepared]):
    """The answer (JSON body or final SSE event) also carries `messageId` (`RoleplayPrepared`)."""

    permission_classes = (CanGenerateRoleplay,)
    input_serializer = RoleplayInputSerializer

    def open(self, user: Any, req: services.RoleplayRequest) -> services.RoleplayPrepared:
        return services.roleplay_prepare(user=user, req=req)

    def finish(self, *, prepared: services.RoleplayPrepared, outcome: Outcome) -> Finished:
        return services.roleplay_finish(prepared=prepared, outcome=outcome)


class RoleplayGenerateView(RoleplayView):
    """Generate the next roleplay turn (JSON; `stream: true` answers like the stream endpoint)."""

    @extend_schema(
        request=RoleplayInputSerializer,
        responses={200: OpenApiResponse(RoleplayOutputSerializer, description="JSON, or SSE. " + ROLEPLAY_SSE)},
    )
    async def post(self, request: Request) -> Any:
        return await self.generate(request)


class RoleplayStreamView(RoleplayView):
    """Generate the next roleplay turn, streamed as server-sent events."""

    stream = True

    @extend_schema(
        request=RoleplayInputSerializer,
        responses={(200, "text/event-stream"): OpenApiResponse(OpenApiTypes.STR, description=ROLEPLAY_SSE)},
    )
    async def post(self, request: Request) -> Any:
        return await self.generate(request)


class RoleplayPreviewView(APIView):
    """The exact messages the next turn would send: no upstream call, no charge, nothing stored."""

    permission_classes = (CanGenerateRoleplay,)

    @extend_schema(request=RoleplayInputSerializer, responses=OpenApiTypes.OBJECT)
    def post(self, request: Request) -> Response:
        data = RoleplayInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        plan, _primary = services.roleplay_preview(user=request.user, req=data.to_request())
        assembled = plan.assembled
        messages = []
        for m in assembled.messages:
            item = {"role": m.role, "content": m.content}
            if m.name:
                item["name"] = m.name
            messages.append(item)
        return Response(
            {
                "messages": messages,
                "blocks": [{"name": b.name, "tokens": b.tokens} for b in assembled.blocks],
                "budget": {"limit": assembled.limit, "used": assembled.used},
                "historyDropped": assembled.history_dropped,
                "examplesDropped": assembled.examples_dropped,
                "trace": trace_out(plan.activation.trace),
                "worldInfoBudget": budget_out(plan.activation),
            }
        )


# ------------------------------------------------------------------------------- lorebook dry run


class ActivateInputSerializer(serializers.Serializer):
    lorebookIds = serializers.ListField(child=serializers.IntegerField(min_value=1), required=False, max_length=100)
    entries = serializers.ListField(child=EntryField(), required=False, max_length=MAX_ENTRIES)
    # DRF stubs: many=True also takes ListSerializer's max_length.
    chat = ChatMessageSerializer(many=True, required=False, max_length=10_000)  # type: ignore[call-arg]
    settings = ActivationSettingsSerializer(required=False)
    maxContext = serializers.IntegerField(min_value=1, max_value=10_000_000, default=8192)
    generationType = serializers.ChoiceField(choices=list(GENERATION_TYPES), default="normal")
    seed = serializers.IntegerField(min_value=0, max_value=2**53, required=False, allow_null=True)
    userName = serializers.CharField(
        max_length=100, required=False, help_text="{{user}}; default: the persona's name, else your username"
    )
    charName = serializers.CharField(
        max_length=200, required=False, help_text="{{char}} without a stored character (not with characterId)"
    )
    characterId = serializers.IntegerField(
        min_value=1,
        max_value=2**62,
        required=False,
        help_text="your character: {{char}}, its card fields, match* sources and character filters; "
        "default: the one character the given books are linked to",
    )
    personaId = serializers.IntegerField(
        min_value=1, max_value=2**62, required=False, help_text="your persona (default: your default persona)"
    )
    chatId = serializers.IntegerField(
        min_value=1,
        max_value=2**62,
        required=False,
        help_text="your chat: its character, persona, variables, Author's Note, timed effects, history "
        "(when chat is left out), turn seed (when seed is) and, without lorebookIds and entries, its world info",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if not ({"lorebookIds", "entries", "chatId"} & attrs.keys()):
            raise serializers.ValidationError({"lorebookIds": [_("Give lorebookIds, entries or chatId.")]})
        conflicts = [("charName", "characterId"), ("userName", "personaId")]
        errors: dict[str, list[str]] = {}
        for a, b in conflicts:
            if a in attrs and b in attrs:
                errors[a] = [_("Give %(a)s or %(b)s, not both.") % {"a": a, "b": b}]
        if "chatId" in attrs:
            for name in ("characterId", "charName", "personaId", "userName"):
                if name in attrs:
                    errors[name] = [
                        _("The chat sets the character and the persona: leave %(name)s out.") % {"name": name}
                    ]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs

    def to_request(self) -> services.DryRunRequest:
        v = self.validated_data
        chat = v.get("chat")
        return services.DryRunRequest(
            lorebook_ids=tuple(dict.fromkeys(v.get("lorebookIds", []))),
            entries=v.get("entries"),
            chat=None
            if chat is None
            else [ChatLine(m["name"], m["content"], role=m["role"], hidden=m["hidden"]) for m in chat],
            settings=ActivationSettingsSerializer.to_settings(v.get("settings")),
            max_context=v["maxContext"],
            generation_type=v["generationType"],
            seed=v.get("seed"),
            user_name=v.get("userName"),
            char_name=v.get("charName"),
            character_id=v.get("characterId"),
            persona_id=v.get("personaId"),
            chat_id=v.get("chatId"),
        )


class DryRunContextSerializer(serializers.Serializer):
    userName = serializers.CharField(help_text="what {{user}} expanded to")
    charName = serializers.CharField(help_text="what {{char}} expanded to")
    characterId = serializers.IntegerField(allow_null=True)
    personaId = serializers.IntegerField(allow_null=True)
    chatId = serializers.IntegerField(allow_null=True)


class ActivateOutputSerializer(ActivationOutputSerializer):
    seed = serializers.JSONField(
        help_text="the seed used (give it again to reproduce): yours, a drawn integer, or with chatId and no "
        "seed the chat's turn seed (a string: the one generation uses)"
    )
    # (the metaclass pops declared fields, so this does not shadow ``Field.context``)
    context = DryRunContextSerializer(help_text="the macro context used (after defaults)")  # type: ignore[assignment]


class LorebookActivateView(APIView):
    """Dry run of world-info activation: what the next roleplay turn would insert for this chat, and
    why each entry was or was not activated — through the turn's own activation path (macros expanded
    with the same context). Free: no billing, no upstream call, nothing stored."""

    @extend_schema(request=ActivateInputSerializer, responses=ActivateOutputSerializer)
    def post(self, request: Request) -> Response:
        data = ActivateInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = services.lorebook_dry_run(user=request.user, req=data.to_request())
        cast = run.cast
        return Response(
            {
                **activation_out(run.result),
                "seed": run.seed,
                "context": {
                    "userName": cast.user_name,
                    "charName": cast.char_name,
                    "characterId": cast.character.pk if cast.character is not None else None,
                    "personaId": cast.persona.pk if cast.persona is not None else None,
                    "chatId": run.chat_id,
                },
            }
        )
