"""Worldviews (shared novel-entity views) and lorebooks: CRUD, entries, import/export; the dry run's
shapes (its view is in ``apps.generation.roleplay.api``: it resolves chats and personas, which live there)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.http import Http404, HttpResponse
from django.utils.http import content_disposition_header
from django.utils.translation import gettext as _
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from apps.cards import dumps_card
from apps.cards.messages import card_limits, card_too_large_error
from apps.core.api.pagination import PagePagination
from apps.core.api.views import OwnFormatParamMixin, filename_stem
from apps.novels.api import SEARCH_PARAM, entity_views
from apps.worldviews import selectors, services
from apps.worldviews.engine import ActivationResult, ActivationSettings, MatchedIn, TraceItem
from apps.worldviews.engine.entry_schema import MAX_ENTRIES
from apps.worldviews.models import Lorebook, LorebookEntry, Worldview

WorldviewListCreateView, WorldviewDetailView = entity_views(Worldview)


# ------------------------------------------------------------------------------------ serializers


class EntryField(serializers.JSONField):
    """A world-info entry in SillyTavern's camelCase shape (validated by the service)."""


class LorebookInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(max_length=20000, required=False, allow_blank=True, trim_whitespace=False)
    characterId = serializers.IntegerField(min_value=1, required=False, allow_null=True)
    isGlobal = serializers.BooleanField(required=False)
    entries = serializers.ListField(child=EntryField(), required=False, max_length=MAX_ENTRIES)


class LorebookOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    characterId = serializers.IntegerField(source="character_id", allow_null=True)
    isGlobal = serializers.BooleanField(source="is_global")
    entryCount = serializers.IntegerField(source="entry_count")
    createdAt = serializers.DateTimeField(source="created_at")
    updatedAt = serializers.DateTimeField(source="updated_at")


class LorebookDetailOutputSerializer(LorebookOutputSerializer):
    entries = serializers.ListField(child=EntryField())


class LorebookQuerySerializer(serializers.Serializer):
    search = serializers.CharField(max_length=200, required=False, allow_blank=True)
    characterId = serializers.IntegerField(min_value=1, required=False)


class LorebookImportSerializer(serializers.Serializer):
    file = serializers.FileField(allow_empty_file=True)
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)


class LorebookExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=["st", "v3"], default="st")


def _detail(lorebook: Lorebook) -> dict[str, Any]:
    entries = selectors.lorebook_st_entries(lorebook=lorebook)
    lorebook.entry_count = len(entries)  # type: ignore[attr-defined]
    data = dict(LorebookOutputSerializer(lorebook).data)
    data["entries"] = entries
    return data


def _owned(request: Request, lorebook_id: int) -> Lorebook:
    lorebook = selectors.lorebook_get_owned(user=request.user, pk=lorebook_id)
    if lorebook is None:
        raise Http404
    return lorebook


# -------------------------------------------------------------------------------------- lorebooks


class LorebookListCreateView(APIView):
    @extend_schema(
        parameters=[SEARCH_PARAM, OpenApiParameter("characterId", int, description="Books linked to this character.")],
        responses=LorebookOutputSerializer(many=True),
    )
    def get(self, request: Request) -> Response:
        query = LorebookQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        qs = selectors.lorebook_list(
            user=request.user,
            search=query.validated_data.get("search"),
            character_id=query.validated_data.get("characterId"),
        )
        paginator = PagePagination()
        page = paginator.paginate_queryset(qs, request, view=self)
        return paginator.get_paginated_response(LorebookOutputSerializer(page, many=True).data)

    @extend_schema(request=LorebookInputSerializer, responses={201: LorebookDetailOutputSerializer})
    def post(self, request: Request) -> Response:
        data = LorebookInputSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        entries = services.entries_validate(values["entries"]) if "entries" in values else []
        lorebook = services.lorebook_create(
            owner=request.user,
            name=values["name"],
            description=values.get("description", ""),
            character_id=values.get("characterId"),
            is_global=values.get("isGlobal", False),
            entries=entries,
        )
        return Response(_detail(lorebook), status=status.HTTP_201_CREATED)


class LorebookDetailView(APIView):
    @extend_schema(responses=LorebookDetailOutputSerializer)
    def get(self, request: Request, pk: int) -> Response:
        return Response(_detail(_owned(request, pk)))

    @extend_schema(request=LorebookInputSerializer, responses=LorebookDetailOutputSerializer)
    def put(self, request: Request, pk: int) -> Response:
        return self._update(request, pk, partial=False)

    @extend_schema(request=LorebookInputSerializer, responses=LorebookDetailOutputSerializer)
    def patch(self, request: Request, pk: int) -> Response:
        return self._update(request, pk, partial=True)

    def _update(self, request: Request, pk: int, *, partial: bool) -> Response:
        lorebook = _owned(request, pk)
        data = LorebookInputSerializer(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        changes: dict[str, Any] = {}
        if "name" in values:
            changes["name"] = values["name"]
        if "description" in values or not partial:
            changes["description"] = values.get("description", "")
        if "characterId" in values or not partial:
            changes["character_id"] = values.get("characterId")
        if "isGlobal" in values or not partial:
            changes["is_global"] = values.get("isGlobal", False)
        entries = None
        if "entries" in values:
            entries = services.entries_validate(values["entries"])
        elif not partial:
            entries = []
        lorebook = services.lorebook_update(lorebook=lorebook, changes=changes, entries=entries)
        return Response(_detail(lorebook))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int) -> Response:
        services.lorebook_delete(lorebook=_owned(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)


# ---------------------------------------------------------------------------------------- entries


class LorebookEntryListCreateView(APIView):
    @extend_schema(operation_id="lorebooks_entries_list", responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int) -> Response:
        lorebook = _owned(request, pk)
        paginator = PagePagination()
        page = paginator.paginate_queryset(selectors.lorebook_entries(lorebook=lorebook), request, view=self)
        return paginator.get_paginated_response([row.data for row in page])

    @extend_schema(request=OpenApiTypes.OBJECT, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request, pk: int) -> Response:
        lorebook = _owned(request, pk)
        data, uid = services.entry_validate(request.data)
        entry = services.entry_create(lorebook=lorebook, data=data, uid=uid)
        return Response(entry.data, status=status.HTTP_201_CREATED)


class LorebookEntryDetailView(APIView):
    def _get(self, request: Request, pk: int, uid: int) -> LorebookEntry:
        entry = selectors.entry_get_owned(user=request.user, lorebook_id=pk, uid=uid)
        if entry is None:
            raise Http404
        return entry

    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request: Request, pk: int, uid: int) -> Response:
        return Response(self._get(request, pk, uid).data)

    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def put(self, request: Request, pk: int, uid: int) -> Response:
        return self._update(request, pk, uid, partial=False)

    @extend_schema(request=OpenApiTypes.OBJECT, responses=OpenApiTypes.OBJECT)
    def patch(self, request: Request, pk: int, uid: int) -> Response:
        return self._update(request, pk, uid, partial=True)

    def _update(self, request: Request, pk: int, uid: int, *, partial: bool) -> Response:
        entry = self._get(request, pk, uid)
        data, sent_uid = services.entry_validate(request.data, base=entry.data if partial else None)
        if sent_uid is not None and sent_uid != entry.uid:
            raise ValidationError({"uid": [_("The uid of an entry cannot be changed.")]})
        entry = services.entry_update(entry=entry, data=data)
        return Response(entry.data)

    @extend_schema(responses={204: None})
    def delete(self, request: Request, pk: int, uid: int) -> Response:
        services.entry_delete(entry=self._get(request, pk, uid))
        return Response(status=status.HTTP_204_NO_CONTENT)


# ------------------------------------------------------------------------------------ import/export


class LorebookImportView(APIView):
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": LorebookImportSerializer}, responses={201: OpenApiTypes.OBJECT})
    def post(self, request: Request) -> Response:
        data = LorebookImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        upload = data.validated_data["file"]
        if upload.size > card_limits().max_file_bytes:
            raise card_too_large_error()
        lorebook = services.lorebook_import(
            owner=request.user,
            data=upload.read(),
            filename=upload.name,
            content_type=getattr(upload, "content_type", None),
            name=data.validated_data.get("name") or None,
        )
        return Response(_detail(lorebook), status=status.HTTP_201_CREATED)


class LorebookExportView(OwnFormatParamMixin, APIView):
    @extend_schema(
        parameters=[OpenApiParameter("format", str, enum=["st", "v3"], description="st (default) or v3.")],
        responses={(200, "application/json"): OpenApiTypes.OBJECT},
    )
    def get(self, request: Request, pk: int) -> HttpResponse:
        query = LorebookExportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        lorebook = _owned(request, pk)
        doc = selectors.lorebook_export(lorebook=lorebook, fmt=query.validated_data["format"])
        response = HttpResponse(dumps_card(doc).encode("utf-8", "replace"), content_type="application/json")
        response["Content-Disposition"] = content_disposition_header(True, f"{filename_stem(lorebook.name)}.json")
        return response


# ------------------------------------------------------------------------------- dry run: shapes


class ChatMessageSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    role = serializers.ChoiceField(choices=["user", "assistant", "system"], default="user")
    content = serializers.CharField(max_length=200_000, allow_blank=True, trim_whitespace=False)
    hidden = serializers.BooleanField(required=False, default=False)


_DEFAULTS = ActivationSettings()


class ActivationSettingsSerializer(serializers.Serializer):
    scanDepth = serializers.IntegerField(min_value=0, max_value=1000, default=_DEFAULTS.scan_depth)
    budgetPercent = serializers.FloatField(min_value=0, max_value=100, default=_DEFAULTS.budget_percent)
    budgetCap = serializers.IntegerField(min_value=0, max_value=10_000_000, default=_DEFAULTS.budget_cap)
    recursive = serializers.BooleanField(default=_DEFAULTS.recursive)
    maxRecursionSteps = serializers.IntegerField(min_value=0, max_value=1000, default=_DEFAULTS.max_recursion_steps)
    minActivations = serializers.IntegerField(min_value=0, max_value=100_000, default=_DEFAULTS.min_activations)
    minActivationsDepthMax = serializers.IntegerField(
        min_value=0, max_value=100_000, default=_DEFAULTS.min_activations_depth_max
    )
    caseSensitive = serializers.BooleanField(default=_DEFAULTS.case_sensitive)
    matchWholeWords = serializers.BooleanField(default=_DEFAULTS.match_whole_words)
    useGroupScoring = serializers.BooleanField(default=_DEFAULTS.use_group_scoring)
    includeNames = serializers.BooleanField(default=_DEFAULTS.include_names)
    insertionStrategy = serializers.ChoiceField(
        choices=[("evenly", "evenly"), ("character_first", "character_first"), ("global_first", "global_first")],
        default="character_first",
    )

    @staticmethod
    def to_settings(given: dict[str, Any] | None) -> ActivationSettings:
        """Validated settings (the nested serializer filled defaults) or, when absent, the defaults."""
        if given is None:
            defaults = ActivationSettingsSerializer(data={})
            defaults.is_valid(raise_exception=True)
            given = dict(defaults.validated_data)
        v = given
        return ActivationSettings(
            scan_depth=v["scanDepth"],
            budget_percent=v["budgetPercent"],
            budget_cap=v["budgetCap"],
            recursive=v["recursive"],
            max_recursion_steps=v["maxRecursionSteps"],
            min_activations=v["minActivations"],
            min_activations_depth_max=v["minActivationsDepthMax"],
            case_sensitive=v["caseSensitive"],
            match_whole_words=v["matchWholeWords"],
            use_group_scoring=v["useGroupScoring"],
            include_names=v["includeNames"],
            insertion_strategy=["evenly", "character_first", "global_first"].index(v["insertionStrategy"]),
        )


class MatchedInSerializer(serializers.Serializer):
    # (the metaclass pops declared fields, so this does not shadow ``Field.source``)
    source = serializers.CharField(  # type: ignore[assignment]
        help_text="chat (index 0 = the newest scanned message), an extra source (persona_description, "
        "character_description, character_personality, character_depth_prompt, scenario, creator_notes), "
        "injection (index into the scanned injections: the Author's Note), or recursion (the activated "
        "content, macros expanded, of entry lorebookId/uid)."
    )
    index = serializers.IntegerField(allow_null=True)
    lorebookId = serializers.JSONField(allow_null=True, help_text="recursion only")
    uid = serializers.JSONField(allow_null=True, help_text="recursion only")


class TraceItemSerializer(serializers.Serializer):
    lorebookId = serializers.JSONField(allow_null=True, help_text="book id; null for inline entries")
    uid = serializers.JSONField()
    status = serializers.ChoiceField(choices=["activated", "skipped"])
    reason = serializers.CharField(help_text="stable code (docs/worldinfo.md, section 7)")
    detail = serializers.CharField()
    step = serializers.IntegerField()
    matchedKey = serializers.CharField(allow_null=True, help_text="the primary key that matched, as written")
    matchedText = serializers.CharField(allow_null=True, help_text="that key after macro expansion: what was searched")
    matchedIn = MatchedInSerializer(allow_null=True)
    tokens = serializers.IntegerField(
        allow_null=True, help_text="what the content (macros expanded, + newline) costs the budget"
    )
    budgetTotal = serializers.IntegerField(
        allow_null=True, help_text="the running total compared with the budget at this entry (>= limit: dropped)"
    )
    comment = serializers.CharField()


class ActivationBudgetSerializer(serializers.Serializer):
    limit = serializers.IntegerField()
    used = serializers.IntegerField()
    overflowed = serializers.BooleanField()


class ActivatedEntrySerializer(serializers.Serializer):
    lorebookId = serializers.JSONField(allow_null=True)
    uid = serializers.JSONField()
    comment = serializers.CharField()
    position = serializers.IntegerField()
    depth = serializers.IntegerField()
    role = serializers.IntegerField()
    order = serializers.FloatField()
    content = serializers.CharField(help_text="decorators removed, macros expanded")


class DepthInjectionSerializer(serializers.Serializer):
    depth = serializers.IntegerField()
    role = serializers.CharField()
    content = serializers.CharField()


class ActivationOutputSerializer(serializers.Serializer):
    activated = ActivatedEntrySerializer(many=True)
    byPosition = serializers.DictField(child=serializers.CharField())
    depthInjections = DepthInjectionSerializer(many=True)
    outlets = serializers.DictField(child=serializers.CharField())
    trace = TraceItemSerializer(many=True)
    budget = ActivationBudgetSerializer()


def trace_out(trace: Sequence[TraceItem]) -> list[dict[str, Any]]:
    """The activation trace as the API writes it (the dry run, the roleplay preview)."""
    return [
        {
            "lorebookId": t.lorebook_id,
            "uid": t.uid,
            "status": t.status,
            "reason": t.reason,
            "detail": t.detail,
            "step": t.step,
            "matchedKey": t.matched_key,
            "matchedText": t.matched_text,
            "matchedIn": _matched_in(t.matched_in),
            "tokens": t.tokens,
            "budgetTotal": t.budget_total,
            "comment": t.comment,
        }
        for t in trace
    ]


def _matched_in(where: MatchedIn | None) -> dict[str, Any] | None:
    if where is None:
        return None
    return {"source": where.source, "index": where.number, "lorebookId": where.lorebook_id, "uid": where.uid}


def activation_out(result: ActivationResult) -> dict[str, Any]:
    """An activation as the dry run answers it (without the seed)."""
    return {
        "activated": [
            {
                "lorebookId": e.lorebook_id,
                "uid": e.uid,
                "comment": e.comment,
                "position": int(e.position),
                "depth": e.depth,
                "role": int(e.role),
                "order": e.order,
                "content": e.content,
            }
            for e in result.activated
        ],
        "byPosition": dict(result.by_position),
        "depthInjections": [{"depth": d.depth, "role": d.role, "content": d.content} for d in result.depth_injections],
        "outlets": dict(result.outlets),
        "trace": trace_out(result.trace),
        "budget": budget_out(result),
    }


def budget_out(result: ActivationResult) -> dict[str, Any]:
    """The world-info budget of an activation: its limit, the tokens used, whether it overflowed."""
    return {"limit": result.budget_limit, "used": result.budget_used, "overflowed": result.budget_overflowed}
