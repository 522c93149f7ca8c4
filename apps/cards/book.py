"""``character_book`` (V2/V3 card lorebook) ⇄ SillyTavern World Info entries, and ``lorebook_v3`` files.

Plain dicts in, plain dicts out: World Info entries are ST's JSON entry shape (camelCase, as stored in
``worlds/<name>.json``), so the world-info engine can build its own typed ``Entry`` from them.

The mapping follows SillyTavern 1.15 ``convertCharacterBook`` (book → entries) and
``convertWorldInfoToCharacterBook`` (entries → book), with these documented deviations:

* ``uid``: ST uses ``entry.id`` (index if missing) as the key of an object, so duplicate ids silently
  overwrite each other. Here every entry is kept: integer ids (or digit strings) are used when unique;
  a missing, non-numeric or duplicate id gets the entry's index if that is free, else the smallest
  unused integer (:func:`apps.cards.uids.uids_by_index`).
* ``keys`` given as a comma-separated string are split; ``content: null`` becomes ``""``;
  a missing ``insertion_order`` becomes 100 (ST's new-entry default); a missing ``enabled`` means
  enabled (ST: ``disable = !undefined`` = disabled).
* ``caseSensitive`` falls back to the V2 entry field ``case_sensitive`` when ``extensions.case_sensitive``
  is absent (ST only reads the extension).
* entries → book: ``use_regex`` is written ``false`` (ST writes ``true`` although it only treats
  ``/…/flags`` keys as regex; a V3 reader would compile every plain key as a regex);
  ``use_group_scoring`` keeps ``null`` (ST turns ``null`` into ``false``, which flips the per-entry
  override on re-import); the book always has ``extensions: {}`` (required by the V2 spec, ST omits it);
  an optional ``base_book`` keeps book-level fields (description, scan_depth, …, extensions) that ST drops.
* ``characterFilter`` round-trips through ``extensions.character_filter`` (ST drops it).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from typing import Any

from .uids import uids_by_index
from .values import card_keys, text

DEFAULT_DEPTH = 4
DEFAULT_WEIGHT = 100
DEFAULT_ORDER = 100
POSITION_BEFORE = 0
POSITION_AFTER = 1

# ST WI entry field ← book entry ``extensions`` key, import default.
_EXTENSION_FIELDS: tuple[tuple[str, str, Any], ...] = (
    ("excludeRecursion", "exclude_recursion", False),
    ("preventRecursion", "prevent_recursion", False),
    ("delayUntilRecursion", "delay_until_recursion", False),
    ("probability", "probability", 100),
    ("useProbability", "useProbability", True),
    ("depth", "depth", DEFAULT_DEPTH),
    ("selectiveLogic", "selectiveLogic", 0),
    ("outletName", "outlet_name", ""),
    ("group", "group", ""),
    ("groupOverride", "group_override", False),
    ("groupWeight", "group_weight", DEFAULT_WEIGHT),
    ("scanDepth", "scan_depth", None),
    ("caseSensitive", "case_sensitive", None),
    ("matchWholeWords", "match_whole_words", None),
    ("useGroupScoring", "use_group_scoring", None),
    ("automationId", "automation_id", ""),
    ("role", "role", 0),
    ("vectorized", "vectorized", False),
    ("sticky", "sticky", None),
    ("cooldown", "cooldown", None),
    ("delay", "delay", None),
    ("matchPersonaDescription", "match_persona_description", False),
    ("matchCharacterDescription", "match_character_description", False),
    ("matchCharacterPersonality", "match_character_personality", False),
    ("matchCharacterDepthPrompt", "match_character_depth_prompt", False),
    ("matchScenario", "match_scenario", False),
    ("matchCreatorNotes", "match_creator_notes", False),
    ("triggers", "triggers", []),
    ("ignoreBudget", "ignore_budget", False),
)

# Export defaults (``convertWorldInfoToCharacterBook``), where they differ from the import defaults.
_EXPORT_DEFAULTS: dict[str, Any] = {
    "probability": None,
    "useProbability": False,
    "groupWeight": None,
}


def _as_dict(value: Any) -> dict[str, Any]:
    return copy.deepcopy(value) if isinstance(value, dict) else {}


def normalize_character_book(book: Any, *, v3: bool = True) -> dict[str, Any] | None:
    """A card's ``character_book`` with the spec's required keys filled in; unknown keys kept.

    Book: ``entries`` (list of objects) and ``extensions`` ({}). Entry: ``keys`` (list of str),
    ``content`` (str), ``extensions`` ({}), ``enabled`` (true), ``insertion_order`` (100) and, for V3,
    ``use_regex`` (false) and ``constant`` (false). Returns ``None`` when ``book`` is not an object.
    """
    if not isinstance(book, dict):
        return None
    out = copy.deepcopy(book)
    raw_entries = out.get("entries")
    if isinstance(raw_entries, dict):  # a World Info-like {"0": {...}} pasted as a book
        raw_entries = list(raw_entries.values())
    entries: list[dict[str, Any]] = []
    for raw in raw_entries if isinstance(raw_entries, list) else []:
        if not isinstance(raw, dict):
            continue
        entry = dict(raw)
        entry["keys"] = card_keys(entry.get("keys"))
        if "secondary_keys" in entry:
            entry["secondary_keys"] = card_keys(entry.get("secondary_keys"))
        entry["content"] = text(entry.get("content"))
        entry["extensions"] = _as_dict(entry.get("extensions"))
        enabled = entry.get("enabled", True)
        entry["enabled"] = enabled if isinstance(enabled, bool) else bool(enabled)
        order = entry.get("insertion_order")
        if isinstance(order, bool) or not isinstance(order, int | float):
            entry["insertion_order"] = DEFAULT_ORDER
        if v3:
            entry["use_regex"] = bool(entry.get("use_regex", False))
            entry["constant"] = bool(entry.get("constant", False))
        entries.append(entry)
    out["entries"] = entries
    out["extensions"] = _as_dict(out.get("extensions"))
    return out


def character_book_to_st_entries(book: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Book entries → ST World Info entry dicts (``convertCharacterBook``), in book order."""
    raw_entries = book.get("entries") if isinstance(book, Mapping) else None
    if isinstance(raw_entries, dict):
        raw_entries = list(raw_entries.values())
    items = [e for e in raw_entries if isinstance(e, dict)] if isinstance(raw_entries, list) else []
    uids = uids_by_index([e.get("id") for e in items])
    result: list[dict[str, Any]] = []
    for index, (entry, uid) in enumerate(zip(items, uids, strict=True)):
        ext = entry.get("extensions")
        ext = ext if isinstance(ext, dict) else {}
        comment = text(entry.get("comment"))
        position = ext.get("position")
        if position is None:
            position = POSITION_BEFORE if entry.get("position") == "before_char" else POSITION_AFTER
        order = entry.get("insertion_order")
        if isinstance(order, bool) or not isinstance(order, int | float):
            order = DEFAULT_ORDER
        st: dict[str, Any] = {
            "uid": uid,
            "key": card_keys(entry.get("keys")),
            "keysecondary": card_keys(entry.get("secondary_keys")),
            "comment": comment,
            "content": text(entry.get("content")),
            "constant": bool(entry.get("constant") or False),
            "selective": bool(entry.get("selective") or False),
            "order": order,
            "position": position,
            "disable": not entry.get("enabled", True),
            "addMemo": bool(comment),
            "displayIndex": ext["display_index"] if ext.get("display_index") is not None else index,
        }
        for st_key, ext_key, default in _EXTENSION_FIELDS:
            value = ext.get(ext_key)
            if value is None and st_key == "caseSensitive":
                value = entry.get("case_sensitive")
            st[st_key] = copy.deepcopy(value) if value is not None else copy.deepcopy(default)
        if not isinstance(st["triggers"], list):
            st["triggers"] = []
        if isinstance(ext.get("character_filter"), dict):
            st["characterFilter"] = copy.deepcopy(ext["character_filter"])
        st["extensions"] = copy.deepcopy(ext)
        result.append(st)
    return result


def character_book_to_st_world(book: Mapping[str, Any]) -> dict[str, Any]:
    """The ST World Info file shape: ``{"entries": {"<uid>": entry}, "originalData": book}``."""
    entries = character_book_to_st_entries(book)
    return {"entries": {str(e["uid"]): e for e in entries}, "originalData": copy.deepcopy(dict(book))}


def _js_key_order(keys: Iterable[str]) -> list[str]:
    """JavaScript ``for…in`` order: integer-like keys ascending, then the others in insertion order."""
    keys = list(keys)
    numeric = sorted((k for k in keys if re.fullmatch(r"0|[1-9]\d{0,9}", k)), key=int)
    others = [k for k in keys if not re.fullmatch(r"0|[1-9]\d{0,9}", k)]
    return numeric + others


def st_world_entries(entries: Any) -> list[dict[str, Any]]:
    """A World Info ``entries`` value (object keyed by uid, or a list), or a whole world file, as a list
    in SillyTavern's iteration order."""
    if isinstance(entries, Mapping) and "entries" in entries and isinstance(entries["entries"], dict | list):
        entries = entries["entries"]
    if isinstance(entries, Mapping):
        return [entries[k] for k in _js_key_order(entries.keys()) if isinstance(entries[k], dict)]
    if isinstance(entries, list):
        return [e for e in entries if isinstance(e, dict)]
    return []


def _st_value(entry: Mapping[str, Any], st_key: str, default: Any) -> Any:
    value = entry.get(st_key)
    if value is None:
        value = _EXPORT_DEFAULTS.get(st_key, default)
    return copy.deepcopy(value)


def st_entries_to_character_book(
    entries: Any, *, name: str, base_book: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """ST World Info entries (list, ``{"<uid>": entry}`` or a whole world file) → a ``character_book``
    (``convertWorldInfoToCharacterBook``). ``base_book`` supplies book-level fields to keep."""
    book: dict[str, Any] = {}
    if base_book:
        book.update({k: copy.deepcopy(v) for k, v in base_book.items() if k not in ("entries", "name")})
    book["name"] = name
    book["extensions"] = _as_dict(book.get("extensions"))
    out_entries: list[dict[str, Any]] = []
    for index, entry in enumerate(st_world_entries(entries)):
        position = entry.get("position", POSITION_BEFORE)
        ext = _as_dict(entry.get("extensions"))
        ext.update(
            {
                "position": position,
                "exclude_recursion": bool(entry.get("excludeRecursion", False)),
                "display_index": entry["displayIndex"] if entry.get("displayIndex") is not None else index,
            }
        )
        for st_key, ext_key, default in _EXTENSION_FIELDS:
            if st_key == "excludeRecursion":
                continue
            ext[ext_key] = _st_value(entry, st_key, default)
        if isinstance(entry.get("characterFilter"), dict):
            ext["character_filter"] = copy.deepcopy(entry["characterFilter"])
        out_entries.append(
            {
                "id": entry.get("uid", index),
                "keys": card_keys(entry.get("key")),
                "secondary_keys": card_keys(entry.get("keysecondary")),
                "comment": text(entry.get("comment")),
                "content": text(entry.get("content")),
                "constant": bool(entry.get("constant", False)),
                "selective": bool(entry.get("selective", True)),
                "insertion_order": entry.get("order", DEFAULT_ORDER),
                "enabled": not entry.get("disable", False),
                "position": "before_char" if position == POSITION_BEFORE else "after_char",
                "use_regex": False,
                "extensions": ext,
            }
        )
    book["entries"] = out_entries
    return book


# ---- lorebook_v3 ---------------------------------------------------------------------------------------

LOREBOOK_V3_SPEC = "lorebook_v3"


def is_lorebook_v3(doc: Any) -> bool:
    return isinstance(doc, Mapping) and doc.get("spec") == LOREBOOK_V3_SPEC and isinstance(doc.get("data"), dict)


def lorebook_v3_to_book(doc: Mapping[str, Any]) -> dict[str, Any]:
    """``{"spec": "lorebook_v3", "data": Lorebook}`` → the (normalised) book. Raises ``ValueError``."""
    if not is_lorebook_v3(doc):
        raise ValueError("not a lorebook_v3 document")
    book = normalize_character_book(doc["data"], v3=True)
    assert book is not None
    return book


def book_to_lorebook_v3(book: Mapping[str, Any]) -> dict[str, Any]:
    normalized = normalize_character_book(dict(book), v3=True) or {"entries": [], "extensions": {}}
    return {"spec": LOREBOOK_V3_SPEC, "data": normalized}


def lorebook_v3_to_st_entries(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return character_book_to_st_entries(lorebook_v3_to_book(doc))


def st_entries_to_lorebook_v3(entries: Any, *, name: str, base_book: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return book_to_lorebook_v3(st_entries_to_character_book(entries, name=name, base_book=base_book))
