"""Writes for lorebooks: the entry schema (SillyTavern's camelCase fields, validation and defaults),
CRUD, import. Worldviews themselves use the shared novel-entity services.

Storage: ``LorebookEntry.data`` holds the whole ST entry — every known field with its value (defaults
filled in) followed by unknown keys kept verbatim — and ``uid``/``order``/``disable`` are copied to
columns. REST input is validated strictly (:func:`entry_validate`); imported files are coerced
leniently (:func:`entry_coerce`: a wrong type takes ST's default, a number is clamped to its range).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any, TypeGuard, cast

from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _
from rest_framework.exceptions import ValidationError

from apps.cards import (
    CardError,
    character_book_to_st_entries,
    is_lorebook_v3,
    load_card_json,
    lorebook_v3_to_book,
    parse_card_bytes,
    parse_card_json,
    st_world_entries,
)
from apps.cards.messages import card_error, card_limits, card_too_large_error
from apps.characters.models import Character
from apps.core.errors import ApplicationError
from apps.worldviews.models import Lorebook, LorebookEntry

MAX_ENTRIES = 20_000
MAX_UID = 2_147_483_647
MAX_KEYS = 1_000
MAX_KEY_CHARS = 1_000
MAX_CONTENT_CHARS = 200_000
MAX_TEXT_CHARS = 5_000
GENERATION_TYPES = ("normal", "continue", "impersonate", "swipe", "regenerate", "quiet")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One ST entry field: ``kind`` is keys|str|text|bool|nbool|int|nint|enum|delay|triggers|filter."""

    name: str
    kind: str
    default: Any
    low: int = 0
    high: int = 0
    max_chars: int = MAX_TEXT_CHARS


# SillyTavern 1.15 `newWorldInfoEntryDefinition` (reference §2.3), in ST's order; defaults are ST's.
ENTRY_FIELDS: tuple[FieldSpec, ...] = (
    FieldSpec("key", "keys", []),
    FieldSpec("keysecondary", "keys", []),
    FieldSpec("comment", "str", ""),
    FieldSpec("content", "str", "", max_chars=MAX_CONTENT_CHARS),
    FieldSpec("constant", "bool", False),
    FieldSpec("vectorized", "bool", False),
    FieldSpec("selective", "bool", True),
    FieldSpec("selectiveLogic", "enum", 0, 0, 3),
    FieldSpec("addMemo", "bool", False),
    FieldSpec("order", "int", 100, -1_000_000_000, 1_000_000_000),
    FieldSpec("position", "enum", 0, 0, 7),
    FieldSpec("disable", "bool", False),
    FieldSpec("ignoreBudget", "bool", False),
    FieldSpec("excludeRecursion", "bool", False),
    FieldSpec("preventRecursion", "bool", False),
    FieldSpec("delayUntilRecursion", "delay", 0, 0, 1000),
    FieldSpec("matchPersonaDescription", "bool", False),
    FieldSpec("matchCharacterDescription", "bool", False),
    FieldSpec("matchCharacterPersonality", "bool", False),
    FieldSpec("matchCharacterDepthPrompt", "bool", False),
    FieldSpec("matchScenario", "bool", False),
    FieldSpec("matchCreatorNotes", "bool", False),
    FieldSpec("probability", "int", 100, 0, 100),
    FieldSpec("useProbability", "bool", True),
    FieldSpec("depth", "int", 4, 0, 10_000),
    FieldSpec("outletName", "str", "", max_chars=200),
    FieldSpec("group", "str", ""),
    FieldSpec("groupOverride", "bool", False),
    FieldSpec("groupWeight", "int", 100, 0, 1_000_000),
    FieldSpec("scanDepth", "nint", None, 0, 1000),
    FieldSpec("caseSensitive", "nbool", None),
    FieldSpec("matchWholeWords", "nbool", None),
    FieldSpec("useGroupScoring", "nbool", None),
    FieldSpec("automationId", "str", "", max_chars=200),
    FieldSpec("role", "enum", 0, 0, 2),
    FieldSpec("sticky", "nint", None, 0, 1_000_000),
    FieldSpec("cooldown", "nint", None, 0, 1_000_000),
    FieldSpec("delay", "nint", None, 0, 1_000_000),
    FieldSpec("triggers", "triggers", []),
    FieldSpec("displayIndex", "nint", None, -MAX_UID, MAX_UID),
    FieldSpec("characterFilter", "filter", None),
)
FIELDS_BY_NAME = {spec.name: spec for spec in ENTRY_FIELDS}


class _Invalid(Exception):
    def __init__(self, message: str) -> None:
        self.message = message


def _is_int(value: Any) -> TypeGuard[int | float]:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())


def _check_int(value: Any, spec: FieldSpec) -> int:
    if not _is_int(value):
        raise _Invalid(_("Must be an integer."))
    number = int(value)
    if not spec.low <= number <= spec.high:
        raise _Invalid(_("Must be between %(low)s and %(high)s.") % {"low": spec.low, "high": spec.high})
    return number


def _check_str(value: Any, max_chars: int) -> str:
    if not isinstance(value, str):
        raise _Invalid(_("Must be a string."))
    if len(value) > max_chars:
        raise _Invalid(_("Must be at most %(max)s characters.") % {"max": max_chars})
    return value


def _check_strings(value: Any, *, max_items: int, max_chars: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid(_("Must be a list of strings."))
    if len(value) > max_items:
        raise _Invalid(_("Must have at most %(max)s items.") % {"max": max_items})
    if any(len(item) > max_chars for item in value):
        raise _Invalid(_("Each item must be at most %(max)s characters.") % {"max": max_chars})
    return list(value)


def _strict(spec: FieldSpec, value: Any) -> Any:
    """The validated value of one field (``None`` takes the default; ST writes nulls in places)."""
    if value is None:
        return copy.deepcopy(spec.default)
    kind = spec.kind
    if kind == "keys":
        return _check_strings(value, max_items=MAX_KEYS, max_chars=MAX_KEY_CHARS)
    if kind == "str":
        return _check_str(value, spec.max_chars)
    if kind in ("bool", "nbool"):
        if not isinstance(value, bool):
            raise _Invalid(_("Must be true or false."))
        return value
    if kind in ("int", "nint"):
        return _check_int(value, spec)
    if kind == "enum":
        if not _is_int(value) or not spec.low <= int(value) <= spec.high:
            raise _Invalid(
                _("Must be one of %(choices)s.") % {"choices": ", ".join(map(str, range(spec.low, spec.high + 1)))}
            )
        return int(value)
    if kind == "delay":
        if isinstance(value, bool):
            return value
        return _check_int(value, spec)
    if kind == "triggers":
        items = _check_strings(value, max_items=len(GENERATION_TYPES), max_chars=20)
        unknown = [item for item in items if item not in GENERATION_TYPES]
        if unknown:
            raise _Invalid(
                _("Unknown generation type %(value)s; expected one of %(choices)s.")
                % {"value": unknown[0], "choices": ", ".join(GENERATION_TYPES)}
            )
        return list(dict.fromkeys(items))
    if kind == "filter":
        if not isinstance(value, dict):
            raise _Invalid(_("Must be an object {isExclude, names, tags}."))
        out = dict(value)
        is_exclude = value.get("isExclude", False)
        if not isinstance(is_exclude, bool):
            raise _Invalid(_("isExclude must be true or false."))
        out["isExclude"] = is_exclude
        for name in ("names", "tags"):
            out[name] = _check_strings(value.get(name, []), max_items=MAX_KEYS, max_chars=MAX_KEY_CHARS)
        return out
    raise AssertionError(kind)


def _lenient(spec: FieldSpec, value: Any) -> Any:
    """Best-effort value for an imported field: clear intents are coerced, the rest takes the default."""
    try:
        return _strict(spec, value)
    except _Invalid:
        pass
    kind = spec.kind
    if kind == "keys":
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if isinstance(value, list):
            items = [str(v) for v in value if isinstance(v, str | int | float) and not isinstance(v, bool)]
            return [item[:MAX_KEY_CHARS] for item in items[:MAX_KEYS]]
    elif kind == "str":
        if isinstance(value, int | float) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str):
            return value[: spec.max_chars]
    elif kind in ("bool", "nbool"):
        if isinstance(value, int | float) and not isinstance(value, bool):
            return value != 0
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
            return value.strip().lower() in ("true", "1")
        if kind == "nbool" and isinstance(value, str) and value.strip().lower() in ("", "null"):
            return None
    elif kind in ("int", "nint", "enum", "delay"):
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            number = value
        elif isinstance(value, str):
            try:
                number = float(value.strip())
            except ValueError:
                number = None
            if number is not None and not math.isfinite(number):
                number = None
        if number is not None and kind != "enum":
            return min(max(round(number), spec.low), spec.high)
        if number is not None and kind == "enum" and spec.low <= round(number) <= spec.high:
            return round(number)
    elif kind == "triggers" and isinstance(value, list):
        return list(dict.fromkeys(v for v in value if v in GENERATION_TYPES))
    elif kind == "filter":
        return None
    return copy.deepcopy(spec.default)


def _assemble(known: Mapping[str, Any], unknown: Mapping[str, Any], uid: int | None) -> dict[str, Any]:
    """The stored dict: ``uid``, the known fields in ST's order, then the unknown keys (values are used as
    given: callers pass freshly decoded or validated values)."""
    out: dict[str, Any] = {}
    if uid is not None:
        out["uid"] = uid
    for spec in ENTRY_FIELDS:
        if spec.name in known:
            value = known[spec.name]
        else:
            value = list(spec.default) if isinstance(spec.default, list) else spec.default
        if spec.name == "characterFilter" and value is None:
            continue
        out[spec.name] = value
    for name, value in unknown.items():
        if name not in out:
            out[name] = value
    return out


def entry_defaults() -> dict[str, Any]:
    return _assemble({}, {}, None)


def entry_validate(
    raw: Any, *, base: Mapping[str, Any] | None = None, prefix: str = ""
) -> tuple[dict[str, Any], int | None]:
    """Strict REST validation of one entry → ``(data without uid, uid or None)``.

    ``base`` (PATCH) supplies the values of fields that ``raw`` does not send, unknown keys included;
    without it, missing fields take ST's defaults and unknown keys are exactly those sent. Raises
    ``ValidationError`` with camelCase field names (prefixed, e.g. ``entries.3.probability``)."""
    if not isinstance(raw, Mapping):
        raise ValidationError({prefix.rstrip(".") or "nonFieldErrors": [_("Must be an object.")]})
    errors: dict[str, list[str]] = {}
    known: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    if base is not None:
        for name, value in base.items():
            if name == "uid":
                continue
            (known if name in FIELDS_BY_NAME else unknown)[name] = copy.deepcopy(value)
    for name, value in raw.items():
        if not isinstance(name, str):
            continue
        if name == "uid":
            continue
        spec = FIELDS_BY_NAME.get(name)
        if spec is None:
            unknown[name] = value
            continue
        try:
            known[name] = _strict(spec, value)
        except _Invalid as exc:
            errors[f"{prefix}{name}"] = [exc.message]
    uid: int | None = None
    if raw.get("uid") is not None:
        try:
            uid = _check_int(raw["uid"], FieldSpec("uid", "int", 0, 0, MAX_UID))
        except _Invalid as exc:
            errors[f"{prefix}uid"] = [exc.message]
    if errors:
        raise ValidationError(errors)
    data = _assemble(known, unknown, None)
    return data, uid


def entry_coerce(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Lenient normalisation of an imported ST entry (without ``uid``); unknown keys kept."""
    known: dict[str, Any] = {}
    unknown: dict[str, Any] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or name == "uid":
            continue
        spec = FIELDS_BY_NAME.get(name)
        if spec is None:
            unknown[name] = value
        else:
            known[name] = _lenient(spec, value)
    return _assemble(known, unknown, None)


def _free_uids(used: set[int]) -> Iterator[int]:
    """Smallest free integers first (ST's `getFreeWorldEntryUid`)."""
    candidate = 0
    while True:
        if candidate not in used:
            yield candidate
        candidate += 1


def assign_uids(wanted: Sequence[int | None], used: Iterable[int] = ()) -> list[int]:
    """Keep each wanted uid that is free (first come), give the others the smallest free integers."""
    taken = set(used)
    result: list[int | None] = []
    for uid in wanted:
        if uid is not None and 0 <= uid <= MAX_UID and uid not in taken:
            taken.add(uid)
            result.append(uid)
        else:
            result.append(None)
    free = _free_uids(taken)
    return [uid if uid is not None else next(free) for uid in result]


def _row(lorebook: Lorebook, uid: int, data: dict[str, Any]) -> LorebookEntry:
    stored = {"uid": uid, **{k: v for k, v in data.items() if k != "uid"}}
    order = stored.get("order")
    return LorebookEntry(
        lorebook=lorebook,
        uid=uid,
        order=int(order) if _is_int(order) else 100,
        disable=stored.get("disable") is True,
        data=stored,
    )


def _touch(lorebook: Lorebook) -> None:
    Lorebook.objects.filter(pk=lorebook.pk).update(updated_at=timezone.now())


def _too_many() -> ValidationError:
    return ValidationError({"entries": [_("A lorebook holds at most %(max)s entries.") % {"max": MAX_ENTRIES}]})


# ---------------------------------------------------------------------------------------- lorebooks


def owned_character_get(*, user: Any, character_id: int) -> Character:
    character = Character.objects.filter(pk=character_id, novel__owner=user).first()
    if character is None:
        raise ValidationError({"characterId": [_("Character %(id)s does not exist.") % {"id": character_id}]})
    return character


def entries_validate(raw_entries: Any) -> list[tuple[dict[str, Any], int | None]]:
    """A list of REST entries → validated ``(data, uid)`` pairs; duplicate uids are an error."""
    if not isinstance(raw_entries, list):
        raise ValidationError({"entries": [_("Must be a list of entries.")]})
    if len(raw_entries) > MAX_ENTRIES:
        raise _too_many()
    errors: dict[str, list[str]] = {}
    validated: list[tuple[dict[str, Any], int | None]] = []
    seen: set[int] = set()
    for index, raw in enumerate(raw_entries):
        try:
            data, uid = entry_validate(raw, prefix=f"entries.{index}.")
        except ValidationError as exc:
            errors.update(exc.detail)  # type: ignore[arg-type]
            continue
        if uid is not None:
            if uid in seen:
                errors[f"entries.{index}.uid"] = [_("Duplicate uid %(uid)s.") % {"uid": uid}]
            seen.add(uid)
        validated.append((data, uid))
    if errors:
        raise ValidationError(errors)
    return validated


def _replace_entries(lorebook: Lorebook, entries: Sequence[tuple[dict[str, Any], int | None]]) -> None:
    LorebookEntry.objects.filter(lorebook=lorebook).delete()
    uids = assign_uids([uid for _data, uid in entries], set())
    rows = []
    for (data, _uid), uid in zip(entries, uids, strict=True):
        if data.get("displayIndex") is None:
            data = {**data, "displayIndex": uid}
        rows.append(_row(lorebook, uid, data))
    LorebookEntry.objects.bulk_create(rows, batch_size=500)


@transaction.atomic
def lorebook_create(
    *,
    owner: Any,
    name: str,
    description: str = "",
    character_id: int | None = None,
    is_global: bool = False,
    entries: Sequence[tuple[dict[str, Any], int | None]] = (),
    st_extra: Mapping[str, Any] | None = None,
    book_extra: Mapping[str, Any] | None = None,
) -> Lorebook:
    character = owned_character_get(user=owner, character_id=character_id) if character_id is not None else None
    lorebook = Lorebook.objects.create(
        owner=owner,
        name=name,
        description=description,
        character=character,
        is_global=is_global,
        st_extra=dict(st_extra or {}),
        book_extra=dict(book_extra or {}),
    )
    _replace_entries(lorebook, entries)
    return lorebook


@transaction.atomic
def lorebook_update(
    *,
    lorebook: Lorebook,
    changes: Mapping[str, Any],
    entries: Sequence[tuple[dict[str, Any], int | None]] | None = None,
) -> Lorebook:
    """``changes`` may hold name, description, character_id (None unlinks), is_global; ``entries``
    (when given) replace all entries."""
    if "name" in changes:
        lorebook.name = changes["name"]
    if "description" in changes:
        lorebook.description = changes["description"]
    if "is_global" in changes:
        lorebook.is_global = changes["is_global"]
    if "character_id" in changes:
        cid = changes["character_id"]
        lorebook.character = None if cid is None else owned_character_get(user=lorebook.owner, character_id=cid)
    lorebook.save()
    if entries is not None:
        _replace_entries(lorebook, entries)
    return lorebook


def lorebook_delete(*, lorebook: Lorebook) -> None:
    lorebook.delete()


# -------------------------------------------------------------------------------------------- entries


@transaction.atomic
def entry_create(*, lorebook: Lorebook, data: dict[str, Any], uid: int | None = None) -> LorebookEntry:
    """A new entry; without ``uid`` the smallest free one. A taken ``uid`` is a validation error."""
    Lorebook.objects.select_for_update().filter(pk=lorebook.pk).first()  # serialise uid assignment
    used = set(LorebookEntry.objects.filter(lorebook=lorebook).values_list("uid", flat=True))
    if len(used) >= MAX_ENTRIES:
        raise _too_many()
    if uid is not None and uid in used:
        raise ValidationError({"uid": [_("An entry with uid %(uid)s already exists.") % {"uid": uid}]})
    uid = uid if uid is not None else next(iter(_free_uids(used)))
    if data.get("displayIndex") is None:
        data = {**data, "displayIndex": uid}
    entry = _row(lorebook, uid, data)
    entry.save()
    _touch(lorebook)
    return entry


@transaction.atomic
def entry_update(*, entry: LorebookEntry, data: dict[str, Any]) -> LorebookEntry:
    """Replace the entry's data (already validated and merged by the caller); the uid never changes."""
    fresh = _row(entry.lorebook, entry.uid, data)
    entry.data, entry.order, entry.disable = fresh.data, fresh.order, fresh.disable
    entry.save(update_fields=["data", "order", "disable", "updated_at"])
    _touch(entry.lorebook)
    return entry


@transaction.atomic
def entry_delete(*, entry: LorebookEntry) -> None:
    lorebook = entry.lorebook
    entry.delete()
    _touch(lorebook)


# --------------------------------------------------------------------------------------------- import


@dataclass(frozen=True, slots=True)
class ImportedBook:
    name: str
    description: str
    entries: list[dict[str, Any]]  # ST entry dicts (uid included when known)
    st_extra: dict[str, Any]
    book_extra: dict[str, Any]


_BOOK_KEYS = ("entries", "name", "description")


def _from_book(book: Mapping[str, Any], *, fallback_name: str) -> ImportedBook:
    name = book.get("name") if isinstance(book.get("name"), str) and book.get("name", "").strip() else fallback_name
    description = book.get("description") if isinstance(book.get("description"), str) else ""
    extra = {k: copy.deepcopy(v) for k, v in book.items() if k not in _BOOK_KEYS}
    return ImportedBook(cast(str, name), cast(str, description), character_book_to_st_entries(book), {}, extra)


def lorebook_read_file(*, data: bytes, filename: str | None, content_type: str | None) -> ImportedBook:
    """Decode an uploaded lorebook: ST world-info JSON, ``lorebook_v3``, or a card (PNG/APNG, JSON,
    CHARX) whose ``character_book`` is taken. Raises ``ApplicationError`` 400 with a ``code``."""
    limits = card_limits()
    if len(data) > limits.max_file_bytes:
        raise card_too_large_error()
    stem = PurePosixPath(filename or "").stem.strip() or _("Imported lorebook")
    head = data.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    try:
        if head in (b"{", b"["):
            doc = load_card_json(data, limits=limits)
            if is_lorebook_v3(doc):
                return _from_book(lorebook_v3_to_book(doc), fallback_name=stem)
            if isinstance(doc, dict) and "spec" not in doc and isinstance(doc.get("entries"), dict | list):
                extra = {k: copy.deepcopy(v) for k, v in doc.items() if k != "entries"}
                return ImportedBook(stem, "", _st_file_entries(doc["entries"]), extra, {})
            parsed = parse_card_json(doc, filename=filename)
        else:
            parsed = parse_card_bytes(data, filename=filename, content_type=content_type, limits=limits)
    except CardError as exc:
        if exc.code.value == "not_a_card":
            raise _not_a_lorebook() from None
        raise card_error(exc) from None
    book = parsed.card_v3["data"].get("character_book")
    if not isinstance(book, dict):
        raise ApplicationError(
            _("The character card has no embedded lorebook (character_book)."),
            code="no_character_book",
            extra={"code": "no_character_book"},
        )
    char_name = parsed.card_v3["data"].get("name") or stem
    return _from_book(book, fallback_name=_("%(name)s's Lorebook") % {"name": char_name})


def _not_a_lorebook() -> ApplicationError:
    return ApplicationError(
        _("The file is not a lorebook (expected SillyTavern world-info JSON, lorebook_v3 or a character card)."),
        code="not_a_lorebook",
        extra={"code": "not_a_lorebook"},
    )


def _st_file_entries(entries: Any) -> list[dict[str, Any]]:
    """Entries of an ST world file in ST's order; an entry without ``uid`` takes its object key."""
    if isinstance(entries, dict):
        keyed = {}
        for key, entry in entries.items():
            if isinstance(entry, dict):
                entry = dict(entry)
                if entry.get("uid") is None and str(key).isdigit():
                    entry["uid"] = int(key)
            keyed[str(key)] = entry
        entries = keyed
    return st_world_entries(entries)


def _import_uid(value: Any) -> int | None:
    if _is_int(value) and 0 <= int(value) <= MAX_UID:
        return int(value)
    if isinstance(value, str) and value.strip().isdigit() and int(value.strip()) <= MAX_UID:
        return int(value.strip())
    return None


@transaction.atomic
def lorebook_import(
    *, owner: Any, data: bytes, filename: str | None = None, content_type: str | None = None, name: str | None = None
) -> Lorebook:
    book = lorebook_read_file(data=data, filename=filename, content_type=content_type)
    if len(book.entries) > MAX_ENTRIES:
        raise _too_many()
    entries = [(entry_coerce(raw), _import_uid(raw.get("uid"))) for raw in book.entries]
    return lorebook_create(
        owner=owner,
        name=(name or book.name)[:200],
        description=book.description,
        entries=entries,
        st_extra=book.st_extra,
        book_extra=book.book_extra,
    )
