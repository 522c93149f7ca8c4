"""moment.js-compatible date formatting (English locale) and ``humanize``.

Implements the moment format tokens ST users write in ``{{datetimeformat …}}`` and the
relative-time wording of ``{{idle_duration}}`` / ``{{timeDiff}}``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta, tzinfo

_MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
_WEEKDAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")

#: English long-date tokens, expanded before tokenising (as moment does).
LONG_FORMATS = {
    "LTS": "h:mm:ss A",
    "LT": "h:mm A",
    "L": "MM/DD/YYYY",
    "LL": "MMMM D, YYYY",
    "LLL": "MMMM D, YYYY h:mm A",
    "LLLL": "dddd, MMMM D, YYYY h:mm A",
    "l": "M/D/YYYY",
    "ll": "MMM D, YYYY",
    "lll": "MMM D, YYYY h:mm A",
    "llll": "ddd, MMM D, YYYY h:mm A",
}
_LONG_RE = re.compile(r"(\[[^\[]*\])|(\\)?(LTS|LT|LL?L?L?|l{1,4})")
# Alternatives are fixed strings or bounded repeats: no backtracking blow-up.
_TOKEN_RE = re.compile(
    r"(\[[^\[]*\])|(\\)?([Hh]mm(?:ss)?|Mo|MM?M?M?|Do|DDDo|DD?D?D?|ddd?d?|do?|w[ow]?|W[oW]?|Qo?|N{1,5}"
    r"|YYYYYY|YYYYY|YYYY|YY|y{2,4}|yo?|gg(?:ggg?)?|GG(?:GGG?)?|e|E|a|A|hh?|HH?|kk?|mm?|ss?|S{1,9}"
    r"|x|X|zz?|ZZ?|.)",
    re.S,
)


def ordinal(n: int) -> str:
    """English ordinal: 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st."""
    if (n % 100) // 10 == 1:
        return f"{n}th"
    return f"{n}" + {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")


def _js_weekday(d: date) -> int:
    return (d.weekday() + 1) % 7  # Sunday = 0


def _days_in_year(year: int) -> int:
    return 366 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 365


def _first_week_offset(year: int, dow: int, doy: int) -> int:
    fwd = 7 + dow - doy
    first = date(year, 1, 1) + timedelta(days=fwd - 1)
    fwdlw = (7 + _js_weekday(first) - dow) % 7
    return -fwdlw + fwd - 1


def _weeks_in_year(year: int, dow: int, doy: int) -> int:
    offset = _first_week_offset(year, dow, doy)
    offset_next = _first_week_offset(year + 1, dow, doy)
    return (_days_in_year(year) - offset + offset_next) // 7


def week_of_year(d: date, dow: int = 0, doy: int = 6) -> tuple[int, int]:
    """``(week, week_year)`` for a locale week rule (default: English, weeks start Sunday)."""
    offset = _first_week_offset(d.year, dow, doy)
    week = (d.timetuple().tm_yday - offset - 1) // 7 + 1
    if week < 1:
        year = d.year - 1
        return week + _weeks_in_year(year, dow, doy), year
    weeks = _weeks_in_year(d.year, dow, doy)
    if week > weeks:
        return week - weeks, d.year + 1
    return week, d.year


def _pad(n: int, width: int) -> str:
    sign = "-" if n < 0 else ""
    return sign + str(abs(n)).zfill(width)


def _hour12(dt: datetime) -> int:
    return dt.hour % 12 or 12


def _offset(dt: datetime, sep: str) -> str:
    delta = dt.utcoffset() or timedelta(0)
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}{sep}{minutes % 60:02d}"


def _fraction(dt: datetime, width: int) -> str:
    ms = dt.microsecond // 1000
    return str(ms).zfill(3)[:width] if width <= 3 else str(ms).zfill(3) + "0" * (width - 3)


def _epoch_ms(dt: datetime) -> int:
    return math.floor(dt.timestamp() * 1000)


_Fn = Callable[[datetime], str]
_TOKENS: dict[str, _Fn] = {
    "M": lambda d: str(d.month),
    "Mo": lambda d: ordinal(d.month),
    "MM": lambda d: _pad(d.month, 2),
    "MMM": lambda d: _MONTHS[d.month - 1][:3],
    "MMMM": lambda d: _MONTHS[d.month - 1],
    "Q": lambda d: str((d.month - 1) // 3 + 1),
    "Qo": lambda d: ordinal((d.month - 1) // 3 + 1),
    "D": lambda d: str(d.day),
    "Do": lambda d: ordinal(d.day),
    "DD": lambda d: _pad(d.day, 2),
    "DDD": lambda d: str(d.timetuple().tm_yday),
    "DDDo": lambda d: ordinal(d.timetuple().tm_yday),
    "DDDD": lambda d: _pad(d.timetuple().tm_yday, 3),
    "d": lambda d: str(_js_weekday(d)),
    "do": lambda d: ordinal(_js_weekday(d)),
    "dd": lambda d: _WEEKDAYS[_js_weekday(d)][:2],
    "ddd": lambda d: _WEEKDAYS[_js_weekday(d)][:3],
    "dddd": lambda d: _WEEKDAYS[_js_weekday(d)],
    "e": lambda d: str(_js_weekday(d)),
    "E": lambda d: str(d.isoweekday()),
    "w": lambda d: str(week_of_year(d)[0]),
    "wo": lambda d: ordinal(week_of_year(d)[0]),
    "ww": lambda d: _pad(week_of_year(d)[0], 2),
    "W": lambda d: str(d.isocalendar()[1]),
    "Wo": lambda d: ordinal(d.isocalendar()[1]),
    "WW": lambda d: _pad(d.isocalendar()[1], 2),
    "Y": lambda d: _pad(d.year, 4) if d.year <= 9999 else f"+{d.year}",
    "YY": lambda d: _pad(d.year % 100, 2),
    "YYYY": lambda d: _pad(d.year, 4),
    "YYYYY": lambda d: _pad(d.year, 5),
    "YYYYYY": lambda d: ("-" if d.year < 0 else "+") + _pad(abs(d.year), 6),
    "y": lambda d: str(d.year),
    "yo": lambda d: ordinal(d.year),
    "yy": lambda d: _pad(d.year, 2),
    "yyy": lambda d: _pad(d.year, 3),
    "yyyy": lambda d: _pad(d.year, 4),
    "gg": lambda d: _pad(week_of_year(d)[1] % 100, 2),
    "gggg": lambda d: _pad(week_of_year(d)[1], 4),
    "ggggg": lambda d: _pad(week_of_year(d)[1], 5),
    "GG": lambda d: _pad(d.isocalendar()[0] % 100, 2),
    "GGGG": lambda d: _pad(d.isocalendar()[0], 4),
    "GGGGG": lambda d: _pad(d.isocalendar()[0], 5),
    "N": lambda d: "AD",
    "NN": lambda d: "AD",
    "NNN": lambda d: "AD",
    "NNNN": lambda d: "Anno Domini",
    "NNNNN": lambda d: "AD",
    "H": lambda d: str(d.hour),
    "HH": lambda d: _pad(d.hour, 2),
    "h": lambda d: str(_hour12(d)),
    "hh": lambda d: _pad(_hour12(d), 2),
    "k": lambda d: str(d.hour or 24),
    "kk": lambda d: _pad(d.hour or 24, 2),
    "Hmm": lambda d: f"{d.hour}{d.minute:02d}",
    "Hmmss": lambda d: f"{d.hour}{d.minute:02d}{d.second:02d}",
    "hmm": lambda d: f"{_hour12(d)}{d.minute:02d}",
    "hmmss": lambda d: f"{_hour12(d)}{d.minute:02d}{d.second:02d}",
    "m": lambda d: str(d.minute),
    "mm": lambda d: _pad(d.minute, 2),
    "s": lambda d: str(d.second),
    "ss": lambda d: _pad(d.second, 2),
    "a": lambda d: "am" if d.hour < 12 else "pm",
    "A": lambda d: "AM" if d.hour < 12 else "PM",
    "Z": lambda d: _offset(d, ":"),
    "ZZ": lambda d: _offset(d, ""),
    "z": lambda d: d.tzname() or "",
    "zz": lambda d: d.tzname() or "",
    "X": lambda d: str(_epoch_ms(d) // 1000),
    "x": lambda d: str(_epoch_ms(d)),
}


def _expand_long(fmt: str) -> str:
    def replace(m: re.Match[str]) -> str:
        if m.group(1) or m.group(2):
            return m.group(0)
        return LONG_FORMATS[m.group(3)]

    for _ in range(5):
        expanded = _LONG_RE.sub(replace, fmt)
        if expanded == fmt:
            break
        fmt = expanded
    return fmt


def format_moment(dt: datetime, fmt: str) -> str:
    """``moment(dt).format(fmt)`` for the English locale."""
    out: list[str] = []
    for m in _TOKEN_RE.finditer(_expand_long(fmt)):
        bracket, escaped, token = m.groups()
        if bracket is not None:
            out.append(bracket[1:-1])
        elif escaped:
            out.append(token)
        elif token[0] == "S":
            out.append(_fraction(dt, len(token)))
        else:
            fn = _TOKENS.get(token)
            out.append(fn(dt) if fn is not None else token)
    return "".join(out)


# moment's relative-time thresholds and English wording.
_UNITS = {
    "s": "a few seconds",
    "ss": "%d seconds",
    "m": "a minute",
    "mm": "%d minutes",
    "h": "an hour",
    "hh": "%d hours",
    "d": "a day",
    "dd": "%d days",
    "M": "a month",
    "MM": "%d months",
    "y": "a year",
    "yy": "%d years",
}


def _round(x: float) -> int:
    return math.floor(x + 0.5)


def humanize(milliseconds: float, with_suffix: bool = False) -> str:
    """``moment.duration(ms).humanize(with_suffix)`` in English."""
    ms = abs(milliseconds)
    seconds = _round(ms / 1000)
    minutes = _round(ms / 60_000)
    hours = _round(ms / 3_600_000)
    days_exact = ms / 86_400_000
    days = _round(days_exact)
    months_exact = days_exact * 4800 / 146097
    months = _round(months_exact)
    years = _round(months_exact / 12)
    if seconds <= 44:
        key, n = "s", seconds
    elif seconds < 45:
        key, n = "ss", seconds
    elif minutes <= 1:
        key, n = "m", 1
    elif minutes < 45:
        key, n = "mm", minutes
    elif hours <= 1:
        key, n = "h", 1
    elif hours < 22:
        key, n = "hh", hours
    elif days <= 1:
        key, n = "d", 1
    elif days < 26:
        key, n = "dd", days
    elif months <= 1:
        key, n = "M", 1
    elif months < 11:
        key, n = "MM", months
    elif years <= 1:
        key, n = "y", 1
    else:
        key, n = "yy", years
    text = _UNITS[key].replace("%d", str(n))
    if not with_suffix:
        return text
    return f"in {text}" if milliseconds > 0 else f"{text} ago"


_UTC_OFFSET = re.compile(r"UTC\s*(?:([+-])\s*(\d{1,4})(?::(\d{2}))?)?", re.I | re.A)


def parse_utc_offset(text: str) -> timedelta | None:
    """``UTC+8`` / ``UTC-5`` / ``UTC+5:30`` / ``UTC`` → offset (moment: |n| < 16 is hours, else minutes)."""
    m = _UTC_OFFSET.fullmatch(text.strip())
    if m is None:
        return None
    sign, number, minutes = m.groups()
    if sign is None:
        return timedelta(0)
    value = int(number)
    if minutes is not None:
        if value >= 16:
            return None
        total = value * 60 + int(minutes)
    else:
        total = value * 60 if value < 16 else value
    if total >= 24 * 60:
        return None
    return timedelta(minutes=-total if sign == "-" else total)


def parse_datetime(text: str, tz: tzinfo) -> datetime | None:
    """Parse an ISO-8601-ish date/time (what ``moment(text)`` accepts); naive values use ``tz``."""
    s = text.strip()
    if not s or len(s) > 64:
        return None
    if s.endswith(("z", "Z")):
        s = s[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt
