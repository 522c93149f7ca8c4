"""Reading SillyTavern JSON values (card fields, book entries, world-info entries) from untrusted input.

One reader per rule, shared by the card codec (``model.py``, ``book.py``), the world-info engine's ST
reader (``apps/worldviews/engine/st_format.py``) and the entry schema's lenient coercion
(``apps/worldviews/engine/entry_schema.py``). Readers never raise.

    >>> text(12), text(None), text(True)
    ('12', '', '')
    >>> key_items("dragon, 龙 ,"), key_items(["a", 3, True, None])
    (['dragon', '龙'], ['a', '3'])
    >>> card_keys(["a", 3, True])
    ['a', '3', 'True']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def text(value: Any) -> str:
    """A string as it is, a number as its decimal text; anything else (``None``, a boolean, a list …)
    is ``""``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return ""
    if isinstance(value, int | float):
        return str(value)
    return ""


def key_items(value: Any) -> list[str]:
    """A key list: a comma-separated string is split (parts stripped, empty ones dropped); from any
    other iterable (not a mapping or bytes) the strings, and the numbers as text; booleans are dropped.
    Anything else is ``[]``."""
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if isinstance(value, Iterable) and not isinstance(value, Mapping | bytes):
        out = []
        for item in value:
            if isinstance(item, str):
                out.append(item)
            elif isinstance(item, int | float) and not isinstance(item, bool):
                out.append(str(item))
        return out
    return []


def card_keys(value: Any) -> list[str]:
    """A card book entry's ``keys``/``secondary_keys`` (and a world-info entry's keys written into a
    book): like :func:`key_items`, but only a string or a list is read, and a boolean in the list is
    kept as ``"True"``/``"False"`` (the codec always wrote cards that way; changing it would change
    stored cards)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    if isinstance(value, list):
        return [k if isinstance(k, str) else str(k) for k in value if isinstance(k, str | int | float)]
    return []
