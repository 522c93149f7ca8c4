"""Compiling an entry set for activation: what does not change between calls, and its caches.

* :func:`prepare_key` and :class:`Prep`: one entry's keys, decorators, placement and flags, read once
  (the global matching flags applied); :func:`index_keys` gathers the plain items the key index needs.
* :class:`Compiled`: the preparations and key index of one entry set; :meth:`Compiled.patched` derives
  the set after a few entries changed. :class:`Ordering`: the set in one scan order (ST
  ``getSortedEntries``: chat, persona, then global and character lore by ``insertion_strategy``, each
  by descending ``order``) with duplicates, gates and the default trace.
* :func:`compiled_set` finds or makes the compiled form (by Entry identity, by patching the last set,
  by value, or from the per-entry cache); :func:`clear_caches` forgets it all.
* :class:`Scanner`: which plain keys occur in which part of the scan buffer (used per call by the loop).
* The small readers shared with the loop: :func:`as_number`, :func:`as_int`, :func:`as_strings`, and
  :func:`trace_item`.

The loop itself is in :mod:`.activation`. See docs/worldinfo.md.
"""

from __future__ import annotations

import contextlib
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from operator import attrgetter
from typing import Any

from .decorators import int_arg, parse_decorators
from .matching import (
    PWORD,
    SUB,
    WORD,
    PlainMatcher,
    clear_matchers,
    compile_cache_clear,
    fold_case,
    parse_regex_key,
    plain_kind,
)
from .model import (
    DEFAULT_DEPTH,
    DEFAULT_WEIGHT,
    Entry,
    InsertionStrategy,
    MatchedIn,
    Position,
    Role,
    Source,
    TraceItem,
)

# Extra scan sources: Entry flag -> canonical ``extra_scan`` name, in ST's order.
EXTRA_SOURCES = (
    ("match_persona_description", "persona_description"),
    ("match_character_description", "character_description"),
    ("match_character_personality", "character_personality"),
    ("match_character_depth_prompt", "character_depth_prompt"),
    ("match_scenario", "scenario"),
    ("match_creator_notes", "creator_notes"),
)

_POSITIONS_BY_DECORATOR = {
    "before_desc": Position.BEFORE,
    "after_desc": Position.AFTER,
    "personality": Position.AFTER,
    "scenario": Position.AFTER,
}
_ROLES_BY_NAME = {"system": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}


def as_number(value: Any, default: float) -> float:
    """A finite number from a stored value (a bool counts as 0 or 1); ``default`` for anything else."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return default
        return number if math.isfinite(number) else default
    return default


def as_int(value: Any, default: int) -> int:
    """:func:`as_number`, truncated to an int."""
    return int(as_number(value, default))


def _opt_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return int(value)
    return int(value) if math.isfinite(value) else None


def as_strings(value: Any) -> tuple[str, ...]:
    """A string as a 1-tuple, or the strings of a list or tuple (other items dropped)."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple | list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


# A prepared key: ("p", kind, cs, text) plain; ("r", RegexKey) regex; ("x",) empty (never matches).
Key = tuple


@lru_cache(maxsize=65536)
def prepare_key(text: str, cs: bool, whole_words: bool) -> Key:
    text = text.strip()
    if not text:
        return ("x",)
    regex = parse_regex_key(text) if text[0] == "/" else None
    if regex is not None:
        return ("r", regex)
    if not cs:
        text = fold_case(text)
    return ("p", plain_kind(text, whole_words), cs, text)


@dataclass(slots=True, eq=False)
class Prep:
    """What does not change between calls for one entry (cached with the compiled entry set)."""

    entry: Entry
    index: int
    key: str
    label: str
    content: str
    decorators: dict[str, str]
    raw_primary: list[str]
    raw_secondary: list[str]
    raw_exclude: list[str]
    primary: list[Key]
    secondary: list[Key]
    exclude: list[Key]
    groups: tuple[str, ...]
    cs: bool
    whole_words: bool
    scoring: bool
    scan_depth: int | None
    delay_level: int
    order: float
    position: int
    depth: int
    role: int
    extras: tuple[str, ...]
    has_regex: bool
    weight: float
    probability: float
    use_probability: bool
    dynamic: bool
    simple: bool
    source_rank: int
    gated: bool
    # What the key index needs: every plain item (cs, kind, text) of the entry's keys, and the
    # ``owners`` keys (cs, SUB or WORD, text) of its primary keys. None: compute from the keys.
    items: tuple[tuple[bool, int, str], ...] | None = None
    owner_items: tuple[tuple[bool, int, str], ...] | None = None
    trace: TraceItem | None = None  # the default trace item, made on first use (depends on ``simple``)


class Scanner:
    """Which plain keys occur in which part of the scan buffer, for one case-sensitivity."""

    def __init__(
        self,
        matcher: PlainMatcher,
        messages: list[str],
        extras: Mapping[str, str],
        injections: list[str],
        transform: Callable[[str], str] | None = None,
    ):
        self.matcher = matcher
        self.messages = messages  # raw; ``transform`` (case folding) is applied when a line is scanned
        self.transform = transform
        self.first: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self.scanned = 0
        self.extra_found = {name: matcher.scan(text) for name, text in extras.items() if text}
        inj_sub: set[str] = set()
        inj_word: set[str] = set()
        self.inj_found = [matcher.scan(text) for text in injections]
        for found_sub, found_word in self.inj_found:
            inj_sub |= found_sub
            inj_word |= found_word
        self.inj = (inj_sub, inj_word)
        # key -> index of the first recursion content (in the order added) that holds it
        self.rec: tuple[dict[str, int], dict[str, int]] = ({}, {})
        self.rec_count = 0
        # Keys seen for the first time since the last :meth:`drain`, as (slot, key) with slot 0 for
        # substring keys and 1 for whole-word keys: outside the recursion buffer (chat lines, extra
        # sources, injections) and in it. The loop turns them into candidate entries incrementally, so a
        # step costs in proportion to what is new, not to everything found so far.
        self.new_base: list[tuple[int, str]] = [(0, k) for k in inj_sub] + [(1, k) for k in inj_word]
        for found_sub, found_word in self.extra_found.values():
            self.new_base += [(0, k) for k in found_sub]
            self.new_base += [(1, k) for k in found_word]
        self.new_rec: list[tuple[int, str]] = []

    def ensure(self, depth: int) -> None:
        depth = min(depth, len(self.messages))
        first_sub, first_word = self.first
        transform = self.transform
        for i in range(self.scanned, depth):
            text = self.messages[i]
            found_sub, found_word = self.matcher.scan(transform(text) if transform is not None else text)
            for key in found_sub:
                if key not in first_sub:
                    first_sub[key] = i
                    self.new_base.append((0, key))
            for key in found_word:
                if key not in first_word:
                    first_word[key] = i
                    self.new_base.append((1, key))
        self.scanned = max(self.scanned, depth)

    def add_recursion(self, contents: list[str]) -> None:
        """Scan the contents that join the recursion buffer, one entry at a time (so an entry's content
        is scanned once across turns; a plain key does not match across two entries' contents)."""
        transform = self.transform
        rec_sub, rec_word = self.rec
        new_rec = self.new_rec
        for text in contents:
            found_sub, found_word = self.matcher.scan(transform(text) if transform is not None else text)
            number = self.rec_count
            self.rec_count = number + 1
            for key in found_sub:
                if key not in rec_sub:
                    rec_sub[key] = number
                    new_rec.append((0, key))
            for key in found_word:
                if key not in rec_word:
                    rec_word[key] = number
                    new_rec.append((1, key))

    def has(self, kind: int, text: str, depth: int, extras: tuple[str, ...], use_recursion: bool) -> bool:
        slot = 0 if kind == SUB else 1
        index = self.first[slot].get(text)
        if index is not None and index < depth:
            return True
        if text in self.inj[slot]:
            return True
        for name in extras:
            found = self.extra_found.get(name)
            if found is not None and text in found[slot]:
                return True
        return use_recursion and text in self.rec[slot]

    def where(
        self, kind: int, text: str, depth: int, extras: tuple[str, ...], use_recursion: bool
    ) -> tuple[str, int | str | None] | None:
        """Where :meth:`has` finds the key, in scan-text order: ``("chat", line)`` (0 = newest),
        ``("extra", name)``, ``("injection", i)``, ``("recursion", content number)``; None if nowhere."""
        slot = 0 if kind == SUB else 1
        index = self.first[slot].get(text)
        if index is not None and index < depth:
            return "chat", index
        for name in extras:
            found = self.extra_found.get(name)
            if found is not None and text in found[slot]:
                return "extra", name
        for i, found in enumerate(self.inj_found):
            if text in found[slot]:
                return "injection", i
        number = self.rec[slot].get(text) if use_recursion else None
        return ("recursion", number) if number is not None else None


def _order_of(entry: Entry) -> float:
    return as_number(entry.order, 100.0)


_SOURCE_RANK = {Source.CHAT: 0, Source.PERSONA: 1, Source.CHARACTER: 2, Source.GLOBAL: 3}


def _sorted_indices(preps: Sequence[Prep], strategy: int) -> list[int]:
    """ST ``getSortedEntries``: chat lore, persona lore, then global/character by strategy; each part by
    descending ``order`` (stable)."""
    buckets: dict[int, list[Prep]] = {0: [], 1: [], 2: [], 3: []}
    for prep in preps:
        buckets[prep.source_rank].append(prep)

    def by_order(items: list[Prep]) -> list[Prep]:
        return sorted(items, key=lambda p: -p.order)

    glob, char = buckets[3], buckets[2]
    if strategy == InsertionStrategy.EVENLY:
        rest = by_order(glob + char)
    elif strategy == InsertionStrategy.GLOBAL_FIRST:
        rest = by_order(glob) + by_order(char)
    else:
        rest = by_order(char) + by_order(glob)
    return [p.index for p in (*by_order(buckets[0]), *by_order(buckets[1]), *rest)]


def sort_entries(entries: Iterable[Entry], strategy: int = InsertionStrategy.CHARACTER_FIRST) -> list[Entry]:
    """Entries in ST's scan order (see :func:`_sorted_indices`)."""
    compiled = compiled_set(entries, False, True, False)
    return [compiled.preps[i].entry for i in _sorted_indices(compiled.preps, strategy)]


def _num_fast(value: Any, default: float) -> float:
    kind = type(value)
    if kind is int or kind is float:
        try:
            number = float(value)
        except OverflowError:
            return default
        return number if number - number == 0 else default  # finite
    return as_number(value, default)


def _str_list(value: Any) -> list[str]:
    if type(value) is tuple or type(value) is list:
        return [k for k in value if type(k) is str]
    return list(as_strings(value))


def _prepare(entry: Entry, index: int, g_cs: bool, g_ww: bool, g_scoring: bool) -> Prep:
    content = entry.content if type(entry.content) is str else ""
    decorators: dict[str, str] = {}
    if content.startswith("@@"):
        decorators, content = parse_decorators(content)
    cs = g_cs if entry.case_sensitive is None else bool(entry.case_sensitive)
    ww = g_ww if entry.match_whole_words is None else bool(entry.match_whole_words)
    scoring = g_scoring if entry.use_group_scoring is None else bool(entry.use_group_scoring)
    raw_primary = _str_list(entry.key)
    raw_secondary = _str_list(entry.keysecondary)
    raw_exclude: list[str] = []
    if decorators:
        if "additional_keys" in decorators:
            raw_primary += [k for k in decorators["additional_keys"].split(",") if k.strip()]
        raw_exclude = [k for k in decorators.get("exclude_keys", "").split(",") if k.strip()]
    primary = [prepare_key(k, cs, ww) for k in raw_primary]
    secondary = [prepare_key(k, cs, ww) for k in raw_secondary] if raw_secondary else []
    exclude = [prepare_key(k, cs, ww) for k in raw_exclude] if raw_exclude else []
    group = entry.group if type(entry.group) is str else ""
    groups = tuple(dict.fromkeys([g for g in (p.strip() for p in group.split(",")) if g])) if group else ()
    scan_depth = entry.scan_depth if entry.scan_depth is None or type(entry.scan_depth) is int else None
    if scan_depth is None and entry.scan_depth is not None:
        scan_depth = _opt_int(entry.scan_depth)
    position = int(entry.position) if isinstance(entry.position, int) else as_int(entry.position, Position.BEFORE)
    depth = int(entry.depth) if isinstance(entry.depth, int) else as_int(entry.depth, DEFAULT_DEPTH)
    role = int(entry.role) if isinstance(entry.role, int) else as_int(entry.role, Role.SYSTEM)
    if decorators:
        if "scan_depth" in decorators:
            scan_depth = int_arg(decorators["scan_depth"])
        if "position" in decorators:
            position = _POSITIONS_BY_DECORATOR.get(decorators["position"].strip().lower(), position)
        if "depth" in decorators and (value := int_arg(decorators["depth"])) is not None:
            position, depth = Position.AT_DEPTH, max(0, value)
        if "role" in decorators:
            role = _ROLES_BY_NAME.get(decorators["role"].strip().lower(), role)
    level = entry.delay_until_recursion
    level = max(0, int(level) if isinstance(level, bool | int) else as_int(level, 0))
    extras: tuple[str, ...] = ()
    if (
        entry.match_persona_description
        or entry.match_character_description
        or entry.match_character_personality
        or entry.match_character_depth_prompt
        or entry.match_scenario
        or entry.match_creator_notes
    ):
        extras = tuple([name for flag, name in EXTRA_SOURCES if getattr(entry, flag, False) is True])
    has_regex = False
    primary_ok = True  # every regex primary key has a literal to index
    for k in primary:
        if k[0] == "r":
            has_regex = True
            if k[1].literal is None:
                primary_ok = False
    if not has_regex:
        for k in secondary:
            if k[0] == "r":
                has_regex = True
                break
        for k in exclude:
            if k[0] == "r":
                has_regex = True
                break
    dynamic = False
    for raw_key in raw_primary:
        if "{{" in raw_key or "<" in raw_key:
            dynamic = True
            break
    if not dynamic:
        for raw_key in raw_secondary + raw_exclude:
            if "{{" in raw_key or "<" in raw_key:
                dynamic = True
                break
    book = "" if entry.lorebook_id is None else f"{entry.lorebook_id}:"
    items, owner_items = _key_items(primary, secondary, exclude)
    return Prep(  # positional (field order): twice as fast as keywords for 33 fields
        entry,
        index,
        entry.effect_key,
        f"{book}{entry.uid}",
        content,
        decorators,
        raw_primary,
        raw_secondary,
        raw_exclude,
        primary,
        secondary,
        exclude,
        groups,
        cs,
        ww,
        scoring,
        scan_depth,
        level,
        _num_fast(entry.order, 100.0),
        position,
        depth,
        role,
        extras,
        has_regex,
        _num_fast(entry.group_weight, DEFAULT_WEIGHT),
        _num_fast(entry.probability, 100),
        bool(entry.use_probability),
        dynamic,
        bool(primary) and primary_ok and not (entry.constant is True or decorators or level),
        _SOURCE_RANK.get(entry.source, 3),
        bool(
            entry.disable is not False
            or entry.triggers
            or entry.character_filter is not None
            or entry.delay
            or "activate_only_after" in decorators
            or "activate_only_every" in decorators
        ),
        items,
        owner_items,
    )


def _plain_item(k: Key) -> tuple[bool, int, str] | None:
    """``(case_sensitive, kind, text)`` the plain matcher looks for on behalf of a prepared key: the key
    itself, or the required literal of a regex key (a cheap necessary condition)."""
    if k[0] == "p":
        return k[2], k[1], k[3]
    if k[0] == "r" and k[1].literal is not None:
        return not k[1].ci, SUB, k[1].literal
    return None


def _key_items(
    primary: list[Key], secondary: list[Key], exclude: list[Key]
) -> tuple[tuple[tuple[bool, int, str], ...], tuple[tuple[bool, int, str], ...]]:
    """``(plain items of all keys, owners keys of the primary keys)`` for :func:`index_keys`: what
    :func:`_plain_item` gives, inlined (this runs for every entry prepared)."""
    items: list[tuple[bool, int, str]] = []
    owner_items: list[tuple[bool, int, str]] = []
    for k in primary:
        tag = k[0]
        if tag == "p":
            item = (k[2], k[1], k[3])
            items.append(item)
            owner_items.append(item if k[1] != PWORD else (k[2], WORD, k[3]))
        elif tag == "r" and k[1].literal is not None:
            item = (not k[1].ci, SUB, k[1].literal)
            items.append(item)
            owner_items.append(item)
    for keys in (secondary, exclude):
        for k in keys:
            plain = _plain_item(k)
            if plain is not None:
                items.append(plain)
    return tuple(items), tuple(owner_items)


def index_keys(preps: Iterable[Prep], items: dict[bool, set], owners: dict[tuple, list[int]]) -> None:
    by_cs = (items[False], items[True])
    for prep in preps:
        key_items, owner_items = prep.items, prep.owner_items
        if key_items is None or owner_items is None:
            key_items, owner_items = _key_items(prep.primary, prep.secondary, prep.exclude)
        for cs, kind, text in key_items:
            by_cs[cs].add((kind, text))
        index = prep.index
        for owner in owner_items:
            ids = owners.get(owner)
            if ids is None:
                owners[owner] = [index]
            else:
                ids.append(index)


class Compiled:
    """Per-entry preparation and the key index of one entry set (cached across calls)."""

    def __init__(
        self, entries: tuple[Entry, ...], cs: bool, ww: bool, scoring: bool, hashes: list[int] | None = None
    ) -> None:
        self.entries = entries
        self.hashes = hashes  # value hashes of the entries, when known (see :meth:`patched`)
        if hashes is None:
            self.preps = [_prepare(e, i, cs, ww, scoring) for i, e in enumerate(entries)]
        else:
            self.preps = _prepare_all(entries, hashes, cs, ww, scoring)
        self.items: dict[bool, set[tuple[int, str]]] = {False: set(), True: set()}
        self.owners: dict[tuple[bool, int, str], list[int]] = {}
        index_keys(self.preps, self.items, self.owners)
        self.frozen_items = {cs_: frozenset(v) for cs_, v in self.items.items()}
        self.dynamic = [p.index for p in self.preps if p.dynamic]
        self._orders: dict[int, Ordering] = {}

    def patched(
        self,
        entries: tuple[Entry, ...],
        changed: list[int],
        flags: tuple[bool, bool, bool],
        hashes: list[int] | None = None,
    ) -> Compiled:
        """A copy for ``entries``, which differ from ours only at the ``changed`` positions (elsewhere
        they are the same objects, or equal ones when ``hashes`` are given: then our equal Entry objects
        are kept, as for a value-cache hit). Only the changed entries are (re)prepared (or taken from the
        per-entry cache). The key index and the scan orders are shared or patched when the changed
        entries keep their keys and their place in the order (the usual edit: content, probability, …),
        and rebuilt otherwise."""
        new = object.__new__(Compiled)
        new.entries = entries
        if hashes is None and self.hashes is not None:
            hashes = list(self.hashes)
        new.hashes = hashes
        preps = list(self.preps)
        same_keys = True
        same_place = True
        for i in changed:
            entry = entries[i]
            try:
                value_hash = hash(entry)
            except TypeError:
                prep = _prepare(entry, i, *flags)
                hashes = new.hashes = None
            else:
                prep = _prepare_one(entry, i, value_hash, flags)
                if hashes is not None:
                    hashes[i] = value_hash
            old = preps[i]
            preps[i] = prep
            if old.items is None or old.items != prep.items or old.owner_items != prep.owner_items:
                same_keys = False
            if _place(old) != _place(prep):
                same_place = False
        new.preps = preps
        if same_keys:
            new.items, new.owners, new.frozen_items = self.items, self.owners, self.frozen_items
        else:
            new.items = {False: set(), True: set()}
            new.owners = {}
            index_keys(preps, new.items, new.owners)
            new.frozen_items = {cs_: frozenset(v) for cs_, v in new.items.items()}
        new.dynamic = [p.index for p in preps if p.dynamic]
        new._orders = {}
        if same_place:
            for strategy, ordering in self._orders.items():
                new._orders[strategy] = ordering.patched(preps, changed)
        return new

    def order(self, strategy: int) -> Ordering:
        """Scan order and per-order lookups for an insertion strategy (cached)."""
        cached = self._orders.get(strategy)
        if cached is None:
            cached = self._orders[strategy] = Ordering(self.preps, strategy)
        return cached


def _place(prep: Prep) -> tuple[Any, ...]:
    """What decides an entry's part in an :class:`Ordering` (besides its trace item and Entry object)."""
    entry = prep.entry
    return (
        prep.order,
        prep.source_rank,
        entry.lorebook_id,
        entry.uid,
        prep.key,
        prep.gated,
        prep.simple,
        prep.scan_depth,
        prep.delay_level,
    )


class Ordering:
    """Everything about an entry set in one scan order that does not depend on the call."""

    def patched(self, preps: list[Prep], changed: list[int]) -> Ordering:
        """A copy for ``preps`` whose ``changed`` entries have the same :func:`_place` as before."""
        new = object.__new__(Ordering)
        new.__dict__.update(self.__dict__)
        new.by_key = dict(self.by_key)
        new.default_trace = list(self.default_trace)
        for i in changed:
            position = self.rank.get(i)
            if position is None:  # a duplicate: not scanned
                continue
            prep = preps[i]
            if self.indices_by_key[prep.key][0] == i:
                new.by_key[prep.key] = prep.entry
            new.default_trace[position] = _default_trace(prep)
        return new

    def __init__(self, preps: list[Prep], strategy: int) -> None:
        seen: set[tuple[Any, Any]] = set()
        order: list[int] = []
        dupes: list[int] = []
        by_key: dict[str, Entry] = {}
        indices_by_key: dict[str, list[int]] = {}
        gated: list[int] = []
        simple: list[int] = []
        non_simple: list[int] = []
        max_scan_depth = 0
        delay_levels: set[int] = set()
        default_trace: list[TraceItem] = []
        for i in _sorted_indices(preps, strategy):  # one pass: this runs for every new entry set
            prep = preps[i]
            entry = prep.entry
            if entry.lorebook_id is not None:
                ident = (entry.lorebook_id, entry.uid)
                if ident in seen:
                    dupes.append(i)
                    continue
                seen.add(ident)
            order.append(i)
            key = prep.key
            same_key = indices_by_key.get(key)
            if same_key is None:
                by_key[key] = entry
                indices_by_key[key] = [i]
            else:
                same_key.append(i)
            if prep.gated:
                gated.append(i)
            if prep.simple:
                simple.append(i)
            else:
                non_simple.append(i)
            if prep.scan_depth and prep.scan_depth > max_scan_depth:
                max_scan_depth = prep.scan_depth
            if prep.delay_level > 0:
                delay_levels.add(prep.delay_level)
            default_trace.append(prep.trace or _default_trace(prep))
        self.order = order
        self.dupes = dupes
        self.rank = {index: rank for rank, index in enumerate(order)}
        self.by_key = by_key
        self.indices_by_key = indices_by_key
        self.gated = gated
        self.simple = frozenset(simple)
        self.non_simple = non_simple
        self.max_scan_depth = max_scan_depth
        self.delay_levels = sorted(delay_levels)
        self.default_trace = default_trace


NO_MATCH = "no primary key found in the scanned text"
NOT_SCANNED = "scanning stopped before this entry was considered"


def _default_trace(prep: Prep) -> TraceItem:
    """The trace item of an entry nothing happened to; cached on the (shared) prep, as it is the same in
    every entry set the prep is part of (it depends only on the Entry's value and ``simple``)."""
    trace = prep.trace
    if trace is None:
        entry = prep.entry
        trace = prep.trace = (
            trace_item(entry, "skipped", "no_key_match", NO_MATCH, 1, None)
            if prep.simple
            else trace_item(entry, "skipped", "not_scanned", NOT_SCANNED, 0, None)
        )
    return trace


def trace_item(
    entry: Entry,
    status: str,
    reason: str,
    detail: str,
    step: int,
    key: str | None,
    hit: tuple[str, str, MatchedIn | None] | None = None,
    cost: tuple[int, int] | None = None,
) -> TraceItem:
    """One trace item; ``hit`` (key as written, after macros, where) and ``cost`` (tokens, running
    total) fill the match and budget fields (the hit's key replaces ``key``)."""
    comment = entry.comment if isinstance(entry.comment, str) else ""
    text = where = None
    if hit is not None:
        key, text, where = hit
    tokens, total = cost if cost is not None else (None, None)
    return TraceItem(
        entry.lorebook_id,
        entry.uid,
        status,
        reason,
        detail,
        step,
        key,
        entry.source,
        comment,
        text,
        where,
        tokens,
        total,
    )


# Per-entry cache of preparations: (hash of the Entry's value, global flags) -> a Prep made from an equal
# Entry. An edited entry is a new value, so editing one entry of a book re-prepares only that entry;
# unchanged (or equal, rebuilt) entries reuse their preparation, copied when the Entry object or its
# position differs. Prep objects are never mutated once made (``_Run`` replaces dynamic ones).
_PREPS: dict[tuple[int, bool, bool, bool], Prep] = {}
_PREP_CACHE_SIZE = 32768  # entries; each holds its Entry and prepared keys
_PREP_FIELDS = attrgetter(*(f.name for f in fields(Prep)))


def _prepare_one(entry: Entry, index: int, value_hash: int, flags: tuple[bool, bool, bool]) -> Prep:
    cache_key = (value_hash, *flags)
    prep = _PREPS.get(cache_key)
    if prep is not None and (prep.entry is entry or prep.entry == entry):
        if prep.entry is not entry or prep.index != index:
            prep = Prep(entry, index, *_PREP_FIELDS(prep)[2:])
        return prep
    prep = _prepare(entry, index, *flags)
    _PREPS[cache_key] = prep
    return prep


def _trim_preps() -> None:
    """Evict the oldest quarter of the per-entry cache once it is full (in one go: cheap on average)."""
    cache = _PREPS
    if len(cache) > _PREP_CACHE_SIZE:
        with contextlib.suppress(KeyError, RuntimeError):  # concurrent callers may evict entries too
            for stale in list(cache)[: len(cache) - _PREP_CACHE_SIZE * 3 // 4]:
                del cache[stale]


def _prepare_all(entries: tuple[Entry, ...], hashes: list[int], cs: bool, ww: bool, scoring: bool) -> list[Prep]:
    flags = (cs, ww, scoring)
    preps = [_prepare_one(e, i, h, flags) for i, (e, h) in enumerate(zip(entries, hashes, strict=True))]
    _trim_preps()
    return preps


# The compiled set built last, per flags: a set that differs from it in a few positions (an edited
# entry) is derived from it by :meth:`Compiled.patched` without hashing or indexing every entry.
_LAST: dict[tuple[bool, bool, bool], Compiled] = {}
_PATCH_MAX = 64


# key -> (the Entry objects the key was made from, their compiled form). Holding the objects keeps
# their ids from being reused while an id-based key refers to them.
_COMPILED: OrderedDict[Any, tuple[tuple[Entry, ...], Compiled]] = OrderedDict()
_COMPILED_CACHE_SIZE = 16


def _cache_put(key: Any, items: tuple[Entry, ...], compiled: Compiled) -> None:
    with contextlib.suppress(KeyError):  # concurrent callers may evict entries in between
        _COMPILED[key] = (items, compiled)
        _COMPILED.move_to_end(key)
        while len(_COMPILED) > _COMPILED_CACHE_SIZE:
            _COMPILED.popitem(last=False)


def compiled_set(entries: Iterable[Entry], cs: bool, ww: bool, scoring: bool) -> Compiled:
    """The compiled form of an entry set and global matching flags, found or made, cheapest first:

    * cached by the identity of the Entry objects;
    * derived from the last set used with these flags when at most :data:`_PATCH_MAX` positions hold
      other objects (an entry edited in place): only those are prepared, see :meth:`Compiled.patched`;
    * cached by value (hashing every entry, ~10 ms for 5,000), so entries rebuilt from storage with the
      same content reuse the work;
    * derived from the last set when at most :data:`_PATCH_MAX` entries differ *by value* (a book
      rebuilt from storage after an edit);
    * otherwise built, every entry's preparation coming from the per-entry cache when an equal Entry
      was prepared before (:func:`_prepare_one`).
    """
    items = tuple(entries) if entries else ()
    if items and set(map(type, items)) != {Entry}:
        items = tuple(e for e in items if isinstance(e, Entry))
    flags = (cs, ww, scoring)
    id_key = ("id", tuple(map(id, items)), flags)
    hit = _COMPILED.get(id_key)
    if hit is not None:
        _cache_put(id_key, items, hit[1])
        _LAST[flags] = hit[1]
        return hit[1]
    base = _LAST.get(flags)
    if base is not None and len(base.entries) == len(items):
        changed = [i for i, (old, new) in enumerate(zip(base.entries, items, strict=True)) if old is not new]
        if len(changed) <= _PATCH_MAX:
            compiled = base.patched(items, changed, flags)
            _trim_preps()
            _cache_put(id_key, items, compiled)
            _LAST[flags] = compiled
            return compiled
    hashes: list[int] | None
    try:
        hashes = [hash(e) for e in items]  # each Entry hashed once, for both caches below
    except TypeError:  # an entry built by hand with an unhashable field
        hashes = None
    value_key: Any = None
    if hashes is not None:
        value_key = ("value", hash(tuple(hashes)), len(items), flags)
        hit = _COMPILED.get(value_key)
        if hit is not None and hit[0] != items:  # a hash collision
            hit = None
    if hit is None and hashes is not None and base is not None and base.hashes is not None:
        # Entries rebuilt from storage after an edit: new objects, mostly equal to the last set's.
        old_entries, old_hashes = base.entries, base.hashes
        if len(old_entries) == len(items):
            changed = [
                i
                for i, (old, new, h) in enumerate(zip(old_entries, items, hashes, strict=True))
                if h != old_hashes[i] or (old is not new and old != new)
            ]
            if len(changed) <= _PATCH_MAX:
                compiled = base.patched(items, changed, flags, hashes)
                _trim_preps()
                _cache_put(value_key, items, compiled)
                _cache_put(id_key, items, compiled)
                _LAST[flags] = compiled
                return compiled
    if hit is not None:
        compiled = hit[1]
    else:
        compiled = Compiled(items, cs, ww, scoring, hashes)
        if value_key is not None:
            _cache_put(value_key, items, compiled)
    _cache_put(id_key, items, compiled)
    _LAST[flags] = compiled
    return compiled


def clear_caches() -> None:
    """Forget compiled entry sets, key matchers and regexes (tests and benchmarks)."""
    _COMPILED.clear()
    _PREPS.clear()
    _LAST.clear()
    prepare_key.cache_clear()
    parse_regex_key.cache_clear()
    clear_matchers()
    compile_cache_clear()
