"""The audit log in the admin (read-only), and :class:`AuditedAdmin`, the base of every admin page that
changes money, memberships, tokens or connections: it writes an entry for each object created, changed
or deleted through it — inline rows included — in the same transaction as the change."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db import models, transaction
from django.forms import BaseModelFormSet, ModelForm
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.translation import gettext_lazy

from apps.audit.models import AuditEntry
from apps.audit.services import Actor, audit_deleted, audit_saved, snapshot


class ReadOnlyAdmin(admin.ModelAdmin):
    """Immutable records: viewable, never added, changed or deleted through the admin."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def admin_actor(request: HttpRequest) -> Actor:
    return Actor(request.user, "admin")


class AuditedAdmin(admin.ModelAdmin):
    """Writes an audit entry for every save and delete made through this page (and its inlines).

    ``audit_secret_fields`` adds field names to redact beyond :data:`apps.audit.services.SECRET_FIELDS`.
    """

    audit_secret_fields: tuple[str, ...] = ()

    def _before(self, model: type[models.Model], pk: Any) -> dict[str, Any] | None:
        current = model._default_manager.filter(pk=pk).first() if pk is not None else None
        return snapshot(current) if current is not None else None

    def save_model(self, request: HttpRequest, obj: Any, form: ModelForm, change: bool) -> None:
        before = self._before(type(obj), obj.pk) if change else None
        with transaction.atomic():
            super().save_model(request, obj, form, change)
            audit_saved(by=admin_actor(request), obj=obj, before=before, secret=self.audit_secret_fields)

    def delete_model(self, request: HttpRequest, obj: Any) -> None:
        before = snapshot(obj)
        with transaction.atomic():
            super().delete_model(request, obj)
            audit_deleted(by=admin_actor(request), obj=obj, before=before, secret=self.audit_secret_fields)

    def delete_queryset(self, request: HttpRequest, queryset: models.QuerySet[Any]) -> None:
        with transaction.atomic():
            objects = [(obj, snapshot(obj)) for obj in queryset]
            super().delete_queryset(request, queryset)
            for obj, before in objects:
                audit_deleted(by=admin_actor(request), obj=obj, before=before, secret=self.audit_secret_fields)

    def save_formset(self, request: HttpRequest, form: ModelForm, formset: BaseModelFormSet, change: bool) -> None:
        model: type[models.Model] = formset.model  # type: ignore[assignment]  # always set on a model formset
        pks = [f.instance.pk for f in formset.forms if f.instance.pk is not None]
        before = {obj.pk: snapshot(obj) for obj in model._default_manager.filter(pk__in=pks)}
        by, secret = admin_actor(request), self.audit_secret_fields
        with transaction.atomic():
            super().save_formset(request, form, formset, change)
            for obj in formset.new_objects:
                audit_saved(by=by, obj=obj, before=None, secret=secret)
            for obj, _fields in formset.changed_objects:
                audit_saved(by=by, obj=obj, before=before.get(obj.pk), secret=secret)
            for obj in formset.deleted_objects:
                audit_deleted(by=by, obj=obj, before=before.get(obj.pk) or snapshot(obj), secret=secret)


def _values(values: Any) -> str:
    if not values:
        return "—"
    return json.dumps(values, ensure_ascii=False, sort_keys=True, indent=1)


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ("at", "actor", "via", "action", "target_type", "target_repr", "changed", "note")
    list_filter = ("action", "via", "target_type", "at")
    search_fields = ("actor", "action", "target_repr", "=target_id", "note")
    date_hierarchy = "at"
    fields = (
        "at",
        "actor",
        "actor_user_id",
        "via",
        "action",
        "target_type",
        "target_id",
        "target_repr",
        "before_values",
        "after_values",
        "note",
    )
    readonly_fields = fields

    @admin.display(description=gettext_lazy("changed"))
    def changed(self, obj: AuditEntry) -> str:
        return ", ".join(sorted(set(obj.before or {}) | set(obj.after or {})))[:120] or "—"

    @admin.display(description=gettext_lazy("before"))
    def before_values(self, obj: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", _values(obj.before))

    @admin.display(description=gettext_lazy("after"))
    def after_values(self, obj: AuditEntry) -> str:
        return format_html("<pre>{}</pre>", _values(obj.after))
