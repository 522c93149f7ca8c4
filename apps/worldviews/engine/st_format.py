"""Reading and writing SillyTavern world-info entries (camelCase dicts) and card book entries.

Readers never raise: a missing field takes ST's default, a mistyped one is coerced when the intent is
clear (``"true"``, ``"12"``, ``12.0``) and otherwise falls back to the default. Unknown keys are kept in
:attr:`Entry.extra` and written back by :func:`entry_to_st`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from apps.cards.values import key_items, text

from .model import (
    DEFAULT_DEPTH,
    DEFAULT_WEIGHT,
    CharacterFilter,
    Entry,
    Position,
    Role,
    SelectiveLogic,
    Source,
)

# camelCase ST name -> Entry attribute
_ST_FIELDS: dict[str, str] = {
    "uid": "uid",
    "key": "key",
    "keysecondary": "keysecondary",
    "comment": "comment",
    "content": "content",
    "constant": "constant",
    "vectorized": "vectorized",
    "selective": "selective",
    "selectiveLogic": "selective_logic",
    "addMemo": "add_memo",
    "order": "order",
    "position": "position",
    "disable": "disable",
    "ignoreBudget": "ignore_budget",
    "excludeRecursion": "exclude_recursion",
    "preventRecursion": "prevent_recursion",
    "delayUntilRecursion": "delay_until_recursion",
    "probability": "probability",
    "useProbability": "use_probability",
    "depth": "depth",
    "outletName": "outlet_name",
    "group": "group",
    "groupOverride": "group_override",
    "groupWeight": "group_weight",
    "scanDepth": "scan_depth",
    "caseSensitive": "case_sensitive",
    "matchWholeWords": "match_whole_words",
    "useGroupScoring": "use_group_scoring",
    "automationId": "automation_id",
    "role": "role",
    "sticky": "sticky",
    "cooldown": "cooldown",
    "delay": "delay",
    "matchPersonaDescription": "match_persona_description",
    "matchCharacterDescription": "match_character_description",
    "matchCharacterPersonality": "match_character_personality",
    "matchCharacterDepthPrompt": "match_character_depth_prompt",
    "matchScenario": "match_scenario",
    "matchCreatorNotes": "match_creator_notes",
    "characterFilter": "character_filter",
    "triggers": "triggers",
    "displayIndex": "display_index",
}
# Keys read as aliases (card/V3 spellings) but not written back by entry_to_st.
_ALIASES = {"keys", "secondary_keys", "enabled", "insertion_order", "id"}


def _bool(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        return value == value and value != 0  # NaN is false
    if isinstance(value, str):
        text = value.strip().lower()
        if text in {"true", "1", "yes", "on"}:
            return True
        if text in {"false", "0", "no", "off", ""}:
            return False
    return default


def _opt_bool(value: Any) -> bool | None:
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() in {"", "null", "none"}:
        return None
    return _bool(value, False) if isinstance(value, bool | int | float | str) else None


def _num(value: Any, default: int | float) -> int | float:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return default
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        try:
            return _num(float(value.strip()), default)
        except ValueError:
            return default
    return default


def _int(value: Any, default: int) -> int:
    number = _num(value, default)
    try:
        return int(number)
    except (OverflowError, ValueError):
        return default


def _opt_int(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    marker = object()
    number = _num(value, marker)  # type: ignore[arg-type]
    return None if number is marker else int(number)


def _positive_or_none(value: Any) -> int | None:
    number = _opt_int(value)
    return number if number is not None and number > 0 else None


def _enum(value: Any, enum: type, default: int) -> int:
    number = _opt_int(value)
    try:
        return enum(number)
    except ValueError:
        return enum(default)


def _uid(value: Any, default: int | str) -> int | str:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip():
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        # ASCII digits only (JS Number() semantics; int() refuses "¹"), within int()'s digit limit.
        return int(text) if digits.isascii() and digits.isdigit() and len(digits) <= 4300 else text
    return default


def _delay_level(value: Any) -> int:
    if isinstance(value, bool):
        return int(value)
    level = _opt_int(value)
    return level if level is not None and level > 0 else 0


def _character_filter(value: Any) -> CharacterFilter | None:
    if not isinstance(value, Mapping):
        return None
    return CharacterFilter(
        is_exclude=_bool(value.get("isExclude"), False),
        names=tuple(key_items(value.get("names"))),
        tags=tuple(key_items(value.get("tags"))),
    )


def entry_from_st(d: Mapping[str, Any], *, lorebook_id: int | str | None = None, source: str = "global") -> Entry:
    """Build an :class:`Entry` from an ST world-info entry dict (camelCase, as ST writes it)."""
    if not isinstance(d, Mapping):
        d = {}
    get = d.get
    keys = get("key") if "key" in d else get("keys")
    secondary = get("keysecondary") if "keysecondary" in d else get("secondary_keys")
    disable = _bool(get("disable"), False) if "disable" in d else not _bool(get("enabled"), True)
    order = get("order") if "order" in d else get("insertion_order")
    uid = get("uid") if "uid" in d else get("id")
    extra = {k: v for k, v in d.items() if isinstance(k, str) and k not in _ST_FIELDS and k not in _ALIASES}
    return Entry(
        uid=_uid(uid, 0),
        key=tuple(key_items(keys)),
        keysecondary=tuple(key_items(secondary)),
        comment=text(get("comment")),
        content=text(get("content")),
        constant=_bool(get("constant"), False),
        vectorized=_bool(get("vectorized"), False),
        selective=_bool(get("selective"), True),
        selective_logic=_enum(get("selectiveLogic"), SelectiveLogic, SelectiveLogic.AND_ANY),
        add_memo=_bool(get("addMemo"), False),
        order=_num(order, 100),
        position=_enum(get("position"), Position, Position.BEFORE),
        disable=disable,
        ignore_budget=_bool(get("ignoreBudget"), False),
        exclude_recursion=_bool(get("excludeRecursion"), False),
        prevent_recursion=_bool(get("preventRecursion"), False),
        delay_until_recursion=_delay_level(get("delayUntilRecursion")),
        probability=_num(get("probability"), 100),
        use_probability=_bool(get("useProbability"), True),
        depth=_int(get("depth"), DEFAULT_DEPTH),
        outlet_name=text(get("outletName")),
        group=text(get("group")),
        group_override=_bool(get("groupOverride"), False),
        group_weight=_num(get("groupWeight"), DEFAULT_WEIGHT),
        scan_depth=_opt_int(get("scanDepth")),
        case_sensitive=_opt_bool(get("caseSensitive")),
        match_whole_words=_opt_bool(get("matchWholeWords")),
        use_group_scoring=_opt_bool(get("useGroupScoring")),
        automation_id=text(get("automationId")),
        role=_enum(get("role"), Role, Role.SYSTEM),
        sticky=_positive_or_none(get("sticky")),
        cooldown=_positive_or_none(get("cooldown")),
        delay=_positive_or_none(get("delay")),
        match_persona_description=_bool(get("matchPersonaDescription"), False),
        match_character_description=_bool(get("matchCharacterDescription"), False),
        match_character_personality=_bool(get("matchCharacterPersonality"), False),
        match_character_depth_prompt=_bool(get("matchCharacterDepthPrompt"), False),
        match_scenario=_bool(get("matchScenario"), False),
        match_creator_notes=_bool(get("matchCreatorNotes"), False),
        character_filter=_character_filter(get("characterFilter")),
        triggers=tuple(key_items(get("triggers"))),
        display_index=_opt_int(get("displayIndex")),
        source=source if source in Source.ALL else Source.GLOBAL,
        lorebook_id=lorebook_id,
        extra=extra,
    )


def entry_to_st(e: Entry) -> dict[str, Any]:
    """The ST world-info dict of an entry (camelCase; unknown imported keys first, then ours)."""
    out: dict[str, Any] = dict(e.extra)
    for st_name, attr in _ST_FIELDS.items():
        value = getattr(e, attr)
        if isinstance(value, tuple):
            value = list(value)
        elif isinstance(value, CharacterFilter):
            value = {"isExclude": value.is_exclude, "names": list(value.names), "tags": list(value.tags)}
        elif isinstance(value, Position | SelectiveLogic | Role):
            value = int(value)
        if attr == "character_filter" and value is None:
            continue
        out[st_name] = value
    return out


def entries_from_st_book(
    book: Mapping[str, Any], *, lorebook_id: int | str | None = None, source: str = "global"
) -> list[Entry]:
    """Entries of an ST world-info file (``{"entries": {"0": {...}, ...}}``; a list is accepted too)."""
    raw = book.get("entries") if isinstance(book, Mapping) else None
    if isinstance(raw, Mapping):
        items = list(raw.values())
    elif isinstance(raw, list):
        items = raw
    else:
        return []
    return [entry_from_st(d, lorebook_id=lorebook_id, source=source) for d in items if isinstance(d, Mapping)]


def entry_from_character_book(
    d: Mapping[str, Any], *, index: int = 0, lorebook_id: int | str | None = None, source: str = "character"
) -> Entry:
    """Convert a V2/V3 ``character_book`` entry the way ST's ``convertCharacterBook`` does."""
    if not isinstance(d, Mapping):
        d = {}
    ext = d.get("extensions")
    ext = ext if isinstance(ext, Mapping) else {}
    position = ext.get("position")
    if position is None:
        position = Position.BEFORE if d.get("position") == "before_char" else Position.AFTER
    st = {
        "uid": d.get("id") if d.get("id") is not None else index,
        "key": d.get("keys"),
        "keysecondary": d.get("secondary_keys") or [],
        "comment": d.get("comment") or "",
        "addMemo": bool(d.get("comment")),
        "content": d.get("content"),
        "constant": d.get("constant") or False,
        "selective": d.get("selective") or False,
        "order": d.get("insertion_order"),
        "disable": not _bool(d.get("enabled"), True),
        "position": position,
        "excludeRecursion": ext.get("exclude_recursion", False),
        "preventRecursion": ext.get("prevent_recursion", False),
        "delayUntilRecursion": ext.get("delay_until_recursion", False),
        "displayIndex": ext.get("display_index", index),
        "probability": ext.get("probability", 100),
        "useProbability": ext.get("useProbability", True),
        "depth": ext.get("depth", DEFAULT_DEPTH),
        "selectiveLogic": ext.get("selectiveLogic", 0),
        "outletName": ext.get("outlet_name", ""),
        "group": ext.get("group", ""),
        "groupOverride": ext.get("group_override", False),
        "groupWeight": ext.get("group_weight", DEFAULT_WEIGHT),
        "scanDepth": ext.get("scan_depth"),
        "caseSensitive": ext.get("case_sensitive"),
        "matchWholeWords": ext.get("match_whole_words"),
        "useGroupScoring": ext.get("use_group_scoring"),
        "automationId": ext.get("automation_id", ""),
        "role": ext.get("role", 0),
        "vectorized": ext.get("vectorized", False),
        "sticky": ext.get("sticky"),
        "cooldown": ext.get("cooldown"),
        "delay": ext.get("delay"),
        "matchPersonaDescription": ext.get("match_persona_description", False),
        "matchCharacterDescription": ext.get("match_character_description", False),
        "matchCharacterPersonality": ext.get("match_character_personality", False),
        "matchCharacterDepthPrompt": ext.get("match_character_depth_prompt", False),
        "matchScenario": ext.get("match_scenario", False),
        "matchCreatorNotes": ext.get("match_creator_notes", False),
        "triggers": ext.get("triggers", []),
        "ignoreBudget": ext.get("ignore_budget", False),
    }
    return entry_from_st(st, lorebook_id=lorebook_id, source=source)
