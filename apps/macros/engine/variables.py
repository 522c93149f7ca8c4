"""Variable operations on caller-owned stores, with ST's (JavaScript) semantics, and a store with a
size cap (:class:`CappedStore`) for the callers that persist them."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from apps.macros.engine.values import display, format_number, js_number, to_json, to_store_number

type Store = MutableMapping[str, Any]

_UNMEASURABLE = 1 << 40  # the size of a value that cannot be serialised: nothing more fits


def stored_size(value: Any) -> int:
    """Characters ``value`` takes in the store's JSON (escapes aside)."""
    if isinstance(value, str):
        return len(value) + 2
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int | float):
        try:
            return len(str(value))
        except ValueError:  # an int past Python's str() digit limit
            return _UNMEASURABLE
    try:
        return len(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))
    except (TypeError, ValueError, RecursionError):
        return _UNMEASURABLE


def _entry_size(key: str, value: Any) -> int:
    return len(key) + 4 + stored_size(value)  # "key":value,


class CappedStore(MutableMapping[str, Any]):
    """A variable store capped at ``max_chars`` (≈ its JSON size) and ``max_keys`` keys.

    A write that would take the store past either cap is **refused**: the variable keeps its value (a
    new key is not added) and ``refused`` counts it; writes that do not grow the store (shrinking a
    value, deleting) always pass, so a store loaded above the cap can only shrink. Sizes are kept per
    key, so each write costs the size of the value written, not of the store. ``changed`` tells
    whether anything was written (lists grown in place included); ``data`` is the plain dict.
    """

    __slots__ = ("_sizes", "changed", "data", "max_chars", "max_keys", "refused", "size")

    def __init__(self, data: Mapping[str, Any], *, max_chars: int, max_keys: int) -> None:
        self.data: dict[str, Any] = dict(data)
        self.max_chars = max_chars
        self.max_keys = max_keys
        self._sizes = {key: _entry_size(key, value) for key, value in self.data.items()}
        self.size = 2 + sum(self._sizes.values())
        self.refused = 0
        self.changed = False

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def _fits(self, key: str, grown: int) -> bool:
        if key not in self.data and len(self.data) >= self.max_keys:
            return False
        return grown <= 0 or self.size + grown <= self.max_chars

    def __setitem__(self, key: str, value: Any) -> None:
        old = self._sizes.get(key, 0)
        new = _entry_size(key, value)
        if not self._fits(key, new - old):
            self.refused += 1
            return
        self.data[key] = value
        self._sizes[key] = new
        self.size += new - old
        self.changed = True

    def __delitem__(self, key: str) -> None:
        del self.data[key]
        self.size -= self._sizes.pop(key)
        self.changed = True

    def append(self, key: str, items: list[Any], item: Any) -> bool:
        """Append ``item`` to the list stored under ``key`` (in place) if the cap allows it."""
        grown = stored_size(item) + 1
        if key not in self.data or self.size + grown > self.max_chars:
            self.refused += 1
            return False
        items.append(item)
        self._sizes[key] += grown
        self.size += grown
        self.changed = True
        return True

    def __repr__(self) -> str:
        return f"CappedStore({self.data!r}, size={self.size}, max_chars={self.max_chars})"


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
        if isinstance(store, CappedStore):
            store.append(name, raw, value)
            return raw
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
