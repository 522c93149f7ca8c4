"""The SVG charts (pure): scale, stacking, and every text escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from apps.dashboard.charts import Series, bars, columns, nice_ceiling


@pytest.mark.parametrize(
    ("value", "top"),
    [(0, 1), (-3, 1), (1, 1), (7, 10), (10, 10), (11, 20), (21, 25), (26, 50), (51, 100), (1234, 2000), (0.3, 0.5)],
)
def test_nice_ceiling(value: float, top: float) -> None:
    assert nice_ceiling(value) == pytest.approx(top)


def heights(svg: str) -> list[float]:
    return [float(h) for h in re.findall(r'<rect class="bar"[^>]* height="([0-9.]+)"', svg)]


def test_columns_stack_the_series_to_scale() -> None:
    svg = columns(
        labels=["03-08", "03-09"],
        series=[Series("free", "#111", (20, 0)), Series("paid", "#222", (30, 100))],
        height=236,
    )
    ET.fromstring(svg)  # noqa: S314 (well-formed: our own output)
    # plot height 236 − 28 − 36 = 172 for an axis top of 100: 20 → 34.4, 30 → 51.6, 100 → 172 (no 0-high bar)
    assert heights(svg) == [34.4, 51.6, 172.0]
    assert "03-08 paid: 30" in svg and "03-09 paid: 100" in svg


def test_bars_scale_to_the_maximum() -> None:
    svg = bars(rows=[("a", 0.5, "50%"), ("b", 1.0, "100%")], maximum=1.0, width=440)
    ET.fromstring(svg)  # noqa: S314 (our own output, to check it is well-formed)
    assert re.findall(r'<rect class="bar"[^>]* width="([0-9.]+)"', svg) == ["100.0", "200.0"]


def test_every_text_is_escaped() -> None:
    evil = '<script>alert("x")</script>&'
    for svg in (
        columns(labels=[evil], series=[Series(evil, '"red', (5,))]),
        bars(rows=[(evil, 1.0, evil)], color='"/><script>'),
    ):
        ET.fromstring(svg)  # noqa: S314 (our own output, to check it is well-formed)
        assert "<script>" not in svg and "&lt;script&gt;" in svg


def test_nothing_to_draw_is_still_a_chart() -> None:
    ET.fromstring(columns(labels=[], series=[]))  # noqa: S314 (our own output, to check it is well-formed)
    ET.fromstring(bars(rows=[]))  # noqa: S314 (our own output, to check it is well-formed)
