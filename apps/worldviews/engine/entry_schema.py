"""SillyTavern's world-info entry schema: every field of ``newWorldInfoEntryDefinition`` with its kind,
range and default, strict validation for REST input and lenient coercion for imported files.

Pure Python, no Django. A stored entry is :func:`entry_defaults` with the given values: the known fields
in ST's order, then unknown keys kept verbatim (``uid`` is the caller's).

* :func:`entry_validate` / :func:`entries_validate` (REST): a wrong type or an out-of-range value is an
  error; they raise :class:`EntryInvalid` with camelCase field paths (``entries.3.probability``).
* :func:`entry_coerce` / :func:`uid_coerce` (imports): never raise; a clear intent is coerced
  (``"true"``, ``"12"``), a number is clamped to its range, the rest takes ST's default.
* :func:`regex_key_errors` (every write, REST and imports): the ``/pattern/flags`` keys that cannot be
  stored (:func:`.matching.regex_key_problem`), with the path of the entry field holding each.

Messages are :class:`Message` strings: English text that keeps its template and parameters, so that
the Django side translates them exactly as before (``gettext(template) % params``).

    >>> entry_coerce({"key": "龙, 蛇", "probability": 150, "x-tool": 1})["probability"]
    100
    >>> try:
    ...     entry_validate({"depth": -1})
    ... except EntryInvalid as exc:
    ...     print(exc.errors)
    {'depth': ['Must be between 0 and 10000.']}
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from apps.cards.uids import MAX_UID
from apps.cards.values import key_items, text

from .decorators import parse_decorators
from .matching import PROBE_SECONDS, regex_key_problem
from .model import GENERATION_TYPES

MAX_ENTRIES = 20_000
MAX_KEYS = 1_000
MAX_KEY_CHARS = 1_000
MAX_CONTENT_CHARS = 200_000
MAX_TEXT_CHARS = 5_000


class Message(str):
    """An English message that keeps its ``template`` and ``params`` for translation."""

    template: str
    params: dict[str, Any]

    def __new__(cls, template: str, **params: Any) -> Message:
        message = super().__new__(cls, template % params if params else template)
        message.template = template
        message.params = params
        return message


_ = Message  # marks the templates for makemessages, as gettext would


class EntryInvalid(Exception):
    """Validation failures: a field path (``"entries.3.key"``, ``"nonFieldErrors"``) → its messages."""

    def __init__(self, errors: dict[str, list[Message]]) -> None:
        super().__init__(errors)
        self.errors = errors


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One ST entry field: ``kind`` is keys|str|bool|nbool|int|nint|enum|delay|triggers|filter."""

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
    def __init__(self, message: Message) -> None:
        self.message = message


def is_int(value: Any) -> TypeGuard[int | float]:
    """An integer, or a finite float with an integral value; not a boolean."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())


def _check_int(value: Any, spec: FieldSpec) -> int:
    if not is_int(value):
        raise _Invalid(_("Must be an integer."))
    number = int(value)
    if not spec.low <= number <= spec.high:
        raise _Invalid(_("Must be between %(low)s and %(high)s.", low=spec.low, high=spec.high))
    return number


def _check_str(value: Any, max_chars: int) -> str:
    if not isinstance(value, str):
        raise _Invalid(_("Must be a string."))
    if len(value) > max_chars:
        raise _Invalid(_("Must be at most %(max)s characters.", max=max_chars))
    return value


def _check_strings(value: Any, *, max_items: int, max_chars: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid(_("Must be a list of strings."))
    if len(value) > max_items:
        raise _Invalid(_("Must have at most %(max)s items.", max=max_items))
    if any(len(item) > max_chars for item in value):
        raise _Invalid(_("Each item must be at most %(max)s characters.", max=max_chars))
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
        if not is_int(value) or not spec.low <= int(value) <= spec.high:
            choices = ", ".join(map(str, range(spec.low, spec.high + 1)))
            raise _Invalid(_("Must be one of %(choices)s.", choices=choices))
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
                _(
                    "Unknown generation type %(value)s; expected one of %(choices)s.",
                    value=unknown[0],
                    choices=", ".join(GENERATION_TYPES),
                )
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
        if isinstance(value, str | list):
            return [item[:MAX_KEY_CHARS] for item in key_items(value)[:MAX_KEYS]]
    elif kind == "str":
        return text(value)[: spec.max_chars]
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
    :class:`EntryInvalid` with camelCase field names (prefixed, e.g. ``entries.3.probability``)."""
    if not isinstance(raw, Mapping):
        raise EntryInvalid({prefix.rstrip(".") or "nonFieldErrors": [_("Must be an object.")]})
    errors: dict[str, list[Message]] = {}
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
        raise EntryInvalid(errors)
    data = _assemble(known, unknown, None)
    return data, uid


def too_many_entries() -> EntryInvalid:
    return EntryInvalid({"entries": [_("A lorebook holds at most %(max)s entries.", max=MAX_ENTRIES)]})


def entries_validate(raw_entries: Any) -> list[tuple[dict[str, Any], int | None]]:
    """A list of REST entries → validated ``(data, uid)`` pairs; duplicate uids are an error."""
    if not isinstance(raw_entries, list):
        raise EntryInvalid({"entries": [_("Must be a list of entries.")]})
    if len(raw_entries) > MAX_ENTRIES:
        raise too_many_entries()
    errors: dict[str, list[Message]] = {}
    validated: list[tuple[dict[str, Any], int | None]] = []
    seen: set[int] = set()
    for index, raw in enumerate(raw_entries):
        try:
            data, uid = entry_validate(raw, prefix=f"entries.{index}.")
        except EntryInvalid as exc:
            errors.update(exc.errors)
            continue
        if uid is not None:
            if uid in seen:
                errors[f"entries.{index}.uid"] = [_("Duplicate uid %(uid)s.", uid=uid)]
            seen.add(uid)
        validated.append((data, uid))
    if errors:
        raise EntryInvalid(errors)
    return validated


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


def uid_coerce(value: Any) -> int | None:
    """An imported entry's ``uid`` when it is usable (an integer, or digits, in ``0..MAX_UID``), else
    ``None`` (the lorebook then gives it the smallest free one)."""
    if is_int(value) and 0 <= int(value) <= MAX_UID:
        return int(value)
    text = value.strip() if isinstance(value, str) else ""
    if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_UID)) and int(text) <= MAX_UID:
        return int(text)
    return None


# -------------------------------------------------------------------------------------- regex keys

MAX_REGEX_ERRORS = 50  # reported per request; checking stops there


@dataclass(slots=True)
class RegexCheck:
    """The write-time check of regex keys for one request: the probe time allowed per key, the time the
    whole request may spend checking (seconds), and what it has spent so far."""

    per_key: float = PROBE_SECONDS
    budget: float = 5.0
    spent: float = 0.0


_REASONS = {
    "invalid": _("it is not a valid regular expression (%(error)s)"),
    "flags": _("a flag is repeated"),
    "too_long": _("it is longer than %(max)s characters"),
    "nested_quantifier": _("a repeated group contains another repetition, as in (a+)+ (catastrophic backtracking)"),
    "too_large": _("its repetition counts expand to over %(max)s items"),
    "catastrophic": _("it takes over %(ms)s ms on a %(chars)s-character test text (catastrophic backtracking)"),
}


def entry_key_paths(
    entry: Mapping[str, Any], prefix: str = "", *, primary: str = "key", secondary: str = "keysecondary"
) -> Iterator[tuple[str, str]]:
    """``(field path, key)`` for every key of an entry dict: primary and secondary keys, and the
    ``@@additional_keys`` / ``@@exclude_keys`` decorators of its content (path ``…content``).
    ``primary``/``secondary`` name the fields (``keys``/``secondary_keys`` in a card's book)."""
    for name in (primary, secondary):
        value = entry.get(name)
        for item in value if isinstance(value, list | tuple) else ():
            if isinstance(item, str):
                yield f"{prefix}{name}", item
    content = entry.get("content")
    if isinstance(content, str) and content.startswith("@@"):
        decorators, _rest = parse_decorators(content)
        for name in ("additional_keys", "exclude_keys"):
            for item in decorators.get(name, "").split(","):
                yield f"{prefix}content", item


def regex_key_errors(keys: Iterable[tuple[str, str]], check: RegexCheck) -> dict[str, list[Message]]:
    """The refused regex keys among ``(path, key)`` pairs: path → messages naming each key and why.
    Plain keys are skipped at once. Stops after :data:`MAX_REGEX_ERRORS` refusals, or when the request
    has spent ``check.budget`` seconds checking (then ``nonFieldErrors`` says so)."""
    errors: dict[str, list[Message]] = {}
    count = 0
    seen: set[tuple[str, str]] = set()
    for path, key in keys:
        key = key.strip()
        if not key.startswith("/") or (path, key) in seen:
            continue
        seen.add((path, key))
        if check.spent > check.budget:
            errors.setdefault("nonFieldErrors", []).append(
                _(
                    "Checking the regex keys of this request took over %(seconds)s s; send fewer at a time.",
                    seconds=f"{check.budget:g}",
                )
            )
            break
        began = time.perf_counter()
        problem = regex_key_problem(key, check.per_key)
        check.spent += time.perf_counter() - began
        if problem is None:
            continue
        reason = Message(_REASONS[problem.code].template, **dict(problem.params))
        errors.setdefault(path, []).append(_("Regex key %(key)s is refused: %(reason)s.", key=key, reason=reason))
        count += 1
        if count >= MAX_REGEX_ERRORS:
            break
    return errors
