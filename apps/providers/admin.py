"""Admin for connections, models and their ordered fallbacks, with two diagnostics actions.

The API key is a write-only password field: blank keeps the stored key, "clear" removes it; pages only
ever show ``api_key_hint`` (``sk-…wxyz``). "Fetch model list" and "Send a test message" call the
upstream through :mod:`apps.providers.diagnostics` and report the result (or a safe error) as messages.

The connection list shows each connection's health (its circuit: healthy, open, half-open; consecutive
failures; since when), warns at the top while any circuit is not closed, and has an action to reset a
circuit. Every create, change (a key change is its own action) and delete is audited.
"""

from __future__ import annotations

from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import ValidationError
from django.db.models import Count, Model, QuerySet
from django.http import HttpRequest
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from apps.audit.admin import AuditedAdmin, admin_actor
from apps.providers import selectors, services, validation
from apps.providers.diagnostics import DiagnosticError, fetch_model_ids, run_check
from apps.providers.models import AIModel, Connection, ModelFallback
from apps.providers.validation import ConfigInvalid

MAX_ACTION_OBJECTS = 5  # each one is an upstream call made while the operator waits
ACTION_TIME_LIMIT = 30.0  # seconds per upstream call
MAX_IDS_SHOWN = 200


# ---------------------------------------------------------------------------------------------
# Connections


class ConnectionAdminForm(forms.ModelForm):
    api_key = forms.CharField(
        label=gettext_lazy("API key"),
        required=False,
        strip=True,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=gettext_lazy("Write-only. Leave blank to keep the stored key."),
    )
    clear_api_key = forms.BooleanField(label=gettext_lazy("Clear the stored API key"), required=False)
    extra_headers = forms.JSONField(
        label=gettext_lazy("Extra headers"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=gettext_lazy(
            'Write-only, encrypted like the key: a JSON object such as {"api-key": "…"} replaces the stored '
            "headers; leave blank to keep them."
        ),
    )
    clear_extra_headers = forms.BooleanField(label=gettext_lazy("Clear the stored extra headers"), required=False)
    instruct_template = forms.ChoiceField(
        label=gettext_lazy("Instruct template"),
        required=False,
        choices=[("", "—"), *[(name, name) for name in validation.INSTRUCT_CHOICES]],
        help_text=gettext_lazy("openai_text connections only (empty = chatml)."),
    )

    class Meta:
        model = Connection
        fields = (
            "name",
            "kind",
            "base_url",
            "connect_timeout",
            "read_timeout",
            "max_concurrency",
            "prompt_post_processing",
            "instruct_template",
            "custom_instruct_template",
            "enabled",
        )

    def clean_base_url(self) -> str:
        try:
            return validation.validate_base_url(self.cleaned_data.get("base_url", ""), kind=self.data.get("kind", ""))
        except ConfigInvalid as exc:
            raise ValidationError(exc.message) from None

    def clean_extra_headers(self) -> dict[str, str] | None:
        headers = self.cleaned_data.get("extra_headers")
        if headers is None or headers == "":
            return None  # keep the stored headers
        if not isinstance(headers, dict):
            raise ValidationError(_("Enter a JSON object of header names to string values."))
        try:
            return validation.validate_extra_headers(headers)
        except ConfigInvalid as exc:
            raise ValidationError(exc.message) from None

    def clean(self) -> dict[str, Any]:
        cleaned = cast("dict[str, Any]", super().clean())  # ModelForm.clean returns cleaned_data
        if cleaned.get("api_key") and cleaned.get("clear_api_key"):
            self.add_error("clear_api_key", _("Either enter a new key or clear the stored one, not both."))
        if cleaned.get("extra_headers") and cleaned.get("clear_extra_headers"):
            self.add_error("clear_extra_headers", _("Either enter new headers or clear the stored ones, not both."))
        kind = cleaned.get("kind")
        if kind:
            try:
                validation.validate_instruct(
                    kind=kind,
                    instruct_template=cleaned.get("instruct_template") or "",
                    custom_instruct_template=cleaned.get("custom_instruct_template") or "",
                )
            except ConfigInvalid as exc:
                self.add_error(exc.field if exc.field in self.fields else None, [exc.message])
        return cleaned


class AIModelInline(admin.TabularInline):
    model = AIModel
    extra = 0
    show_change_link = True
    fields = (
        "model_id",
        "display_name",
        "upstream_model",
        "context_tokens",
        "max_output_tokens",
        "input_ratio",
        "output_ratio",
        "is_free",
        "enabled",
    )


HEALTH_COLOURS = {"closed": "#2e7d32", "open": "#c62828", "half_open": "#ef6c00"}


def health_label(health: selectors.ConnectionHealth) -> str:
    """ "healthy", "open — next probe in 12 s", "half-open (probing)" in the operator's language."""
    if health.status == "closed":
        return _("healthy")
    if health.status == "open":
        return _("open — next probe in %(seconds)d s") % {"seconds": max(1, round(health.retry_in))}
    return _("half-open (probing)") if health.retry_in else _("half-open (next call probes)")


@admin.register(Connection)
class ConnectionAdmin(AuditedAdmin):
    form = ConnectionAdminForm
    list_display = (
        "name",
        "kind",
        "health",
        "failures",
        "health_since",
        "base_url",
        "api_key_hint",
        "model_count",
        "max_concurrency",
        "prompt_post_processing",
        "enabled",
        "updated_at",
    )
    list_filter = ("kind", "enabled", "prompt_post_processing")
    search_fields = ("name", "base_url", "models__model_id")
    readonly_fields = (
        "api_key_hint",
        "extra_headers_hint",
        "health",
        "failures",
        "health_since",
        "created_at",
        "updated_at",
    )
    inlines = (AIModelInline,)
    actions = ("fetch_model_list", "reset_circuit")
    fieldsets = (
        (None, {"fields": ("name", "kind", "base_url", "enabled")}),
        (gettext_lazy("Health"), {"fields": ("health", "failures", "health_since")}),
        (
            gettext_lazy("Credentials"),
            {
                "fields": (
                    "api_key_hint",
                    "api_key",
                    "clear_api_key",
                    "extra_headers_hint",
                    "extra_headers",
                    "clear_extra_headers",
                )
            },
        ),
        (
            gettext_lazy("Limits and behaviour"),
            {
                "fields": (
                    "connect_timeout",
                    "read_timeout",
                    "max_concurrency",
                    "prompt_post_processing",
                    "instruct_template",
                    "custom_instruct_template",
                )
            },
        ),
        (None, {"fields": ("created_at", "updated_at")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Connection]:
        return super().get_queryset(request).annotate(_model_count=Count("models"))

    @admin.display(description=gettext_lazy("Models"), ordering="_model_count")
    def model_count(self, obj: Connection) -> int:
        return getattr(obj, "_model_count", 0)

    # -- health ---------------------------------------------------------------------------------------
    def get_changelist_instance(self, request: HttpRequest) -> ChangeList:
        """Read every connection's circuit once (one Redis round trip), hand each row its own, and warn
        at the top of the page while any circuit is not closed (whatever page it is on)."""
        changelist = super().get_changelist_instance(request)
        names = dict(Connection.objects.values_list("pk", "name"))
        health = selectors.connections_health(connection_ids=names)
        for obj in changelist.result_list:
            obj._health = health.get(obj.pk)
        unhealthy = [f"{names[pk]}: {health_label(h)}" for pk, h in sorted(health.items()) if not h.healthy]
        if unhealthy and request.method == "GET":
            self.message_user(
                request,
                _("Unhealthy connections (their calls go to the fallbacks): %(list)s") % {"list": "; ".join(unhealthy)},
                messages.WARNING,
            )
        return changelist

    def _health(self, obj: Connection) -> selectors.ConnectionHealth:
        cached = getattr(obj, "_health", None)
        if cached is None:  # the change form: one connection
            cached = obj._health = selectors.connections_health(connection_ids=[obj.pk])[obj.pk]  # type: ignore[attr-defined]
        return cached

    @admin.display(description=gettext_lazy("Health"))
    def health(self, obj: Connection) -> str:
        if obj.pk is None:
            return "—"
        state = self._health(obj)
        return format_html('<strong style="color: {}">{}</strong>', HEALTH_COLOURS[state.status], health_label(state))

    @admin.display(description=gettext_lazy("Consecutive failures"))
    def failures(self, obj: Connection) -> int | str:
        return self._health(obj).failures if obj.pk is not None else "—"

    @admin.display(description=gettext_lazy("Since"))
    def health_since(self, obj: Connection) -> str:
        since = self._health(obj).since if obj.pk is not None else None
        return timezone.localtime(since).strftime("%Y-%m-%d %H:%M:%S") if since else "—"

    @admin.action(description=gettext_lazy("Reset the circuit (mark healthy now)"), permissions=("change",))
    def reset_circuit(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in queryset.order_by("name"):
            previous = services.connection_circuit_reset(connection=connection, by=admin_actor(request))
            self.message_user(
                request,
                _("%(name)s: circuit reset (it had %(failures)d consecutive failures).")
                % {"name": connection.name, "failures": previous.failures},
                messages.SUCCESS,
            )

    def save_model(self, request: HttpRequest, obj: Connection, form: forms.ModelForm, change: bool) -> None:
        if form.cleaned_data.get("clear_api_key"):
            obj.set_api_key("")
        elif form.cleaned_data.get("api_key"):
            obj.set_api_key(form.cleaned_data["api_key"])
        if form.cleaned_data.get("clear_extra_headers"):
            obj.extra_headers = {}
        elif form.cleaned_data.get("extra_headers") is not None:
            obj.extra_headers = form.cleaned_data["extra_headers"]
        super().save_model(request, obj, form, change)

    @admin.action(description=gettext_lazy("Fetch the model list from the upstream"))
    def fetch_model_list(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for connection in _limited(request, queryset.order_by("name")):
            try:
                ids = fetch_model_ids(connection, time_limit=ACTION_TIME_LIMIT)
            except DiagnosticError as exc:
                self.message_user(
                    request,
                    _("%(name)s: fetching the model list failed: %(error)s") % {"name": connection.name, "error": exc},
                    messages.ERROR,
                )
                continue
            configured = set(connection.models.values_list("upstream_model", flat=True))
            missing = [model_id for model_id in ids if model_id not in configured]
            shown = ", ".join(ids[:MAX_IDS_SHOWN]) + (" …" if len(ids) > MAX_IDS_SHOWN else "")
            text = _("%(name)s: %(count)d models: %(ids)s") % {
                "name": connection.name,
                "count": len(ids),
                "ids": shown or "—",
            }
            if missing:
                text += " — " + _("not configured yet: %(ids)s") % {"ids": ", ".join(missing[:MAX_IDS_SHOWN])}
            self.message_user(request, text, messages.SUCCESS)


# ---------------------------------------------------------------------------------------------
# Models


class FallbackFormSet(forms.BaseInlineFormSet):
    """Rejects self-references, duplicates and loops in the fallback graph (see services)."""

    def clean(self) -> None:
        super().clean()
        if any(self.errors):
            return
        rows = []
        for form in self.forms:
            data = getattr(form, "cleaned_data", None)
            if not data or data.get("DELETE") or data.get("fallback") is None:
                continue
            rows.append((data.get("position") or 0, data["fallback"].model_id))
        fallback_ids = [model_id for _position, model_id in sorted(rows, key=lambda row: row[0])]
        model_id = self.instance.model_id
        graph = selectors.fallback_graph()
        graph.pop(model_id, None)
        try:
            validation.validate_fallbacks(
                model_id=model_id,
                fallback_ids=fallback_ids,
                known_ids=AIModel.objects.values_list("model_id", flat=True),
                graph=graph,
            )
        except ConfigInvalid as exc:
            raise ValidationError(exc.message) from None


class ModelFallbackInline(admin.TabularInline):
    model = ModelFallback
    fk_name = "model"
    formset = FallbackFormSet
    extra = 0
    fields = ("position", "fallback")
    ordering = ("position", "id")
    verbose_name = gettext_lazy("fallback")
    verbose_name_plural = gettext_lazy("fallbacks (tried in position order)")


@admin.register(AIModel)
class AIModelAdmin(AuditedAdmin):
    list_display = (
        "model_id",
        "display_name",
        "connection",
        "upstream_model",
        "context_tokens",
        "max_output_tokens",
        "input_ratio",
        "output_ratio",
        "is_free",
        "enabled",
    )
    list_editable = ("input_ratio", "output_ratio", "is_free", "enabled")
    list_filter = ("enabled", "is_free", "connection__kind", "connection")
    list_select_related = ("connection",)
    search_fields = ("model_id", "display_name", "upstream_model", "connection__name")
    readonly_fields = ("created_at", "updated_at")
    inlines = (ModelFallbackInline,)
    actions = ("send_test_message",)
    fields = (
        "model_id",
        "display_name",
        "connection",
        "upstream_model",
        "context_tokens",
        "max_output_tokens",
        "input_ratio",
        "output_ratio",
        "is_free",
        "enabled",
        "created_at",
        "updated_at",
    )

    @admin.action(description=gettext_lazy("Send a test message"))
    def send_test_message(self, request: HttpRequest, queryset: QuerySet[AIModel]) -> None:
        for model in _limited(request, queryset.select_related("connection").order_by("model_id")):
            result = run_check(model, stream=False, time_limit=ACTION_TIME_LIMIT)
            if result.ok:
                text = _("%(model)s: reply “%(reply)s” in %(latency)d ms, finish reason %(finish)s, %(usage)s") % {
                    "model": model.model_id,
                    "reply": result.reply.strip()[:300],
                    "latency": result.latency_ms,
                    "finish": result.finish_reason,
                    "usage": _usage(result),
                }
                self.message_user(request, text, messages.SUCCESS)
            else:
                text = _("%(model)s: the test message failed after %(latency)d ms: %(error)s") % {
                    "model": model.model_id,
                    "latency": result.latency_ms,
                    "error": result.error,
                }
                self.message_user(request, text, messages.ERROR)


def _usage(result: Any) -> str:
    usage = result.usage
    if usage is None:
        return _("usage not reported")
    return _("usage %(prompt)d + %(completion)d = %(total)d tokens") % {
        "prompt": usage.prompt_tokens,
        "completion": usage.completion_tokens,
        "total": usage.total_tokens,
    }


def _limited[T: Model](request: HttpRequest, queryset: QuerySet[T]) -> list[T]:
    items = list(queryset[: MAX_ACTION_OBJECTS + 1])
    if len(items) > MAX_ACTION_OBJECTS:
        messages.warning(
            request, _("Only the first %(count)d selected items were checked.") % {"count": MAX_ACTION_OBJECTS}
        )
    return items[:MAX_ACTION_OBJECTS]
