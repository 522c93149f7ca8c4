"""Writes for lorebooks: CRUD, entries, import. Worldviews themselves use the shared novel-entity services.

Storage: ``LorebookEntry.data`` holds the whole ST entry — every known field with its value (defaults
filled in) followed by unknown keys kept verbatim — and ``uid``/``order``/``disable`` are copied to
columns. The entry schema is pure (``apps.worldviews.engine.entry_schema``): REST input is validated
strictly (:func:`entry_validate`, its errors translated here into a 400); imported files are coerced
leniently (``entry_coerce``: a wrong type takes ST's default, a number is clamped to its range).
New entries get the smallest free uid (``apps.cards.uids``).

Regex keys are checked on every write (REST entries, imports, the dry run's inline entries, and —
through ``apps.characters.signals.card_received`` — a card's embedded book): a key that does not
compile, is refused by the translation, or backtracks catastrophically on the probe texts is a 400
naming the entry field and the key (``entry_schema.regex_key_errors``; settings
``WORLDINFO_REGEX_PROBE_SECONDS`` per key, ``WORLDINFO_REGEX_CHECK_BUDGET`` per request).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any, cast

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

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
from apps.cards.uids import smallest_free_uid, uids_smallest_free
from apps.cards.values import card_keys
from apps.characters.selectors import character_get_owned
from apps.core.errors import ApplicationError, InvalidInput
from apps.worldviews.engine import Entry, entry_from_st, entry_schema
from apps.worldviews.engine.entry_schema import (
    MAX_ENTRIES,
    EntryInvalid,
    Message,
    RegexCheck,
    entry_coerce,
    entry_key_paths,
    is_int,
    regex_key_errors,
    too_many_entries,
    uid_coerce,
)
from apps.worldviews.models import Lorebook, LorebookEntry

if TYPE_CHECKING:  # the type of Lorebook.character
    from apps.characters.models import Character


def _row(lorebook: Lorebook, uid: int, data: dict[str, Any]) -> LorebookEntry:
    stored = {"uid": uid, **{k: v for k, v in data.items() if k != "uid"}}
    order = stored.get("order")
    return LorebookEntry(
        lorebook=lorebook,
        uid=uid,
        order=int(order) if is_int(order) else 100,
        disable=stored.get("disable") is True,
        data=stored,
    )


def _touch(lorebook: Lorebook) -> None:
    Lorebook.objects.filter(pk=lorebook.pk).update(updated_at=timezone.now())


def _invalid(exc: EntryInvalid) -> InvalidInput:
    """The schema's errors as the 400 with ``details``, each message translated as it was written."""
    return InvalidInput({path: [_translated(m) for m in messages] for path, messages in exc.errors.items()})


def _translated(message: Message) -> str:
    translated = _(message.template)
    if not message.params:
        return translated
    params = {k: _translated(v) if isinstance(v, Message) else v for k, v in message.params.items()}
    return translated % params


# ---------------------------------------------------------------------------------------- regex keys


def regex_check() -> RegexCheck:
    """A fresh write-time regex check for one request, with the settings' limits."""
    return RegexCheck(per_key=settings.WORLDINFO_REGEX_PROBE_SECONDS, budget=settings.WORLDINFO_REGEX_CHECK_BUDGET)


def _refuse_regex_keys(keys: Any, check: RegexCheck | None = None) -> None:
    """A 400 naming each refused regex key among ``(path, key)`` pairs (nothing when all are fine)."""
    errors = regex_key_errors(keys, check or regex_check())
    if errors:
        raise _invalid(EntryInvalid(errors))


def entries_check_regex(entries: Sequence[Mapping[str, Any]], *, prefix: str = "entries.") -> None:
    """Every regex key of these ST entry dicts can be stored, else a 400 (``entries.3.key`` …)."""
    check = regex_check()
    _refuse_regex_keys(
        (item for index, entry in enumerate(entries) for item in entry_key_paths(entry, f"{prefix}{index}.")), check
    )


def card_check_regex(*, card: Mapping[str, Any], path: str = "") -> None:
    """Every regex key of the card's embedded ``character_book`` can be stored, else a 400 with the
    paths ``{path}data.character_book.entries.3.keys`` … (receiver of ``card_received``)."""
    data = card.get("data")
    book = data.get("character_book") if isinstance(data, Mapping) else None
    raw = book.get("entries") if isinstance(book, Mapping) else None
    items = list(raw.items()) if isinstance(raw, Mapping) else list(enumerate(raw)) if isinstance(raw, list) else []
    prefix = f"{path}data.character_book.entries."

    def keys() -> Any:
        for index, entry in items:
            if isinstance(entry, Mapping):
                lists = {"keys": card_keys(entry.get("keys")), "secondary_keys": card_keys(entry.get("secondary_keys"))}
                shaped = {**lists, "content": entry.get("content")}
                yield from entry_key_paths(shaped, f"{prefix}{index}.", primary="keys", secondary="secondary_keys")

    _refuse_regex_keys(keys())


# ---------------------------------------------------------------------------------------- lorebooks


def _linked_character(*, user: Any, character_id: int) -> Character:
    """The caller's character for ``characterId``; someone else's is a 400 on that field, as a missing one."""
    character = character_get_owned(user=user, pk=character_id)
    if character is None:
        raise InvalidInput({"characterId": [_("Character %(id)s does not exist.") % {"id": character_id}]})
    return character


def entry_validate(raw: Any, *, base: Mapping[str, Any] | None = None) -> tuple[dict[str, Any], int | None]:
    """One REST entry, validated by the schema (:func:`entry_schema.entry_validate`); its errors are a
    400 with translated messages. The regex keys it sends are checked (with ``base``, a PATCH, only the
    key fields and content sent: a stored key is not refused again by an unrelated edit)."""
    try:
        data, uid = entry_schema.entry_validate(raw, base=base)
    except EntryInvalid as exc:
        raise _invalid(exc) from None
    sent = data if base is None else {k: data[k] for k in ("key", "keysecondary", "content") if k in raw}
    _refuse_regex_keys(entry_key_paths(sent))
    return data, uid


def entries_validate(raw_entries: Any) -> list[tuple[dict[str, Any], int | None]]:
    """A list of REST entries, validated by the schema (:func:`entry_schema.entries_validate`), their
    regex keys checked."""
    try:
        validated = entry_schema.entries_validate(raw_entries)
    except EntryInvalid as exc:
        raise _invalid(exc) from None
    entries_check_regex([data for data, _uid in validated])
    return validated


def inline_entries(raw_entries: Any) -> list[Entry]:
    """Entries sent with a dry run, validated like stored ones (400 on a bad entry or a refused regex
    key), numbered by the smallest free uid and converted for the engine (no book: global source)."""
    validated = entries_validate(raw_entries)
    uids = uids_smallest_free([uid for _data, uid in validated])
    return [
        entry_from_st({**data, "uid": uid}, lorebook_id=None, source="global")
        for (data, _uid), uid in zip(validated, uids, strict=True)
    ]


def _replace_entries(lorebook: Lorebook, entries: Sequence[tuple[dict[str, Any], int | None]]) -> None:
    LorebookEntry.objects.filter(lorebook=lorebook).delete()
    uids = uids_smallest_free([uid for _data, uid in entries], set())
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
    character = _linked_character(user=owner, character_id=character_id) if character_id is not None else None
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
        lorebook.character = None if cid is None else _linked_character(user=lorebook.owner, character_id=cid)
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
        raise _invalid(too_many_entries())
    if uid is not None and uid in used:
        raise InvalidInput({"uid": [_("An entry with uid %(uid)s already exists.") % {"uid": uid}]})
    uid = uid if uid is not None else smallest_free_uid(used)
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


@transaction.atomic
def lorebook_import(
    *, owner: Any, data: bytes, filename: str | None = None, content_type: str | None = None, name: str | None = None
) -> Lorebook:
    book = lorebook_read_file(data=data, filename=filename, content_type=content_type)
    if len(book.entries) > MAX_ENTRIES:
        raise _invalid(too_many_entries())
    entries = [(entry_coerce(raw), uid_coerce(raw.get("uid"))) for raw in book.entries]
    entries_check_regex([entry for entry, _uid in entries])
    return lorebook_create(
        owner=owner,
        name=(name or book.name)[:200],
        description=book.description,
        entries=entries,
        st_extra=book.st_extra,
        book_extra=book.book_extra,
    )
