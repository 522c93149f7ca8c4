"""Variable operations on caller-owned stores, with ST's (JavaScript) semantics."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from typing import Any

from apps.macros.engine.values import display, format_number, js_number, to_json, to_store_number

type Store = MutableMapping[str, Any]


def _clip(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit]
    return value


def var_get(store: Store, name: str) -> str:
    """``{{getvar}}``: missing → ``''``; numeric strings print as numbers (``"007"`` → ``7``)."""
    return display(store.get(name))


def var_set(store: Store, name: str, value: str, limit: int) -> None:
    store[name] = _clip(value, limit)


def value_size(value: Any) -> int:
    """Work estimate for reading or rewriting a stored value: strings are scanned and copied."""
    if isinstance(value, str):
        return len(value) + 1
    return 1


def var_add(store: Store, name: str, value: str, limit: int) -> Any:
    """``{{addvar}}``: JSON arrays append, two numbers add, anything else concatenates.

    Returns the new stored value (``None`` when the sum is NaN and nothing was stored);
    print it with :func:`~apps.macros.engine.values.display`.
    """
    raw = store.get(name)
    if isinstance(raw, list):
        raw.append(value)  # in place: O(1), the caller's list object keeps growing
        store[name] = raw
        return raw
    current: Any = raw
    if isinstance(raw, str):
        number = js_number(raw) if raw.strip() else None
        current = number if number is not None else raw
        if raw.lstrip().startswith("["):
            try:
                parsed = json.loads(raw)
            except (ValueError, RecursionError):
                parsed = None
            if isinstance(parsed, list):
                parsed.append(value)
                text = _clip(to_json(parsed), limit)
                store[name] = text
                return text
    elif isinstance(raw, bool):
        current = "true" if raw else "false"
    elif raw is not None and not isinstance(raw, int | float):
        current = display(raw)
    if current is None or current == "" or current == 0:
        current = 0  # JavaScript: `getVariable(name) || 0`
    increment = js_number(value)
    if isinstance(current, str):
        current_number = js_number(current)
    else:
        try:
            current_number = float(current)
        except OverflowError:
            current_number = None
    if increment is None or current_number is None:
        prefix = current if isinstance(current, str) else (format_number(current) if current else "")
        text = _clip(prefix + value, limit)
        store[name] = text
        return text
    total = current_number + increment
    if total != total:  # NaN (inf - inf)
        return None
    stored = to_store_number(total)
    store[name] = stored
    return stored


def var_has(store: Store, name: str) -> str:
    return "true" if name in store else "false"


def var_delete(store: Store, name: str) -> None:
    store.pop(name, None)
