"""Two number filters for the dashboard (django.contrib.humanize is not installed): `1,234,567` and `12.5%`."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def thousands(value: int | float) -> str:
    return f"{value:,}"


@register.filter
def percent(value: float) -> str:
    return f"{value:.1%}"
