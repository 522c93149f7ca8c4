"""Reads for lorebooks: lists, the caller's book, export, engine entries and the activation every caller
(the roleplay turn, its preview, the dry run) runs through (:func:`world_info_activate`)."""

from __future__ import annotations

import random
import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from django.conf import settings as django_settings
from django.db.models import Count, Q, QuerySet

from apps.cards import st_entries_to_character_book, st_entries_to_lorebook_v3
from apps.macros.engine import MacroContext, expand
from apps.worldviews.engine import (
    ActivationResult,
    ActivationSettings,
    ChatLine,
    Entry,
    RegexLimits,
    Source,
    activate,
    entry_from_st,
)
from apps.worldviews.models import Lorebook, LorebookEntry


def lorebook_list(*, user: Any, search: str | None = None, character_id: int | None = None) -> QuerySet[Lorebook]:
    qs = Lorebook.objects.filter(owner=user)
    if search:
        qs = qs.filter(name__icontains=search)
    if character_id is not None:
        qs = qs.filter(character_id=character_id)
    return qs.annotate(entry_count=Count("entries")).order_by("-updated_at", "-id")


def lorebook_get_owned(*, user: Any, pk: int) -> Lorebook | None:
    """The caller's lorebook or None (someone else's is indistinguishable from a missing one; the caller
    picks 404 or 400)."""
    return Lorebook.objects.filter(pk=pk, owner=user).first()


def lorebooks_get_owned(*, user: Any, ids: Iterable[int]) -> dict[int, Lorebook]:
    """The caller's lorebooks among ``ids``, by id: someone else's and missing ones are absent alike."""
    return {book.pk: book for book in Lorebook.objects.filter(pk__in=ids, owner=user)}


def lorebook_entries(*, lorebook: Lorebook) -> QuerySet[LorebookEntry]:
    return LorebookEntry.objects.filter(lorebook=lorebook).order_by("uid")


def entry_get_owned(*, user: Any, lorebook_id: int, uid: int) -> LorebookEntry | None:
    """An entry of one of the caller's lorebooks, or None."""
    return (
        LorebookEntry.objects.select_related("lorebook")
        .filter(lorebook_id=lorebook_id, lorebook__owner=user, uid=uid)
        .first()
    )


def lorebook_st_entries(*, lorebook: Lorebook) -> list[dict[str, Any]]:
    """The book's entries as ST dicts (``uid`` first), ordered by uid."""
    return [row.data for row in lorebook_entries(lorebook=lorebook)]


def lorebook_export(*, lorebook: Lorebook, fmt: Literal["st", "v3"]) -> dict[str, Any]:
    """ST world-info file ``{"entries": {"<uid>": entry}}`` (plus kept top-level keys) or
    ``{"spec": "lorebook_v3", "data": book}`` (book-level fields of an imported book kept)."""
    entries = lorebook_st_entries(lorebook=lorebook)
    if fmt == "st":
        return {**lorebook.st_extra, "entries": {str(e["uid"]): e for e in entries}}
    base = {**lorebook.book_extra, "description": lorebook.description}
    return st_entries_to_lorebook_v3(entries, name=lorebook.name, base_book=base)


def lorebook_character_book(*, lorebook: Lorebook) -> dict[str, Any]:
    """The book as a card's ``character_book`` (to embed into a card)."""
    base = {**lorebook.book_extra, "description": lorebook.description}
    return st_entries_to_character_book(lorebook_st_entries(lorebook=lorebook), name=lorebook.name, base_book=base)


# ------------------------------------------------------------------------------------ engine input


def lorebook_source(lorebook: Lorebook) -> str:
    """ST source of a book on its own: linked to a character → ``character``, otherwise ``global``."""
    return Source.CHARACTER if lorebook.character_id is not None else Source.GLOBAL


_CACHE_SIZE = 64
_entry_cache: OrderedDict[tuple[int, str, str], tuple[Entry, ...]] = OrderedDict()
_entry_cache_lock = threading.Lock()


def _cached(key: tuple[int, str, str]) -> tuple[Entry, ...] | None:
    with _entry_cache_lock:
        found = _entry_cache.get(key)
        if found is not None:
            _entry_cache.move_to_end(key)
        return found


def _remember(key: tuple[int, str, str], entries: tuple[Entry, ...]) -> None:
    with _entry_cache_lock:
        _entry_cache[key] = entries
        _entry_cache.move_to_end(key)
        while len(_entry_cache) > _CACHE_SIZE:
            _entry_cache.popitem(last=False)


def engine_entries(*, lorebooks: Iterable[Lorebook], sources: Mapping[int, str] | None = None) -> list[Entry]:
    """Engine entries of several books (in the given book order, entries by uid); ``sources`` overrides
    a book's source. Converted entries are cached per process, keyed by book, ``updated_at`` (every
    entry write touches it) and source — a 5,000-entry book is read from the database once, not
    converted again on every turn. The engine's own compiled-key cache then hits too."""
    books = list(dict.fromkeys(lorebooks))
    out: list[Entry] = []
    missing: dict[int, tuple[int, str, str]] = {}
    found: dict[int, tuple[Entry, ...]] = {}
    for book in books:
        source = (sources or {}).get(book.pk) or lorebook_source(book)
        key = (book.pk, book.updated_at.isoformat(), source)
        cached = _cached(key)
        if cached is None:
            missing[book.pk] = key
        else:
            found[book.pk] = cached
    if missing:
        converted: dict[int, list[Entry]] = {pk: [] for pk in missing}
        rows = LorebookEntry.objects.filter(lorebook_id__in=missing).order_by("lorebook_id", "uid")
        for lorebook_id, data in rows.values_list("lorebook_id", "data"):
            source = missing[lorebook_id][2]
            converted[lorebook_id].append(entry_from_st(data, lorebook_id=lorebook_id, source=source))
        for pk, entries in converted.items():
            found[pk] = tuple(entries)
            _remember(missing[pk], found[pk])
    for book in books:
        out.extend(found[book.pk])
    return out


def attached_lorebooks(*, user: Any, character_id: int | None = None) -> QuerySet[Lorebook]:
    """The caller's global books and, with ``character_id``, the books linked to that character."""
    condition = Q(is_global=True)
    if character_id is not None:
        condition |= Q(character_id=character_id)
    return Lorebook.objects.filter(condition, owner=user).order_by("id")


# ------------------------------------------------------------------------------------- activation


def regex_limits() -> RegexLimits:
    """The settings' time bounds of regex keys during one activation (the engine reads no settings;
    ``WorldviewsConfig.ready`` also makes these the engine's default for every other caller)."""
    return RegexLimits(timeout=django_settings.WORLDINFO_REGEX_TIMEOUT, budget=django_settings.WORLDINFO_REGEX_BUDGET)


@dataclass(frozen=True, slots=True)
class Scene:
    """What world-info activation reads besides the entries and the chat lines.

    ``macros``: the context keys and contents are expanded with (``{{user}}``, ``{{char}}``, chat
    variables, the request's clock …; ``None``: no expansion). ``extra_scan``: the texts of the
    entries' ``match*`` sources; ``scan_injections``: other scannable prompt texts (the Author's Note);
    ``character_name``/``character_tags``: for the entries' character filters (tags ``None``: not known,
    tag filters are not applied)."""

    macros: MacroContext | None
    extra_scan: Mapping[str, str] = field(default_factory=dict)
    scan_injections: tuple[str, ...] = ()
    character_name: str | None = None
    character_tags: tuple[str, ...] | None = None


def world_info_activate(
    *,
    entries: Sequence[Entry],
    chat: Sequence[ChatLine],
    scene: Scene,
    settings: ActivationSettings,
    max_context: int,
    generation_type: str,
    timed_state: Mapping[str, Any] | None,
    rng: random.Random,
) -> ActivationResult:
    """World-info activation as generation runs it — the one path of the roleplay turn, its preview
    and the lorebook dry run. Macros are expanded as SillyTavern's ``checkWorldInfo`` does: each key
    before it is matched, each content after its probability roll and before it is counted against
    the budget (and before it joins the recursion buffer); each key and each content once per call.
    Errors of the expansion are swallowed (the text stays as written): the caller checks the macro
    budget afterwards."""
    ctx = scene.macros
    return activate(
        entries,
        chat,
        settings=settings,
        max_context=max_context,
        generation_type=generation_type,
        timed_state=timed_state,
        rng=rng,
        regex_limits=regex_limits(),
        substitute=None if ctx is None else (lambda text: expand(text, ctx)),
        extra_scan=scene.extra_scan,
        scan_injections=scene.scan_injections,
        character_name=scene.character_name,
        character_tags=scene.character_tags,
    )
