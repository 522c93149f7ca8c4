"""Billing admin. Money only moves through services: wallets are read-only except through the "grant" and
"adjust" actions (each writes a ledger entry, `created_by` = the operator, and an audit entry); ledger
entries, holds, charges and daily usage are immutable records; plans and memberships are editable (each
change audited); redemption codes are created in bulk (the codes are shown once, as a CSV download).
"""

from __future__ import annotations

import csv
import io
from typing import Any, cast

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template import engines
from django.urls import path, reverse
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from apps.audit.admin import AuditedAdmin, ReadOnlyAdmin, admin_actor
from apps.billing import services
from apps.billing.models import Charge, DailyUsage, Hold, LedgerEntry, Membership, Plan, RedemptionCode, Wallet
from apps.core.errors import ApplicationError

MAX_WALLETS_PER_ACTION = 100

# Rendered from strings so the app needs no template directory; they extend the admin's base page.
_ACTION_FORM = """{% extends "admin/base_site.html" %}
{% block content %}
<h1>{{ title }}</h1>
<p>{{ intro }}</p>
<ul>{% for wallet in wallets %}<li>{{ wallet.user }} — {{ wallet.paid_balance }}</li>{% endfor %}</ul>
<form method="post">{% csrf_token %}
  {{ form.as_p }}
  {% for wallet in wallets %}<input type="hidden" name="_selected_action" value="{{ wallet.pk }}">{% endfor %}
  <input type="hidden" name="action" value="{{ action }}">
  <input type="hidden" name="apply" value="1">
  <input type="submit" value="{{ submit }}">
</form>
{% endblock %}"""

_BULK_FORM = """{% extends "admin/base_site.html" %}
{% block content %}
<h1>{{ title }}</h1>
<p>{{ intro }}</p>
<form method="post">{% csrf_token %}
  {{ form.as_p }}
  <input type="submit" value="{{ submit }}">
</form>
{% endblock %}"""


def _render(request: HttpRequest, source: str, context: dict[str, Any]) -> HttpResponse:
    template = engines["django"].from_string(source)
    return HttpResponse(template.render(context, request))


# ---------------------------------------------------------------------------------------------
# Wallets


class AmountForm(forms.Form):
    amount = forms.IntegerField(label=gettext_lazy("Amount (characters)"))
    note = forms.CharField(label=gettext_lazy("Note"), max_length=300)


class GrantForm(AmountForm):
    amount = forms.IntegerField(label=gettext_lazy("Amount (characters)"), min_value=1, max_value=10**12)


class AdjustForm(AmountForm):
    amount = forms.IntegerField(
        label=gettext_lazy("Amount (characters, negative to remove)"),
        min_value=-(10**12),
        max_value=10**12,
        help_text=gettext_lazy("Cannot take the balance below zero or below what running generations hold."),
    )

    def clean_amount(self) -> int:
        amount = self.cleaned_data["amount"]
        if amount == 0:
            raise forms.ValidationError(_("The amount cannot be zero."))
        return amount


@admin.register(Wallet)
class WalletAdmin(ReadOnlyAdmin):
    list_display = ("user", "paid_balance", "paid_held", "available", "updated_at")
    search_fields = ("user__username", "user__email")
    list_select_related = ("user",)
    ordering = ("-updated_at",)
    readonly_fields = ("user", "paid_balance", "paid_held", "updated_at")
    actions = ("grant", "adjust")

    @admin.display(description=gettext_lazy("available"))
    def available(self, obj: Wallet) -> int:
        return obj.paid_balance - obj.paid_held

    def has_grant_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("billing.change_wallet")

    @admin.action(description=gettext_lazy("Grant characters (ledger entry “grant”)"), permissions=("grant",))
    def grant(self, request: HttpRequest, queryset: QuerySet[Wallet]) -> HttpResponse | None:
        return self._balance_action(request, queryset, action="grant", form_class=GrantForm)

    @admin.action(description=gettext_lazy("Adjust the balance (ledger entry “adjust”)"), permissions=("grant",))
    def adjust(self, request: HttpRequest, queryset: QuerySet[Wallet]) -> HttpResponse | None:
        return self._balance_action(request, queryset, action="adjust", form_class=AdjustForm)

    def _balance_action(
        self, request: HttpRequest, queryset: QuerySet[Wallet], *, action: str, form_class: type[AmountForm]
    ) -> HttpResponse | None:
        wallets = list(queryset.select_related("user")[: MAX_WALLETS_PER_ACTION + 1])
        if len(wallets) > MAX_WALLETS_PER_ACTION:
            self.message_user(
                request,
                _("Select at most %(n)s wallets at a time.") % {"n": MAX_WALLETS_PER_ACTION},
                messages.ERROR,
            )
            return None
        form = form_class(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return _render(
                request,
                _ACTION_FORM,
                {
                    **self.admin_site.each_context(request),
                    "title": _("Grant characters") if action == "grant" else _("Adjust balances"),
                    "intro": _("Each selected wallet gets a ledger entry with this amount and note."),
                    "wallets": wallets,
                    "form": form,
                    "action": action,
                    "submit": _("Apply"),
                    "opts": self.model._meta,
                },
            )
        amount, note = form.cleaned_data["amount"], form.cleaned_data["note"]
        for wallet in wallets:
            try:
                if action == "grant":
                    entry = services.wallet_grant(user=wallet.user, amount=amount, note=note, by=admin_actor(request))
                else:
                    entry = services.wallet_adjust(user=wallet.user, amount=amount, note=note, by=admin_actor(request))
            except (ApplicationError, ValueError) as exc:
                self.message_user(
                    request,
                    _("%(user)s: %(error)s") % {"user": wallet.user, "error": getattr(exc, "message", str(exc))},
                    messages.ERROR,
                )
                continue
            self.message_user(
                request,
                _("%(user)s: %(amount)+d, new balance %(balance)s")
                % {"user": wallet.user, "amount": amount, "balance": entry.balance_after},
                messages.SUCCESS,
            )
        return None


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "user",
        "kind",
        "amount",
        "balance_after",
        "generation_id",
        "note",
        "created_by",
        "created_at",
    )
    list_filter = ("kind", "created_at")
    search_fields = ("user__username", "=generation_id", "note")
    list_select_related = ("user", "created_by")
    date_hierarchy = "created_at"


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = (
        "generation_id",
        "user",
        "model_id",
        "day",
        "amount",
        "free_part",
        "paid_part",
        "status",
        "expires_at",
        "closed_at",
    )
    list_filter = ("status", "day", "is_member")
    search_fields = ("user__username", "=generation_id", "model_id")
    list_select_related = ("user",)


@admin.register(Charge)
class ChargeAdmin(ReadOnlyAdmin):
    list_display = (
        "generation_id",
        "user",
        "model_id",
        "day",
        "input_chars",
        "output_chars",
        "total_cost",
        "used_daily_free",
        "used_paid",
        "member_benefit_applied",
        "created_at",
    )
    list_filter = ("day", "member_benefit_applied", "model_id")
    search_fields = ("user__username", "=generation_id", "model_id")
    list_select_related = ("user",)
    date_hierarchy = "created_at"


@admin.register(DailyUsage)
class DailyUsageAdmin(ReadOnlyAdmin):
    list_display = ("user", "day", "used", "held")
    list_filter = ("day",)
    search_fields = ("user__username",)
    list_select_related = ("user",)
    date_hierarchy = "day"


@admin.register(Plan)
class PlanAdmin(AuditedAdmin):
    list_display = ("tier", "daily_free_quota", "description")
    search_fields = ("tier",)


@admin.register(Membership)
class MembershipAdmin(AuditedAdmin):
    list_display = ("user", "tier", "starts_at", "ends_at", "note", "created_at")
    list_filter = ("tier", "ends_at")
    search_fields = ("user__username", "note")
    raw_id_fields = ("user",)
    list_select_related = ("user",)


# ---------------------------------------------------------------------------------------------
# Redemption codes


class BulkCodesForm(forms.Form):
    count = forms.IntegerField(label=gettext_lazy("Number of codes"), min_value=1, max_value=10_000, initial=10)
    amount = forms.IntegerField(label=gettext_lazy("Characters per code"), min_value=0, max_value=10**12, initial=0)
    member_days = forms.IntegerField(
        label=gettext_lazy("Membership days per code"), min_value=0, max_value=3650, initial=0
    )
    batch = forms.CharField(label=gettext_lazy("Batch name"), max_length=100, required=False)
    expires_at = forms.DateTimeField(
        label=gettext_lazy("Expires at"), required=False, help_text=gettext_lazy("YYYY-MM-DD HH:MM (empty: never)")
    )

    def clean(self) -> dict[str, Any]:
        cleaned = cast("dict[str, Any]", super().clean())  # ModelForm.clean returns cleaned_data
        if not cleaned.get("amount") and not cleaned.get("member_days"):
            raise forms.ValidationError(_("A code must credit characters or membership days."))
        expires_at = cleaned.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            self.add_error("expires_at", _("The expiry must be in the future."))
        return cleaned


def codes_csv(codes: list[RedemptionCode]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["code", "amount", "member_days", "batch", "expires_at"])
    for code in codes:
        writer.writerow(
            [
                code.code,
                code.amount,
                code.member_days,
                code.batch,
                code.expires_at.isoformat() if code.expires_at else "",
            ]
        )
    return out.getvalue()


@admin.register(RedemptionCode)
class RedemptionCodeAdmin(AuditedAdmin):
    audit_secret_fields = ("code",)  # a code is a bearer credit: the log says a code changed, not which
    list_display = (
        "masked",
        "amount",
        "member_days",
        "batch",
        "expires_at",
        "redeemed_by",
        "redeemed_at",
        "created_at",
    )
    list_filter = ("batch", ("redeemed_at", admin.EmptyFieldListFilter), "expires_at")
    search_fields = ("=code", "batch", "redeemed_by__username")
    list_select_related = ("redeemed_by",)
    readonly_fields = ("code", "amount", "member_days", "redeemed_by", "redeemed_at", "created_at")
    fields = ("code", "amount", "member_days", "batch", "expires_at", "redeemed_by", "redeemed_at", "created_at")

    @admin.display(description=gettext_lazy("code"))
    def masked(self, obj: RedemptionCode) -> str:
        return str(obj)

    def get_urls(self) -> list[Any]:
        return [
            path(
                "bulk-create/",
                self.admin_site.admin_view(self.bulk_create_view),
                name="billing_redemptioncode_bulk_create",
            ),
            *super().get_urls(),
        ]

    def add_view(self, request: HttpRequest, form_url: str = "", extra_context: Any = None) -> HttpResponse:
        """Codes are only made in bulk (random, unguessable): "add" leads to the bulk form."""
        return HttpResponseRedirect(reverse("admin:billing_redemptioncode_bulk_create"))

    def bulk_create_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BulkCodesForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            codes = services.codes_create(
                count=data["count"],
                amount=data["amount"],
                member_days=data["member_days"],
                batch=data["batch"],
                expires_at=data["expires_at"],
                by=admin_actor(request),
            )
            response = HttpResponse(codes_csv(codes), content_type="text/csv; charset=utf-8")
            filename = f"codes-{data['batch'] or 'batch'}-{timezone.now():%Y%m%d%H%M%S}.csv"
            response["Content-Disposition"] = f'attachment; filename="{filename}"'
            response["Cache-Control"] = "no-store"
            return response
        return _render(
            request,
            _BULK_FORM,
            {
                **self.admin_site.each_context(request),
                "title": _("Create redemption codes"),
                "intro": _("The codes are downloaded once as a CSV file; the admin shows them masked afterwards."),
                "form": form,
                "submit": _("Create and download"),
                "opts": self.model._meta,
            },
        )
