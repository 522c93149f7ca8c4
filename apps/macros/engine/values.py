"""JavaScript-compatible number parsing/printing, truthiness and block-content trimming.

ST stores macro variables in JavaScript, so ``"007"`` reads back as ``7`` and ``0.1 + 0.2``
prints as ``0.30000000000000004``; these helpers reproduce that observable behaviour.
"""

from __future__ import annotations

import json
import math
import re
from decimal import Decimal
from typing import Any

# JavaScript's StrWhiteSpaceChar: WhiteSpace + LineTerminator.
_JS_SPACE = (
    " \t\n\v\f\r\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)
# Unambiguous (each digit can only belong to one group): linear even on long non-numbers.
_DECIMAL = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?", re.ASCII)
_RADIX = re.compile(r"0(?:([xX])[0-9a-fA-F]+|([oO])[0-7]+|([bB])[01]+)", re.ASCII)
_MAX_SAFE = 2**53

#: Values an ``{{if}}`` condition (and ``||``) treats as false, compared case-insensitively.
FALSY = frozenset({"", "false", "0", "off", "no"})


def js_number(text: str) -> float | None:
    """``Number(text)`` in JavaScript, or ``None`` where JavaScript gives ``NaN``."""
    s = text.strip(_JS_SPACE)
    if not s:
        return 0.0
    if _DECIMAL.fullmatch(s):
        return float(s)
    m = _RADIX.fullmatch(s)
    if m:
        base = 16 if m.group(1) else 8 if m.group(2) else 2
        try:
            return float(int(s[2:], base))
        except OverflowError:
            return math.inf
    if s in ("Infinity", "+Infinity"):
        return math.inf
    if s == "-Infinity":
        return -math.inf
    return None


def is_numeric_text(text: str) -> bool:
    """True when a non-blank string converts to a JavaScript number."""
    return bool(text.strip(_JS_SPACE)) and js_number(text) is not None


def format_number(value: float | int) -> str:
    """``String(value)`` in JavaScript (shortest round-trip digits, JS exponent rules)."""
    if isinstance(value, int):
        if -_MAX_SAFE <= value <= _MAX_SAFE:
            return str(value)
        try:
            value = float(value)
        except OverflowError:
            return "Infinity" if value > 0 else "-Infinity"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    digits_t, exponent = Decimal(repr(abs(value))).normalize().as_tuple()[1:]
    digits = "".join(map(str, digits_t))
    k = len(digits)
    n = k + int(exponent)  # value = 0.d1d2..dk * 10**n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits[0] + ("." + digits[1:] if k > 1 else "")
        body = f"{mantissa}e{'+' if e > 0 else '-'}{abs(e)}"
    return sign + body


def to_store_number(value: float) -> int | float:
    """A JS number as the plain JSON-friendly Python value kept in variable stores."""
    if value.is_integer() and abs(value) <= _MAX_SAFE:
        return int(value)
    return value


def to_json(value: Any) -> str:
    """``JSON.stringify`` shape (no spaces, non-ASCII kept)."""
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (ValueError, TypeError, RecursionError):
        return str(value)


def display(value: Any) -> str:
    """How a stored variable value prints through ``{{getvar}}`` (numeric strings as numbers)."""
    if value is None:
        return ""
    if isinstance(value, str):
        if value and value[0] not in "[{" and is_numeric_text(value):
            number = js_number(value)
            assert number is not None
            return format_number(number)
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return format_number(value)
    if isinstance(value, list | dict | tuple):
        return to_json(value)
    return str(value)


def truthy(text: str) -> bool:
    """Condition truthiness of ST's ``{{if}}``: falsy are ``''``, ``false``, ``0``, ``off``, ``no``."""
    return text.strip().lower() not in FALSY


def dedent_trim(text: str) -> str:
    """Scoped-content cleanup: drop the first non-blank line's indent from all lines, then strip."""
    lines = text.split("\n")
    indent = ""
    for line in lines:
        if line.strip():
            indent = line[: len(line) - len(line.lstrip(" \t"))]
            break
    if indent:
        width = len(indent)
        out = []
        for line in lines:
            if line.startswith(indent):
                out.append(line[width:])
            else:
                stripped = line.lstrip(" \t")
                out.append(line[min(width, len(line) - len(stripped)) :])
        text = "\n".join(out)
    return text.strip()


def rstrip_newlines(text: str) -> str:
    """Remove a trailing run of ``\\r?\\n`` (what ``{{trim}}`` eats before itself)."""
    end = len(text)
    while end and text[end - 1] == "\n":
        end -= 1
        if end and text[end - 1] == "\r":
            end -= 1
    return text[:end]


def lstrip_newlines(text: str) -> str:
    """Remove a leading run of ``\\r?\\n`` (what ``{{trim}}`` eats after itself)."""
    start = 0
    n = len(text)
    while start < n:
        if text[start] == "\n":
            start += 1
        elif text[start] == "\r" and start + 1 < n and text[start + 1] == "\n":
            start += 2
        else:
            break
    return text[start:]


def shorthand_number(text: str) -> float | None:
    """Numeric value of a shorthand operand (``None`` when not a number or blank)."""
    return js_number(text) if text.strip() else None
