"""The two uid rules of SillyTavern world-info entries, both intended, for two different moments:

* :func:`uids_by_index` — a card's ``character_book`` becoming entries (ST 1.15 ``convertCharacterBook``:
  ``uid = entry.id``, the entry's index when it has none). Here every entry is kept: a duplicate or
  unusable id takes the index when that is free, else the smallest unused integer (ST would let the
  later entry overwrite the earlier one).
* :func:`uids_smallest_free` — entries joining a stored lorebook (REST, imports, the dry run): ST's
  ``getFreeWorldEntryUid``, the smallest integer not in use. :func:`smallest_free_uid` is the one-entry
  case.

    >>> uids_by_index([5, None, 5, "2"])
    [5, 1, 0, 2]
    >>> uids_smallest_free([5, None, 5], used=[0])
    [5, 1, 2]
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

MAX_UID = 2_147_483_647
"""The largest uid a lorebook stores (a signed 32-bit integer)."""

_DIGITS = re.compile(r"\d{1,15}")


def _book_id(value: Any) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _keep_first(wanted: Iterable[int | None], taken: set[int]) -> list[int | None]:
    """Each wanted uid that is not taken yet (first come keeps it), else ``None``; ``taken`` grows."""
    kept: list[int | None] = []
    for uid in wanted:
        if uid is not None and uid not in taken:
            taken.add(uid)
            kept.append(uid)
        else:
            kept.append(None)
    return kept


def _free(used: set[int]) -> Iterator[int]:
    """Smallest free integers first, checked against ``used`` as it is when each one is drawn."""
    candidate = 0
    while True:
        if candidate not in used:
            yield candidate
        candidate += 1


def uids_by_index(ids: Sequence[Any]) -> list[int]:
    """Book entry ``id`` values → uids: a non-negative integer (or digit string) that is unique is kept;
    the others take their index if free, else the smallest unused integer."""
    used: set[int] = set()
    kept = _keep_first((_book_id(i) for i in ids), used)
    free = _free(used)
    final: list[int] = []
    for index, uid in enumerate(kept):
        if uid is None:
            uid = index if index not in used else next(free)
            used.add(uid)
        final.append(uid)
    return final


def uids_smallest_free(wanted: Sequence[int | None], used: Iterable[int] = ()) -> list[int]:
    """Keep each wanted uid that is free (first come) and in ``0..MAX_UID``; give the others the smallest
    integers not in ``used`` nor kept."""
    taken = set(used)
    kept = _keep_first((uid if uid is not None and 0 <= uid <= MAX_UID else None for uid in wanted), taken)
    free = _free(taken)
    return [uid if uid is not None else next(free) for uid in kept]


def smallest_free_uid(used: Iterable[int]) -> int:
    """The smallest integer not in ``used``."""
    return next(_free(set(used)))
