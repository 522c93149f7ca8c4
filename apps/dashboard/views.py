"""The usage dashboard page and its CSV exports, in the admin (staff with `billing.view_charge`).

`?from=YYYY-MM-DD&to=YYYY-MM-DD` (billing days, inclusive; the same rules and messages as
`/api/v1/billing/usage`: default the last 30 days, at most 366); `&export=days|models|users|connections`
answers CSV instead of the page. A bad range is the page with the reason and a 400, never a 500.
"""

from __future__ import annotations

import csv
from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _

from apps.billing.api import UsageQuerySerializer
from apps.billing.selectors import USAGE_FIELDS
from apps.dashboard import charts
from apps.dashboard.selectors import Dashboard, usage_dashboard
from apps.generation.calls import is_failure

EXPORTS = ("days", "models", "users", "connections")
FREE_COLOR, PAID_COLOR, ERROR_COLOR = "#79aec8", "#417690", "#ba2121"


def usage_dashboard_view(request: HttpRequest) -> HttpResponse:
    if not request.user.has_perm("billing.view_charge"):
        raise PermissionDenied
    given = {name: request.GET[name] for name in ("from", "to") if request.GET.get(name)}
    query = UsageQuerySerializer(data=given)
    export = request.GET.get("export", "")
    errors: list[str] = []
    if not query.is_valid():
        errors = [f"{name}: {message}" for name, messages in query.errors.items() for message in messages]
    elif export and export not in EXPORTS:
        errors = [_("Unknown export %(name)s: use one of %(names)s.") % {"name": export, "names": ", ".join(EXPORTS)}]
    if errors:
        context = {**admin.site.each_context(request), "title": _("Usage dashboard"), "errors": errors, "given": given}
        return TemplateResponse(request, "admin/dashboard/usage.html", context, status=400)
    dashboard = usage_dashboard(
        start=query.validated_data["from"],
        end=query.validated_data["to"],
        top_users=None if export == "users" else 10,
    )
    if export:
        return _csv(dashboard, export)
    context = {
        **admin.site.each_context(request),
        "title": _("Usage dashboard"),
        "dashboard": dashboard,
        "given": {"from": dashboard.start.isoformat(), "to": dashboard.end.isoformat()},
        "exports": EXPORTS,
        **_charts(dashboard),
    }
    return TemplateResponse(request, "admin/dashboard/usage.html", context)


def _charts(dashboard: Dashboard) -> dict[str, Any]:
    per_day = charts.columns(
        labels=[day["date"][5:] for day in dashboard.days],
        series=[
            charts.Series(_("free"), FREE_COLOR, [day["usedDailyFree"] for day in dashboard.days]),
            charts.Series(_("paid"), PAID_COLOR, [day["usedPaid"] for day in dashboard.days]),
        ],
        title=_("Characters charged per day"),
    )
    per_model = charts.bars(
        rows=[(row.label, row.usage["totalCost"], f"{row.usage['totalCost']:,}") for row in dashboard.models],
        color=PAID_COLOR,
        title=_("Characters charged per model"),
    )
    rates = [(c.connection, c.error_rate or 0.0, _rate(c.error_rate)) for c in dashboard.connections]
    per_connection = charts.bars(rows=rates, color=ERROR_COLOR, maximum=1.0, title=_("Error rate per connection"))
    # the charts escape every text they draw (apps/dashboard/charts.py)
    return {
        "chart_days": mark_safe(per_day),  # noqa: S308
        "chart_models": mark_safe(per_model),  # noqa: S308
        "chart_connections": mark_safe(per_connection),  # noqa: S308
    }


def _rate(rate: float | None) -> str:
    return "—" if rate is None else f"{rate:.1%}"


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would take for a formula gets a leading apostrophe (CSV injection)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _csv(dashboard: Dashboard, export: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    name = f"usage-{export}-{dashboard.start.isoformat()}-{dashboard.end.isoformat()}.csv"
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    writer = csv.writer(response)
    fields = list(USAGE_FIELDS)
    if export == "days":
        writer.writerow(["date", *fields])
        writer.writerows([day["date"], *(day[f] for f in fields)] for day in dashboard.days)
    elif export == "models":
        writer.writerow(["model", *fields])
        writer.writerows([_cell(row.key), *(row.usage[f] for f in fields)] for row in dashboard.models)
    elif export == "users":
        writer.writerow(["userId", "username", *fields])
        writer.writerows([row.key, _cell(row.label), *(row.usage[f] for f in fields)] for row in dashboard.users)
    else:
        writer.writerow(["connection", "calls", "ok", "cancelled", "failures", "errorRate", "errors"])
        for c in dashboard.connections:
            errors = " ".join(f"{code}={n}" for code, n in sorted(c.outcomes.items()) if is_failure(code))
            rate = "" if c.error_rate is None else f"{c.error_rate:.4f}"
            writer.writerow(
                [
                    _cell(c.connection),
                    c.calls,
                    c.outcomes.get("ok", 0),
                    c.outcomes.get("cancelled", 0),
                    c.failures,
                    rate,
                    errors,
                ]
            )
    return response
