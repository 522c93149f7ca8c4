"""Server-rendered SVG charts for the dashboard (no JavaScript, no CDN). No Django: plain strings in,
an `<svg>` document out, every text escaped.

>>> svg = columns(labels=["a", "b"], series=[Series("free", "#79aec8", (1, 2))])
>>> svg.startswith("<svg") and svg.count("<rect class=") == 2
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

FONT = 'font-family="-apple-system, Segoe UI, sans-serif" font-size="11"'


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    color: str
    values: Sequence[int | float]


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value` (1 for nothing): the axis' top."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * power:
            return step * power
    return 10 * power  # pragma: no cover - the loop ends at 10


def _number(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:g}M"
    if value >= 10_000:
        return f"{value / 1_000:g}k"
    return f"{value:g}"


def columns(
    *, labels: Sequence[str], series: Sequence[Series], width: int = 900, height: int = 260, title: str = ""
) -> str:
    """Stacked columns, one per label (a day), the series stacked bottom up, with a legend, four
    gridlines and a tooltip (`<title>`) per segment."""
    left, right, top, bottom = 56, 12, 28, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    top_value = nice_ceiling(max(totals, default=0))
    slot = plot_w / max(1, len(labels))
    bar = max(1.0, slot * 0.8)
    parts = [_open(width, height, title)]
    for i in range(5):
        value = top_value * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" {FONT}>{_number(value)}</text>')
    every = max(1, math.ceil(len(labels) / 12))  # at most a dozen axis labels
    for i, label in enumerate(labels):
        x = left + slot * i + (slot - bar) / 2
        base: float = top + plot_h
        for s in series:
            value = s.values[i]
            h = plot_h * value / top_value
            if h > 0:
                tip = escape(f"{label} {s.name}: {value:,}")
                parts.append(
                    f'<rect class="bar" x="{x:.1f}" y="{base - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                    f'fill="{escape(s.color)}"><title>{tip}</title></rect>'
                )
                base -= h
        if i % every == 0:
            parts.append(
                f'<text x="{x + bar / 2:.1f}" y="{height - bottom + 14}" text-anchor="middle" {FONT}>'
                f"{escape(label)}</text>"
            )
    parts.append(_legend(series, left, 14))
    parts.append("</svg>")
    return "".join(parts)


def bars(
    *,
    rows: Sequence[tuple[str, float, str]],
    color: str = "#417690",
    width: int = 440,
    row_height: int = 22,
    maximum: float | None = None,
    title: str = "",
) -> str:
    """Horizontal bars: (label, value, text shown after the bar) per row, scaled to `maximum` (default:
    the largest value, rounded up)."""
    left, right = 150, 90
    height = max(1, len(rows)) * row_height + 8
    top_value = maximum if maximum is not None else nice_ceiling(max((v for _l, v, _t in rows), default=0))
    plot_w = width - left - right
    parts = [_open(width, height, title)]
    for i, (label, value, text) in enumerate(rows):
        y = 4 + i * row_height
        w = plot_w * min(value, top_value) / top_value if top_value else 0
        shown = label if len(label) <= 22 else label[:21] + "…"
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" text-anchor="end" {FONT}>'
            f"{escape(shown)}<title>{escape(label)}</title></text>"
        )
        parts.append(
            f'<rect class="bar" x="{left}" y="{y + 3}" width="{w:.1f}" height="{row_height - 8}" '
            f'fill="{escape(color)}"><title>{escape(f"{label}: {text}")}</title></rect>'
        )
        parts.append(f'<text x="{left + w + 6:.1f}" y="{y + 15}" {FONT}>{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _open(width: int, height: int, title: str) -> str:
    label = f' aria-label="{escape(title)}"' if title else ""
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" role="img"{label} width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}">'
    )


def _legend(series: Sequence[Series], x: int, y: int) -> str:
    parts = []
    for s in series:
        parts.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{escape(s.color)}"/>')
        parts.append(f'<text x="{x + 14}" y="{y}" {FONT}>{escape(s.name)}</text>')
        x += 24 + 7 * len(s.name)
    return "".join(parts)
