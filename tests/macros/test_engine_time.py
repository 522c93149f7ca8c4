"""Time macros, moment-style formatting and humanized durations."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from apps.macros.engine import MacroContext, expand
from apps.macros.engine.timefmt import format_moment, humanize, week_of_year

NOW = datetime(2026, 1, 5, 15, 45, 7, 123000, tzinfo=UTC)  # a Monday
SHANGHAI = ZoneInfo("Asia/Shanghai")


def ctx(**overrides: Any) -> MacroContext:
    base: dict[str, Any] = {"now": lambda: NOW, "seed": 1}
    base.update(overrides)
    return MacroContext(**base)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{time}}", "3:45 PM"),
        ("{{date}}", "January 5, 2026"),
        ("{{weekday}}", "Monday"),
        ("{{isotime}}", "15:45"),
        ("{{isodate}}", "2026-01-05"),
        ("{{time_UTC+8}}", "11:45 PM"),
        ("{{time::UTC+8}}", "11:45 PM"),
        ("{{time_UTC-5}}", "10:45 AM"),
        ("{{time::UTC-5}}", "10:45 AM"),
        ("{{time::UTC+5:30}}", "9:15 PM"),
        ("{{time::UTC}}", "3:45 PM"),
        ("{{time::utc+1}}", "4:45 PM"),
        ("{{time::bogus}}", "{{time::bogus}}"),
        ("{{time_UTCx}}", "{{time_UTCx}}"),
        ("{{time::UTC+24:00}}", "{{time::UTC+24:00}}"),
        ("{{datetimeformat YYYY-MM-DD HH:mm:ss}}", "2026-01-05 15:45:07"),
        ("{{datetimeformat::YYYY年MM月DD日}}", "2026年01月05日"),
        ("{{datetimeformat::dddd, MMMM Do YYYY, h:mm:ss a}}", "Monday, January 5th 2026, 3:45:07 pm"),
        ("{{datetimeformat LT}}", "3:45 PM"),
        ("{{datetimeformat LTS}}", "3:45:07 PM"),
        ("{{datetimeformat L}}", "01/05/2026"),
        ("{{datetimeformat LL}}", "January 5, 2026"),
        ("{{datetimeformat LLL}}", "January 5, 2026 3:45 PM"),
        ("{{datetimeformat LLLL}}", "Monday, January 5, 2026 3:45 PM"),
        ("{{datetimeformat l|ll}}", "1/5/2026|Jan 5, 2026"),
        ("{{datetimeformat [Today is] dddd}}", "Today is Monday"),
        ("{{datetimeformat Q Qo DDD DDDo DDDD}}", "1 1st 5 5th 005"),
        ("{{datetimeformat d do dd ddd e E}}", "1 1st Mo Mon 1 1"),
        ("{{datetimeformat w wo ww W Wo WW gggg GGGG}}", "2 2nd 02 2 2nd 02 2026 2026"),
        ("{{datetimeformat YY YYYY YYYYY YYYYYY}}", "26 2026 02026 +002026"),
        ("{{datetimeformat H HH h hh k kk}}", "15 15 3 03 15 15"),
        ("{{datetimeformat m mm s ss S SS SSS SSSS}}", "45 45 7 07 1 12 123 1230"),
        ("{{datetimeformat A a}}", "PM pm"),
        ("{{datetimeformat Z ZZ}}", "+00:00 +0000"),
        ("{{datetimeformat X x}}", "1767627907 1767627907123"),
        ("{{datetimeformat M Mo MM MMM MMMM}}", "1 1st 01 Jan January"),
        ("{{datetimeformat Hmm hmm Hmmss N NNNN}}", "1545 345 154507 AD Anno Domini"),
        (r"{{datetimeformat \Y\Y}}", "YY"),
        ("{{datetimeformat::HH:mm}}", "15:45"),
        ("{{timeDiff::2026-01-05T18:00:00Z::2026-01-05T15:00:00Z}}", "in 3 hours"),
        ("{{timeDiff::2026-01-01::2026-01-05}}", "4 days ago"),
        ("{{timeDiff::2026-01-05 15:00:30+00:00::2026-01-05T15:00:00Z}}", "in a few seconds"),
        ("{{timeDiff::2026-01-05::2026-01-05}}", "a few seconds ago"),
        ("{{timeDiff::yesterday::2026-01-05}}", "Invalid date"),
        ("{{timeDiff::2026-01-05}}", "{{timeDiff::2026-01-05}}"),
        ("{{idle_duration}}|{{idleDuration}}", "just now|just now"),
    ],
)
def test_time_macros(text: str, expected: str) -> None:
    assert expand(text, ctx()) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{time}}", "11:45 PM"),
        ("{{date}}|{{weekday}}", "January 5, 2026|Monday"),
        ("{{isotime}}|{{isodate}}", "23:45|2026-01-05"),
        ("{{datetimeformat Z z}}", "+08:00 CST"),
        ("{{time::UTC+0}}", "3:45 PM"),  # an explicit offset ignores the user's zone
    ],
)
def test_user_timezone(text: str, expected: str) -> None:
    assert expand(text, ctx(tz=SHANGHAI)) == expected


def test_naive_clock_is_taken_in_the_user_timezone() -> None:
    context = ctx(tz=SHANGHAI, now=lambda: datetime(2026, 1, 6, 0, 30))
    assert expand("{{isodate}} {{isotime}} {{weekday}}", context) == "2026-01-06 00:30 Tuesday"


def test_clock_is_read_once_per_call() -> None:
    ticks = iter(NOW + timedelta(minutes=i) for i in range(100))
    assert expand("{{isotime}} {{isotime}} {{isotime}}", ctx(now=lambda: next(ticks))) == "15:45 15:45 15:45"


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (0, "a few seconds"),
        (44, "a few seconds"),
        (45, "a minute"),
        (89, "a minute"),
        (90, "2 minutes"),
        (44 * 60, "44 minutes"),
        (45 * 60, "an hour"),
        (1.6 * 3600, "2 hours"),
        (21 * 3600, "21 hours"),
        (22 * 3600, "a day"),
        (2 * 86400, "2 days"),
        (25 * 86400, "25 days"),
        (26 * 86400, "a month"),
        (319 * 86400, "10 months"),
        (320 * 86400, "a year"),
        (547 * 86400, "a year"),
        (548 * 86400, "2 years"),
    ],
)
def test_idle_duration(seconds: float, expected: str) -> None:
    context = ctx(last_interaction=NOW - timedelta(seconds=seconds))
    assert expand("{{idle_duration}}", context) == expected


@pytest.mark.parametrize(
    ("milliseconds", "expected"),
    [(3_600_000, "in an hour"), (-3_600_000, "an hour ago"), (0, "a few seconds ago"), (-86_400_000 * 3, "3 days ago")],
)
def test_humanize_with_suffix(milliseconds: float, expected: str) -> None:
    assert humanize(milliseconds, with_suffix=True) == expected


@pytest.mark.parametrize(
    ("day", "locale_week", "iso_week"),
    [
        (date(2026, 1, 1), (1, 2026), 1),
        (date(2026, 1, 4), (2, 2026), 1),
        (date(2025, 12, 28), (1, 2026), 52),
        (date(2027, 1, 1), (1, 2027), 53),
        (date(2021, 1, 1), (1, 2021), 53),
        (date(2020, 12, 31), (1, 2021), 53),
    ],
)
def test_week_numbers(day: date, locale_week: tuple[int, int], iso_week: int) -> None:
    assert week_of_year(day) == locale_week
    assert day.isocalendar()[1] == iso_week
    moment = datetime(day.year, day.month, day.day, tzinfo=UTC)
    assert format_moment(moment, "w|gggg|W") == f"{locale_week[0]}|{locale_week[1]}|{iso_week}"


@pytest.mark.parametrize(
    ("hour", "expected"),
    [(0, "12:00 AM 12 24"), (11, "11:00 AM 11 11"), (12, "12:00 PM 12 12"), (23, "11:00 PM 11 23")],
)
def test_twelve_hour_clock(hour: int, expected: str) -> None:
    moment = datetime(2026, 3, 1, hour, 0, tzinfo=UTC)
    assert format_moment(moment, "LT h k") == expected


@pytest.mark.parametrize(
    ("day", "ordinal"),
    [
        (1, "1st"),
        (2, "2nd"),
        (3, "3rd"),
        (4, "4th"),
        (11, "11th"),
        (12, "12th"),
        (13, "13th"),
        (21, "21st"),
        (22, "22nd"),
        (23, "23rd"),
        (31, "31st"),
    ],
)
def test_ordinals(day: int, ordinal: str) -> None:
    assert format_moment(datetime(2026, 1, day, tzinfo=UTC), "Do") == ordinal
