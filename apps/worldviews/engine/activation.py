"""The activation loop (ST ``checkWorldInfo``) with an activation trace. See docs/worldinfo.md."""

from __future__ import annotations

import contextlib
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from operator import attrgetter
from typing import Any, cast

from apps.providers.tokens import estimate_length, estimate_tokens

from .decorators import int_arg, parse_decorators
from .matching import (
    PWORD,
    SUB,
    WORD,
    PlainMatcher,
    RegexKey,
    clear_matchers,
    compile_cache_clear,
    fold_case,
    max_width,
    parse_regex_key,
    plain_kind,
    plain_matcher,
)
from .model import (
    DEFAULT_DEPTH,
    DEFAULT_WEIGHT,
    MAX_SCAN_DEPTH,
    POSITION_NAMES,
    ROLE_NAMES,
    ActivationResult,
    ActivationSettings,
    ChatLine,
    DepthInjection,
    Entry,
    InsertionStrategy,
    Position,
    Role,
    SelectiveLogic,
    Source,
    TraceItem,
)
from .timed import TimedEffects

# Scan states (ST ``scan_state``).
NONE, INITIAL, RECURSION, MIN_ACTIVATIONS = 0, 1, 2, 3

MATCHER = "\x01"
JOINER = "\n\x01"

# Extra scan sources: Entry flag -> canonical ``extra_scan`` name, in ST's order.
EXTRA_SOURCES = (
    ("match_persona_description", "persona_description"),
    ("match_character_description", "character_description"),
    ("match_character_personality", "character_personality"),
    ("match_character_depth_prompt", "character_depth_prompt"),
    ("match_scenario", "scenario"),
    ("match_creator_notes", "creator_notes"),
)
_EXTRA_ALIASES = {
    "personaDescription": "persona_description",
    "characterDescription": "character_description",
    "characterPersonality": "character_personality",
    "characterDepthPrompt": "character_depth_prompt",
    "creatorNotes": "creator_notes",
}

# Reason strength: a later reason replaces an earlier one only if at least as strong.
_WEAK, _KEYS, _GROUP = 0, 1, 2
_POSITIONS_BY_DECORATOR = {
    "before_desc": Position.BEFORE,
    "after_desc": Position.AFTER,
    "personality": Position.AFTER,
    "scenario": Position.AFTER,
}
_VALID_POSITIONS = frozenset(int(p) for p in Position)
_ROLES_BY_NAME = {"system": Role.SYSTEM, "user": Role.USER, "assistant": Role.ASSISTANT}


_MAX_BUDGET = 10**12


def _js_round(value: float) -> int:
    """JS ``Math.round`` (half up), clamped to a sane range."""
    if not math.isfinite(value):
        return _MAX_BUDGET if value > 0 else 0
    return max(-_MAX_BUDGET, min(_MAX_BUDGET, math.floor(value + 0.5)))


def _number(value: Any, default: float) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return default
        return number if math.isfinite(number) else default
    return default


def _int(value: Any, default: int) -> int:
    return int(_number(value, default))


def _opt_int(value: Any) -> int | None:
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, int):
        return int(value)
    return int(value) if math.isfinite(value) else None


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, tuple | list):
        return tuple(v for v in value if isinstance(v, str))
    return ()


# A prepared key: ("p", kind, cs, text) plain; ("r", RegexKey) regex; ("x",) empty (never matches).
_Key = tuple
_MARKERS = ("{{", "<")


@lru_cache(maxsize=65536)
def _prepare_key(text: str, cs: bool, whole_words: bool) -> _Key:
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
class _Prep:
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
    primary: list[_Key]
    secondary: list[_Key]
    exclude: list[_Key]
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


@dataclass(slots=True)
class _Activation:
    prep: _Prep
    how: str
    detail: str
    step: int
    content: str
    matched_key: str | None


class _Scanner:
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
        for text in injections:
            found_sub, found_word = matcher.scan(text)
            inj_sub |= found_sub
            inj_word |= found_word
        self.inj = (inj_sub, inj_word)
        self.rec: tuple[set[str], set[str]] = (set(), set())
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
            for key in found_sub:
                if key not in rec_sub:
                    rec_sub.add(key)
                    new_rec.append((0, key))
            for key in found_word:
                if key not in rec_word:
                    rec_word.add(key)
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


def _normalize_chat(chat: Iterable[Any], include_names: bool) -> list[str]:
    """Scanned messages, newest first: ``Name: text`` (or the text), trimmed; hidden/system skipped."""
    lines: list[str] = []
    for item in chat or ():
        if isinstance(item, ChatLine):
            name, content, role, hidden = item.name, item.content, item.role, item.hidden
        elif isinstance(item, Mapping):
            name, content = item.get("name", ""), item.get("content", "")
            role, hidden = item.get("role", "user"), bool(item.get("hidden", False))
        else:
            continue
        if hidden or role == "system":
            continue
        name = name if isinstance(name, str) else ""
        content = content if isinstance(content, str) else ""
        lines.append((f"{name}: {content}" if include_names else content).strip())
    lines.reverse()
    return lines


def _order_of(entry: Entry) -> float:
    return _number(entry.order, 100.0)


_SOURCE_RANK = {Source.CHAT: 0, Source.PERSONA: 1, Source.CHARACTER: 2, Source.GLOBAL: 3}


def _sorted_indices(preps: Sequence[_Prep], strategy: int) -> list[int]:
    """ST ``getSortedEntries``: chat lore, persona lore, then global/character by strategy; each part by
    descending ``order`` (stable)."""
    buckets: dict[int, list[_Prep]] = {0: [], 1: [], 2: [], 3: []}
    for prep in preps:
        buckets[prep.source_rank].append(prep)

    def by_order(items: list[_Prep]) -> list[_Prep]:
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
    compiled = _compiled(entries, False, True, False)
    return [compiled.preps[i].entry for i in _sorted_indices(compiled.preps, strategy)]


def _num_fast(value: Any, default: float) -> float:
    kind = type(value)
    if kind is int or kind is float:
        try:
            number = float(value)
        except OverflowError:
            return default
        return number if number - number == 0 else default  # finite
    return _number(value, default)


def _str_list(value: Any) -> list[str]:
    if type(value) is tuple or type(value) is list:
        return [k for k in value if type(k) is str]
    return list(_strings(value))


def _prepare(entry: Entry, index: int, g_cs: bool, g_ww: bool, g_scoring: bool) -> _Prep:
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
    primary = [_prepare_key(k, cs, ww) for k in raw_primary]
    secondary = [_prepare_key(k, cs, ww) for k in raw_secondary] if raw_secondary else []
    exclude = [_prepare_key(k, cs, ww) for k in raw_exclude] if raw_exclude else []
    group = entry.group if type(entry.group) is str else ""
    groups = tuple(dict.fromkeys([g for g in (p.strip() for p in group.split(",")) if g])) if group else ()
    scan_depth = entry.scan_depth if entry.scan_depth is None or type(entry.scan_depth) is int else None
    if scan_depth is None and entry.scan_depth is not None:
        scan_depth = _opt_int(entry.scan_depth)
    position = int(entry.position) if isinstance(entry.position, int) else _int(entry.position, Position.BEFORE)
    depth = int(entry.depth) if isinstance(entry.depth, int) else _int(entry.depth, DEFAULT_DEPTH)
    role = int(entry.role) if isinstance(entry.role, int) else _int(entry.role, Role.SYSTEM)
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
    level = max(0, int(level) if isinstance(level, bool | int) else _int(level, 0))
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
    return _Prep(  # positional (field order): twice as fast as keywords for 33 fields
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


def _plain_item(k: _Key) -> tuple[bool, int, str] | None:
    """``(case_sensitive, kind, text)`` the plain matcher looks for on behalf of a prepared key: the key
    itself, or the required literal of a regex key (a cheap necessary condition)."""
    if k[0] == "p":
        return k[2], k[1], k[3]
    if k[0] == "r" and k[1].literal is not None:
        return not k[1].ci, SUB, k[1].literal
    return None


def _key_items(
    primary: list[_Key], secondary: list[_Key], exclude: list[_Key]
) -> tuple[tuple[tuple[bool, int, str], ...], tuple[tuple[bool, int, str], ...]]:
    """``(plain items of all keys, owners keys of the primary keys)`` for :func:`_index_keys`: what
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


def _index_keys(preps: Iterable[_Prep], items: dict[bool, set], owners: dict[tuple, list[int]]) -> None:
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


class _Compiled:
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
        _index_keys(self.preps, self.items, self.owners)
        self.frozen_items = {cs_: frozenset(v) for cs_, v in self.items.items()}
        self.dynamic = [p.index for p in self.preps if p.dynamic]
        self._orders: dict[int, _Ordering] = {}

    def patched(
        self,
        entries: tuple[Entry, ...],
        changed: list[int],
        flags: tuple[bool, bool, bool],
        hashes: list[int] | None = None,
    ) -> _Compiled:
        """A copy for ``entries``, which differ from ours only at the ``changed`` positions (elsewhere
        they are the same objects, or equal ones when ``hashes`` are given: then our equal Entry objects
        are kept, as for a value-cache hit). Only the changed entries are (re)prepared (or taken from the
        per-entry cache). The key index and the scan orders are shared or patched when the changed
        entries keep their keys and their place in the order (the usual edit: content, probability, …),
        and rebuilt otherwise."""
        new = object.__new__(_Compiled)
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
            _index_keys(preps, new.items, new.owners)
            new.frozen_items = {cs_: frozenset(v) for cs_, v in new.items.items()}
        new.dynamic = [p.index for p in preps if p.dynamic]
        new._orders = {}
        if same_place:
            for strategy, ordering in self._orders.items():
                new._orders[strategy] = ordering.patched(preps, changed)
        return new

    def order(self, strategy: int) -> _Ordering:
        """Scan order and per-order lookups for an insertion strategy (cached)."""
        cached = self._orders.get(strategy)
        if cached is None:
            cached = self._orders[strategy] = _Ordering(self.preps, strategy)
        return cached


def _place(prep: _Prep) -> tuple[Any, ...]:
    """What decides an entry's part in an :class:`_Ordering` (besides its trace item and Entry object)."""
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


class _Ordering:
    """Everything about an entry set in one scan order that does not depend on the call."""

    def patched(self, preps: list[_Prep], changed: list[int]) -> _Ordering:
        """A copy for ``preps`` whose ``changed`` entries have the same :func:`_place` as before."""
        new = object.__new__(_Ordering)
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

    def __init__(self, preps: list[_Prep], strategy: int) -> None:
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


_NO_MATCH = "no primary key found in the scanned text"
_NOT_SCANNED = "scanning stopped before this entry was considered"


def _default_trace(prep: _Prep) -> TraceItem:
    """The trace item of an entry nothing happened to; cached on the (shared) prep, as it is the same in
    every entry set the prep is part of (it depends only on the Entry's value and ``simple``)."""
    trace = prep.trace
    if trace is None:
        entry = prep.entry
        trace = prep.trace = (
            _trace_item(entry, "skipped", "no_key_match", _NO_MATCH, 1, None)
            if prep.simple
            else _trace_item(entry, "skipped", "not_scanned", _NOT_SCANNED, 0, None)
        )
    return trace


def _trace_item(entry: Entry, status: str, reason: str, detail: str, step: int, key: str | None) -> TraceItem:
    comment = entry.comment if isinstance(entry.comment, str) else ""
    return TraceItem(entry.lorebook_id, entry.uid, status, reason, detail, step, key, entry.source, comment)


# Per-entry cache of preparations: (hash of the Entry's value, global flags) -> a _Prep made from an equal
# Entry. An edited entry is a new value, so editing one entry of a book re-prepares only that entry;
# unchanged (or equal, rebuilt) entries reuse their preparation, copied when the Entry object or its
# position differs. _Prep objects are never mutated once made (``_Run`` replaces dynamic ones).
_PREPS: dict[tuple[int, bool, bool, bool], _Prep] = {}
_PREP_CACHE_SIZE = 32768  # entries; each holds its Entry and prepared keys
_PREP_FIELDS = attrgetter(*(f.name for f in fields(_Prep)))


def _prepare_one(entry: Entry, index: int, value_hash: int, flags: tuple[bool, bool, bool]) -> _Prep:
    cache_key = (value_hash, *flags)
    prep = _PREPS.get(cache_key)
    if prep is not None and (prep.entry is entry or prep.entry == entry):
        if prep.entry is not entry or prep.index != index:
            prep = _Prep(entry, index, *_PREP_FIELDS(prep)[2:])
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


def _prepare_all(entries: tuple[Entry, ...], hashes: list[int], cs: bool, ww: bool, scoring: bool) -> list[_Prep]:
    flags = (cs, ww, scoring)
    preps = [_prepare_one(e, i, h, flags) for i, (e, h) in enumerate(zip(entries, hashes, strict=True))]
    _trim_preps()
    return preps


# The compiled set built last, per flags: a set that differs from it in a few positions (an edited
# entry) is derived from it by :meth:`_Compiled.patched` without hashing or indexing every entry.
_LAST: dict[tuple[bool, bool, bool], _Compiled] = {}
_PATCH_MAX = 64


# key -> (the Entry objects the key was made from, their compiled form). Holding the objects keeps
# their ids from being reused while an id-based key refers to them.
_COMPILED: OrderedDict[Any, tuple[tuple[Entry, ...], _Compiled]] = OrderedDict()
_COMPILED_CACHE_SIZE = 16


def _cache_put(key: Any, items: tuple[Entry, ...], compiled: _Compiled) -> None:
    with contextlib.suppress(KeyError):  # concurrent callers may evict entries in between
        _COMPILED[key] = (items, compiled)
        _COMPILED.move_to_end(key)
        while len(_COMPILED) > _COMPILED_CACHE_SIZE:
            _COMPILED.popitem(last=False)


def _compiled(entries: Iterable[Entry], cs: bool, ww: bool, scoring: bool) -> _Compiled:
    """The compiled form of an entry set and global matching flags, found or made, cheapest first:

    * cached by the identity of the Entry objects;
    * derived from the last set used with these flags when at most :data:`_PATCH_MAX` positions hold
      other objects (an entry edited in place): only those are prepared, see :meth:`_Compiled.patched`;
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
        compiled = _Compiled(items, cs, ww, scoring, hashes)
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
    _prepare_key.cache_clear()
    parse_regex_key.cache_clear()
    clear_matchers()
    compile_cache_clear()


def activate(
    entries: Iterable[Entry],
    chat: Sequence[ChatLine],
    *,
    settings: ActivationSettings | None = None,
    max_context: int,
    generation_type: str = "normal",
    timed_state: Mapping[str, Any] | None = None,
    rng: random.Random | None = None,
    substitute: Callable[[str], str] | None = None,
    extra_scan: Mapping[str, str] | None = None,
    chat_length: int | None = None,
    scan_injections: Sequence[str] = (),
    character_name: str | None = None,
    character_tags: Iterable[str] | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> ActivationResult:
    """Run world-info activation for one generation. See the package docstring for the contract."""
    return _Run(
        entries,
        chat,
        settings=settings or ActivationSettings(),
        max_context=max_context,
        generation_type=generation_type,
        timed_state=timed_state,
        rng=rng if rng is not None else random.Random(),
        substitute=substitute,
        extra_scan=extra_scan,
        chat_length=chat_length,
        scan_injections=scan_injections,
        character_name=character_name,
        character_tags=character_tags,
        count_tokens=count_tokens,
    ).run()


class _Run:
    def __init__(
        self,
        entries: Iterable[Entry],
        chat: Sequence[ChatLine],
        *,
        settings: ActivationSettings,
        max_context: Any,
        generation_type: Any,
        timed_state: Any,
        rng: random.Random,
        substitute: Callable[[str], str] | None,
        extra_scan: Mapping[str, str] | None,
        chat_length: int | None,
        scan_injections: Sequence[str],
        character_name: str | None,
        character_tags: Iterable[str] | None,
        count_tokens: Callable[[str], int] | None,
    ) -> None:
        s = settings
        self.rng = rng
        self.substitute = substitute
        self.count_tokens = count_tokens
        self.generation_type = str(generation_type or "normal").strip().lower()
        self.include_names = bool(s.include_names)
        self.recursive = bool(s.recursive)
        self.global_scoring = bool(s.use_group_scoring)
        self.scan_depth = _int(s.scan_depth, 2)
        self.min_activations = max(0, _int(s.min_activations, 0))
        self.min_depth_max = max(0, _int(s.min_activations_depth_max, 0))
        self.max_steps = max(0, _int(s.max_recursion_steps, 0))
        budget = _js_round(_number(s.budget_percent, 25) * _number(max_context, 0) / 100) or 1
        cap = _int(s.budget_cap, 0)
        if cap > 0 and budget > cap:
            budget = cap
        self.budget = budget

        self.raw_messages = _normalize_chat(chat, self.include_names)
        self.chat_length = (
            chat_length
            if isinstance(chat_length, int) and not isinstance(chat_length, bool) and chat_length >= 0
            else len(self.raw_messages)
        )
        self.extras: dict[str, str] = {}
        for name, text in (extra_scan or {}).items():
            if isinstance(name, str) and isinstance(text, str):
                self.extras[_EXTRA_ALIASES.get(name, name)] = text
        self.injections = [t for t in scan_injections or () if isinstance(t, str) and t]
        self.character_name = character_name
        self.character_tags = None if character_tags is None else {t for t in character_tags if isinstance(t, str)}
        self._sub_cache: dict[str, str] = {}
        self.custom_used = 0

        compiled = _compiled(entries, bool(s.case_sensitive), bool(s.match_whole_words), self.global_scoring)
        self.preps: list[_Prep] = list(compiled.preps)
        items, owners = compiled.frozen_items, compiled.owners
        if substitute is not None and compiled.dynamic:
            extra_items: dict[bool, set] = {False: set(), True: set()}
            changed = []
            for i in compiled.dynamic:
                prep = self.preps[i]
                prep = replace(
                    prep,
                    primary=[_prepare_key(self._subst(k), prep.cs, prep.whole_words) for k in prep.raw_primary],
                    secondary=[_prepare_key(self._subst(k), prep.cs, prep.whole_words) for k in prep.raw_secondary],
                    exclude=[_prepare_key(self._subst(k), prep.cs, prep.whole_words) for k in prep.raw_exclude],
                    items=None,
                    owner_items=None,
                    trace=None,
                )
                prep.has_regex = any(k[0] == "r" for k in (*prep.primary, *prep.secondary, *prep.exclude))
                prep.simple = (
                    bool(prep.primary)
                    and all(k[0] != "r" or k[1].literal is not None for k in prep.primary)
                    and not (prep.entry.constant is True or prep.decorators or prep.delay_level)
                )
                self.preps[i] = prep
                changed.append(prep)
            owners = {k: list(v) for k, v in owners.items()}
            _index_keys(changed, extra_items, owners)
            items = {cs: items[cs] | extra_items[cs] for cs in (False, True)}
        self.items, self.owners = items, owners
        self.ordering = ordering = compiled.order(_int(s.insertion_strategy, InsertionStrategy.CHARACTER_FIRST))
        self.dynamic = compiled.dynamic if substitute is not None else []
        self.order = ordering.order
        self.duplicates = [self.preps[i].entry for i in ordering.dupes]
        self.rank = ordering.rank
        self.reasons: dict[int, list[Any]] = {}
        self.timed = TimedEffects(timed_state, self.chat_length, ordering.by_key)

    # ---------------------------------------------------------------------------------- preparation

    def _subst(self, text: str) -> str:
        if self.substitute is None or not any(m in text for m in _MARKERS):
            return text
        cached = self._sub_cache.get(text)
        if cached is None:
            try:
                cached = self.substitute(text)
            except Exception:  # a broken macro must not break activation
                cached = text
            if not isinstance(cached, str):
                cached = text
            self._sub_cache[text] = cached
        return cached

    # ------------------------------------------------------------------------------------- tracing

    def _reason(self, prep: _Prep, reason: str, detail: str, step: int, strength: int) -> None:
        current = self.reasons.get(prep.index)
        # a later reason replaces an earlier one if stronger, or as strong — except that the first group
        # decision is kept (later steps only repeat it as "group already active")
        if current is None or strength > current[3] or (strength == current[3] and strength != _GROUP):
            self.reasons[prep.index] = [reason, detail, step, strength]

    # ------------------------------------------------------------------------------------- matching

    def _setup_scanners(self) -> None:
        self.scanners: dict[bool, _Scanner] = {}
        for cs, keyset in self.items.items():
            if not keyset:
                continue
            matcher = plain_matcher(keyset if isinstance(keyset, frozenset) else frozenset(keyset))
            extras = self.extras if cs else {k: fold_case(v) for k, v in self.extras.items()}
            injections = self.injections if cs else [fold_case(t) for t in self.injections]
            self.scanners[cs] = _Scanner(matcher, self.raw_messages, extras, injections, None if cs else fold_case)
        self.recursion_texts: list[str] = []
        self._rec_joined = ""
        self._rec_count = 0
        self._hay_cache: dict[tuple[int, tuple[str, ...], bool], str] = {}

    def _depth_of(self, prep: _Prep) -> int:
        depth = prep.scan_depth if prep.scan_depth is not None else self.scan_depth + self.skew
        return min(depth, MAX_SCAN_DEPTH)

    def _haystack(self, depth: int, extras: tuple[str, ...], use_recursion: bool) -> str:
        """The ST scan text for regex keys: ``\\x01`` + newest-first messages joined by ``\\n\\x01`` …"""
        cache_key = (depth, extras, use_recursion)
        text = self._hay_cache.get(cache_key)
        if text is not None:
            return text
        parts: list[str] = []
        if depth > 0:
            parts.append(MATCHER + JOINER.join(self.raw_messages[:depth]))
        for name in extras:
            value = self.extras.get(name)
            if value:
                parts.append(value)
        if self.injections:
            parts.append(JOINER.join(self.injections))
        if use_recursion and self.recursion_texts:
            parts.append(self._recursion_buffer())
        text = parts[0] if parts else ""
        for part in parts[1:]:
            text += JOINER + part
        self._hay_cache[cache_key] = text
        return text

    def _recursion_buffer(self) -> str:
        """The recursion texts joined by ``\n\x01``, extended by the texts added since the last call."""
        done = self._rec_count
        if done != len(self.recursion_texts):
            new = self.recursion_texts[done:]
            self._rec_joined = JOINER.join([self._rec_joined, *new] if done else new)
            self._rec_count = len(self.recursion_texts)
        return self._rec_joined

    def _match(self, prep: _Prep, key: _Key, state: int) -> bool:
        tag = key[0]
        if tag == "x":
            return False
        use_recursion = state != MIN_ACTIVATIONS
        depth = self._depth_of(prep)
        if tag == "p":
            _, kind, cs, text = key
            scanner = self.scanners.get(cs)
            return scanner is not None and scanner.has(kind, text, depth, prep.extras, use_recursion)
        regex: RegexKey = key[1]
        if regex.pattern is None:
            return False
        if regex.literal is not None:
            scanner = self.scanners.get(not regex.ci)
            if scanner is None or not scanner.has(SUB, regex.literal, depth, prep.extras, use_recursion):
                return False
        compiled = regex.compiled  # compiled on first use
        if compiled is None:
            return False
        haystack = self._haystack(depth, prep.extras, use_recursion)
        if regex.sticky:
            return compiled.match(haystack) is not None
        if use_recursion and self.recursion_texts:
            # Recursion: the newest content (last in the scan text) usually holds the match that made
            # this entry a candidate. A match whose required literal lies in that content starts at most
            # ``width`` characters before it, so try from there first (lookbehinds and anchors behave as
            # in a full search); only when that fails is the whole text searched. Keeps a long chain of
            # regex-keyed entries linear instead of searching the growing buffer at every step.
            width = max_width(regex.pattern, regex.flags) if regex.literal is not None else None
            if width is not None:
                start = len(haystack) - len(self.recursion_texts[-1]) - width
                if start > 0 and compiled.search(haystack, start) is not None:
                    return True
        return compiled.search(haystack) is not None

    def _primary_match(self, prep: _Prep, state: int) -> str | None:
        for raw, key in zip(prep.raw_primary, prep.primary, strict=False):
            if self._match(prep, key, state):
                return raw
        return None

    def _secondary_ok(self, prep: _Prep, state: int) -> tuple[bool, str]:
        logic = prep.entry.selective_logic
        results = [self._match(prep, key, state) for key in prep.secondary]
        any_match, all_match = any(results), all(results)
        if logic == SelectiveLogic.NOT_ALL:
            return not all_match, "NOT_ALL: every secondary key matched"
        if logic == SelectiveLogic.NOT_ANY:
            return not any_match, "NOT_ANY: a secondary key matched"
        if logic == SelectiveLogic.AND_ALL:
            return all_match, "AND_ALL: not every secondary key matched"
        return any_match, "AND_ANY: no secondary key matched"

    def _score(self, prep: _Prep, state: int) -> int:
        if not prep.primary:
            return 0
        primary = sum(1 for key in prep.primary if self._match(prep, key, state))
        if prep.secondary:
            secondary = sum(1 for key in prep.secondary if self._match(prep, key, state))
            logic = prep.entry.selective_logic
            if logic == SelectiveLogic.AND_ANY:
                return primary + secondary
            if logic == SelectiveLogic.AND_ALL:
                return primary + secondary if secondary == len(prep.secondary) else primary
        return primary

    # ---------------------------------------------------------------------------------- static gates

    def _static_gate(self, prep: _Prep) -> tuple[str, str] | None:
        entry = prep.entry
        if entry.disable is True:
            return "disabled", "entry is disabled"
        triggers = _strings(entry.triggers)
        if triggers and self.generation_type not in {t.strip().lower() for t in triggers}:
            return "trigger_mismatch", f"generation type '{self.generation_type}' not in {list(triggers)}"
        cf = entry.character_filter
        if cf is not None:
            names = _strings(getattr(cf, "names", ()))
            if names:
                included = self.character_name in names
                if included if cf.is_exclude else not included:
                    return "character_filter", "character filter (names) excludes this character"
            tags = _strings(getattr(cf, "tags", ()))
            if tags and self.character_tags is not None:
                has_tag = any(t in self.character_tags for t in tags)
                if has_tag if cf.is_exclude else not has_tag:
                    return "character_filter", "character filter (tags) excludes this character"
        sticky = self.timed.is_sticky(prep.key)
        if self.timed.is_delayed(entry):
            return "delay", f"delayed until the chat has {entry.delay} messages (now {self.chat_length})"
        if self.timed.is_cooldown(prep.key) and not sticky:
            end = cast("Mapping[str, Any]", self.timed.state["cooldown"].get(prep.key, {})).get("end")
            return "cooldown", f"on cooldown until chat length {end}"
        after = int_arg(prep.decorators.get("activate_only_after"))
        if after is not None and self.chat_length < after:
            return "decorator_activate_only_after", f"@@activate_only_after {after}"
        every = int_arg(prep.decorators.get("activate_only_every"))
        if every is not None and every > 0 and self.chat_length % every != 0:
            return "decorator_activate_only_every", f"@@activate_only_every {every}"
        return None

    # ------------------------------------------------------------------------------------- the loop

    def run(self) -> ActivationResult:
        self.timed.check()
        self.skew = 0
        self._setup_scanners()
        preps = self.preps
        # Entries that pass the per-call gates. "Simple" ones (plain keys only, no constant, decorators,
        # recursion delay or sticky) are only looked at when one of their keys occurs somewhere.
        ordering = self.ordering
        simple_live = set(ordering.simple)
        non_simple = ordering.non_simple
        if self.dynamic:  # substituted keys may change whether an entry is simple
            in_order = set(self.rank)
            for i in self.dynamic:
                if i in in_order:
                    simple_live.discard(i)
                    if preps[i].simple:
                        simple_live.add(i)
            non_simple = [i for i in self.order if i not in simple_live]
        blocked: set[int] = set()
        for i in ordering.gated:
            gate = self._static_gate(preps[i])
            if gate is not None:
                self._reason(preps[i], gate[0], gate[1], 0, 99)
                blocked.add(i)
        timed = self.timed
        for key in timed.active["cooldown"]:
            if timed.is_sticky(key):
                continue
            end = cast("Mapping[str, Any]", timed.state["cooldown"].get(key, {})).get("end")
            for i in ordering.indices_by_key.get(key, ()):
                if i not in blocked:
                    self._reason(preps[i], "cooldown", f"on cooldown until chat length {end}", 0, 99)
                    blocked.add(i)
        extra_live = []
        for key in timed.active["sticky"]:
            for i in ordering.indices_by_key.get(key, ()):
                if i in simple_live and i not in blocked:
                    extra_live.append(i)  # sticky entries are looked at every step
        simple_live -= blocked
        simple_live.difference_update(extra_live)
        live: list[_Prep] = [preps[i] for i in non_simple if i not in blocked]
        live += [preps[i] for i in extra_live]
        self.simple_live = simple_live
        self.cand_base: set[int] = set()
        self.cand_rec: set[int] = set()

        delay_levels = list(ordering.delay_levels)
        current_level = delay_levels.pop(0) if delay_levels else 0
        activated: dict[int, _Activation] = {}
        group_holders: dict[str, _Prep] = {}
        failed: set[int] = set()
        all_length = 0  # length of the text activated so far, ST's ``allActivatedText`` (only its size matters)
        overflowed = False
        state = INITIAL
        step = 0
        max_entry_depth = ordering.max_scan_depth
        rank = self.rank
        while state:
            if self.max_steps and self.max_steps <= step:
                break
            step += 1
            self._hay_cache.clear()
            use_recursion = state != MIN_ACTIVATIONS
            for scanner in self.scanners.values():
                scanner.ensure(min(max(self.scan_depth + self.skew, max_entry_depth), MAX_SCAN_DEPTH))
            candidates = [preps[i] for i in self._candidates(use_recursion)]
            live = [p for p in live if p.index not in activated and p.index not in failed]
            to_check = sorted((*live, *candidates), key=lambda p: rank[p.index])

            now: list[tuple[_Prep, str, str, str | None]] = []
            dropped: set[int] = set()
            for prep in to_check:
                sticky = self.timed.is_sticky(prep.key)
                if not sticky and prep.delay_level and (state != RECURSION or prep.delay_level > current_level):
                    matched = self._primary_match(prep, state) if prep.primary else None
                    where = "outside recursion" if state != RECURSION else f"at recursion level {current_level}"
                    self._reason(
                        prep,
                        "delay_until_recursion",
                        (f"key '{matched}' matched, but " if matched else "")
                        + f"the entry waits for recursion level {prep.delay_level} (scan {where})",
                        step,
                        _KEYS if matched else _WEAK,
                    )
                    continue
                if not sticky and state == RECURSION and self.recursive and prep.entry.exclude_recursion is True:
                    matched = self._primary_match(prep, state) if prep.primary else None
                    self._reason(
                        prep,
                        "exclude_recursion",
                        (f"key '{matched}' matched during recursion, but " if matched else "")
                        + "the entry cannot be activated by recursion",
                        step,
                        _KEYS if matched else _WEAK,
                    )
                    continue
                decorators = prep.decorators
                if "activate" in decorators:
                    now.append((prep, "decorator_activate", "@@activate", None))
                    continue
                if "dont_activate" in decorators:
                    self._reason(prep, "decorator_dont_activate", "@@dont_activate", step, 99)
                    dropped.add(prep.index)
                    continue
                if prep.entry.constant is True:
                    if self._excluded(prep, state, step):
                        continue
                    now.append((prep, "constant", "constant entry", None))
                    continue
                if sticky:
                    end = self.timed.state["sticky"][prep.key]["end"]
                    now.append((prep, "sticky", f"sticky until chat length {end}", None))
                    continue
                if not prep.primary:
                    self._reason(prep, "no_keys", "no primary keys", step, 99)
                    dropped.add(prep.index)
                    continue
                matched = self._primary_match(prep, state)
                if matched is None:
                    self._reason(prep, "no_key_match", "no primary key found in the scanned text", step, _KEYS)
                    continue
                if prep.entry.selective is True and prep.secondary:
                    ok, why = self._secondary_ok(prep, state)
                    if not ok:
                        self._reason(prep, "secondary_logic", f"key '{matched}' matched; {why}", step, _KEYS)
                        continue
                if self._excluded(prep, state, step):
                    continue
                now.append((prep, "key_match", f"key '{matched}' matched", matched))
            if dropped:
                live = [p for p in live if p.index not in dropped]

            now.sort(key=lambda item: (0 if self.timed.is_sticky(item[0].key) else 1, rank[item[0].index]))
            now = self._filter_groups(now, group_holders, state, step)

            # Budget: ST compares tokens(text activated in earlier steps) + tokens(this step's contents so
            # far, each + "\n") with the budget. The default estimate only needs lengths; a custom counter
            # is applied once per content and summed (no quadratic re-counting of growing text).
            custom = self.count_tokens is not None
            prev_tokens = self.custom_used if custom else estimate_length(all_length)
            new_length = 0
            new_tokens = 0
            loop_success: list[_Activation] = []
            for prep, how, detail, matched_key in now:
                entry = prep.entry
                ignore_budget = entry.ignore_budget is True
                if overflowed and not ignore_budget:
                    self._reason(prep, "budget", f"budget of {self.budget} tokens exhausted", step, _GROUP)
                    continue
                sticky = self.timed.is_sticky(prep.key)
                if prep.use_probability and prep.probability != 100 and not sticky:
                    roll = self.rng.random() * 100
                    if roll > prep.probability:
                        failed.add(prep.index)
                        simple_live.discard(prep.index)
                        self._reason(
                            prep, "probability", f"rolled {roll:.2f} > probability {prep.probability:g}", step, 99
                        )
                        continue
                content = self._subst_content(prep.content)
                if custom:
                    piece_tokens = self._tokens(content + "\n")
                    new_tokens += piece_tokens
                else:
                    new_length += len(content) + 1
                    new_tokens = estimate_length(new_length)
                if not ignore_budget and prev_tokens + new_tokens >= self.budget:
                    overflowed = True
                    self._reason(prep, "budget", f"would reach the budget of {self.budget} tokens", step, _GROUP)
                    continue
                act = _Activation(prep, how, detail, step, content, matched_key)
                if custom:
                    self.custom_used += piece_tokens
                activated[prep.index] = act
                simple_live.discard(prep.index)
                loop_success.append(act)
                for group in prep.groups:
                    group_holders.setdefault(group, prep)

            loop_length = sum(len(a.content) for a in loop_success) + len(loop_success) - 1
            if loop_length > 0:  # ST: allActivatedText = loopText + "\n" + allActivatedText
                all_length += loop_length + 1
            recursable = [a for a in loop_success if a.prep.entry.prevent_recursion is not True]

            next_state = NONE
            if self.recursive and not overflowed and recursable:
                next_state = RECURSION
            if self.recursive and not overflowed and state == MIN_ACTIVATIONS and any(t for t in self.recursion_texts):
                next_state = RECURSION
            if not next_state and not overflowed and self.min_activations and len(activated) < self.min_activations:
                depth_now = self.scan_depth + self.skew
                over = (self.min_depth_max > 0 and depth_now > self.min_depth_max) or depth_now > len(self.raw_messages)
                if not over and depth_now < MAX_SCAN_DEPTH:
                    next_state = MIN_ACTIVATIONS
                    self.skew += 1
            if not next_state and delay_levels:
                next_state = RECURSION
                current_level = delay_levels.pop(0)
            state = next_state
            if state:
                contents = [a.content for a in recursable]
                text = "\n".join(contents)
                if text:
                    self.recursion_texts.append(text)
                    for scanner in self.scanners.values():
                        scanner.add_recursion(contents)

        for act in activated.values():
            self.timed.record(act.prep.key, act.prep.entry)
        return self._result(activated, all_length, overflowed, step)

    def _excluded(self, prep: _Prep, state: int, step: int) -> bool:
        for raw_key in prep.exclude:
            if self._match(prep, raw_key, state):
                self._reason(prep, "decorator_exclude_keys", "an @@exclude_keys key matched", step, _KEYS)
                return True
        return False

    def _candidates(self, use_recursion: bool) -> set[int]:
        """Live simple entries one of whose primary keys (or regex literals) occurs somewhere in the scan
        text (recursion buffer included if ``use_recursion``): a superset of those that can match.

        Incremental: only the keys first found since the previous step are looked up; entries leave the
        candidate sets when they leave ``simple_live`` (activated or failed their probability roll).
        """
        owners = self.owners
        simple_live = self.simple_live
        kinds = (SUB, WORD)
        for cs, scanner in self.scanners.items():
            for target, new in ((self.cand_base, scanner.new_base), (self.cand_rec, scanner.new_rec)):
                for slot, text in new:
                    ids = owners.get((cs, kinds[slot], text))
                    if ids:
                        target.update([i for i in ids if i in simple_live])
                new.clear()
        for target in (self.cand_base, self.cand_rec):
            dead = [i for i in target if i not in simple_live]
            if dead:
                target.difference_update(dead)
        return self.cand_base | self.cand_rec if use_recursion else set(self.cand_base)

    def _subst_content(self, content: str) -> str:
        if self.substitute is None or not content:
            return content
        try:
            result = self.substitute(content)
        except Exception:
            return content
        return result if isinstance(result, str) else content

    def _tokens(self, text: str) -> int:
        if not text:
            return 0
        if self.count_tokens is None:
            return estimate_tokens(text)
        try:
            return int(self.count_tokens(text))
        except Exception:
            return estimate_tokens(text)

    def _filter_groups(
        self,
        now: list[tuple[_Prep, str, str, str | None]],
        holders: dict[str, _Prep],
        state: int,
        step: int,
    ) -> list[tuple[_Prep, str, str, str | None]]:
        grouped: dict[str, list[_Prep]] = {}
        for prep, *_ in now:
            for group in prep.groups:
                grouped.setdefault(group, []).append(prep)
        if not grouped:
            return now
        removed: set[int] = set()

        def remove(prep: _Prep, reason: str, detail: str) -> None:
            if prep.index not in removed:
                removed.add(prep.index)
                self._reason(prep, reason, detail, step, _GROUP)

        is_sticky = self.timed.is_sticky
        sticky_groups: set[str] = set()
        for name, members in grouped.items():
            sticky_members = [m for m in members if is_sticky(m.key)]
            if sticky_members:
                sticky_groups.add(name)
                for member in members:
                    if not is_sticky(member.key):
                        remove(member, "group_sticky", f"group '{name}' is held by sticky {sticky_members[0].label}")
                members[:] = sticky_members
        for name, members in grouped.items():
            if name in sticky_groups:
                continue
            if not (self.global_scoring or any(m.entry.use_group_scoring is True for m in members)):
                continue
            scores = [self._score(m, state) for m in members]
            best = max(scores)
            keep = []
            for member, score in zip(members, scores, strict=True):
                if member.scoring and score < best:
                    remove(member, "group_scoring", f"score {score} < {best} in group '{name}'")
                else:
                    keep.append(member)
            members[:] = keep
        for name, members in grouped.items():
            if name in sticky_groups:
                continue
            holder = holders.get(name)
            if holder is not None:
                for member in members:
                    remove(member, "group_already_active", f"group '{name}' already has {holder.label}")
                continue
            if len(members) <= 1:
                continue
            prios = [m for m in members if m.entry.group_override is True]
            if prios:
                winner: _Prep | None = sorted(prios, key=lambda m: -m.order)[0]
                how = "prioritized"
            else:
                total = sum(m.weight for m in members)
                roll = self.rng.random() * total
                cumulative = 0.0
                winner = None
                for member in members:
                    cumulative += member.weight
                    if roll <= cumulative:
                        winner = member
                        break
                how = f"weighted roll {roll:.2f} of {total:g}"
            for member in members:
                if member is not winner:
                    to = winner.label if winner is not None else "nobody"
                    remove(member, "lost_group", f"lost inclusion group '{name}' to {to} ({how})")
        return [item for item in now if item[0].index not in removed]

    # ----------------------------------------------------------------------------------- the output

    def _result(
        self, activated: dict[int, _Activation], all_length: int, overflowed: bool, steps: int
    ) -> ActivationResult:
        acts = list(activated.values())
        descending = sorted(acts, key=lambda a: -a.prep.order)
        ascending = list(reversed(descending))
        lists: dict[int, list[str]] = {int(p): [] for p in Position}
        depth_groups: dict[tuple[int, int], list[str]] = {}
        outlets: dict[str, list[str]] = {}
        act: _Activation | None
        for act in descending:
            content = act.content
            if not content:
                continue
            position = act.prep.position
            if position == Position.AT_DEPTH:
                role = act.prep.role if act.prep.role in ROLE_NAMES else Role.SYSTEM
                depth_groups.setdefault((act.prep.depth, role), []).insert(0, content)
            elif position == Position.OUTLET:
                name = act.prep.entry.outlet_name
                if isinstance(name, str) and name:
                    outlets.setdefault(name, []).append(content)
            elif position in lists:
                lists[position].insert(0, content)
        examples_top = list(reversed(lists[Position.EM_TOP]))
        examples_bottom = lists[Position.EM_BOTTOM]
        by_position = {name: "" for name in POSITION_NAMES}
        for position in (Position.BEFORE, Position.AFTER, Position.AN_TOP, Position.AN_BOTTOM):
            by_position[position.st_name] = "\n".join(lists[position])
        by_position["EMTop"] = "\n".join(examples_top)
        by_position["EMBottom"] = "\n".join(examples_bottom)
        injections = [
            DepthInjection(depth=depth, role=ROLE_NAMES[Role(role)], content="\n".join(contents))
            for (depth, role), contents in depth_groups.items()
        ]
        by_position["atDepth"] = "\n".join(
            a.content for a in ascending if a.content and a.prep.position == Position.AT_DEPTH
        )
        outlet_text = {name: "\n".join(contents) for name, contents in outlets.items()}
        by_position["outlet"] = "\n".join(outlet_text.values())

        activated_entries = []
        for act in ascending:
            entry = act.prep.entry
            prep = act.prep
            if (entry.content, entry.position, entry.depth, entry.role) != (
                act.content,
                prep.position,
                prep.depth,
                prep.role,
            ):
                position = Position(prep.position) if prep.position in _VALID_POSITIONS else prep.position
                role = Role(prep.role) if prep.role in ROLE_NAMES else prep.role
                with contextlib.suppress(TypeError, ValueError):
                    entry = replace(entry, content=act.content, position=position, depth=prep.depth, role=role)
            activated_entries.append(entry)

        trace = list(self.ordering.default_trace)
        rank = self.rank
        touched = set(self.reasons) | set(activated) | set(self.dynamic)
        for index in touched:
            position_in_trace = rank.get(index)
            if position_in_trace is None:
                continue
            prep = self.preps[index]
            entry = prep.entry
            act = activated.get(index)
            if act is not None:
                detail = act.detail
                if not act.content:
                    detail += "; empty content, nothing inserted"
                elif act.prep.position == Position.OUTLET and not entry.outlet_name:
                    detail += "; outlet entry without outlet name, nothing inserted"
                elif act.prep.position not in lists and act.prep.position not in (Position.AT_DEPTH, Position.OUTLET):
                    detail += "; unknown position, nothing inserted"
                item = _trace_item(entry, "activated", act.how, detail, act.step, act.matched_key)
            else:
                recorded = self.reasons.get(index)
                if recorded is None:
                    if index in self.simple_live:
                        item = _trace_item(entry, "skipped", "no_key_match", _NO_MATCH, 1, None)
                    else:
                        item = _trace_item(entry, "skipped", "not_scanned", _NOT_SCANNED, 0, None)
                else:
                    item = _trace_item(entry, "skipped", recorded[0], recorded[1], recorded[2], None)
            trace[position_in_trace] = item
        for entry in self.duplicates:
            comment = entry.comment if isinstance(entry.comment, str) else ""
            trace.append(
                TraceItem(
                    entry.lorebook_id,
                    entry.uid,
                    "skipped",
                    "duplicate",
                    "same lorebook and uid already present from a higher-priority source",
                    0,
                    None,
                    entry.source,
                    comment,
                )
            )
        return ActivationResult(
            activated=activated_entries,
            by_position=by_position,
            depth_injections=injections,
            outlets=outlet_text,
            examples_top=examples_top,
            examples_bottom=examples_bottom,
            timed_state=self.timed.state,
            trace=trace,
            budget_limit=self.budget,
            budget_used=self.custom_used if self.count_tokens is not None else estimate_length(all_length),
            budget_overflowed=overflowed,
            steps=steps,
        )


__all__ = ["activate", "estimate_tokens", "sort_entries"]
