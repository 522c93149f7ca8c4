"""Card documents: spec detection, normalisation to one V3 shape, V2 down-conversion and export merge.

The stored form of a character is a pair ``(card_v3, original)``:

* ``card_v3`` — ``{"spec": "chara_card_v3", "spec_version": "3.0", "data": {...}}`` with exactly the
  V3 ``data`` fields (``V3_DATA_KEYS``), each typed and defaulted. ``extensions`` is the original object
  verbatim; ``character_book`` keeps unknown book/entry keys (required keys are filled in).
* ``original`` — the imported JSON object verbatim. It supplies, on export, every key that is not a
  V3 field: unknown top-level keys, unknown ``data`` keys, ST's hybrid top-level copies.

Export merges the (possibly edited) ``card_v3`` fields back over a copy of ``original``; see
:func:`export_card_json`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from .book import normalize_character_book
from .errors import CardError, CardErrorCode
from .values import text

V3_SPEC = "chara_card_v3"
V2_SPEC = "chara_card_v2"
V3_VERSION = "3.0"
V2_VERSION = "2.0"

V1_FIELDS = ("name", "description", "personality", "scenario", "first_mes", "mes_example")
_STRING_FIELDS = (
    *V1_FIELDS,
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "creator",
    "character_version",
)
V2_DATA_KEYS = (
    *V1_FIELDS,
    "creator_notes",
    "system_prompt",
    "post_history_instructions",
    "alternate_greetings",
    "tags",
    "creator",
    "character_version",
    "extensions",
)
V3_DATA_KEYS = (
    *V2_DATA_KEYS,
    "group_only_greetings",
    "character_book",
    "assets",
    "nickname",
    "creator_notes_multilingual",
    "source",
    "creation_date",
    "modification_date",
)
V3_ONLY_KEYS = (
    "group_only_greetings",
    "assets",
    "nickname",
    "creator_notes_multilingual",
    "source",
    "creation_date",
    "modification_date",
)
DEFAULT_ASSETS: tuple[dict[str, str], ...] = ({"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},)
# Optional V3 fields: on export they are left out when absent from the original and still at default.
_OPTIONAL_DEFAULTS: dict[str, Any] = {
    "assets": list(DEFAULT_ASSETS),
    "nickname": "",
    "creator_notes_multilingual": {},
    "source": [],
    "creation_date": 0,
    "modification_date": 0,
}
# Gradio / Pygmalion JSON field → V1 field.
_PYGMALION = {
    "char_name": "name",
    "char_persona": "description",
    "char_greeting": "first_mes",
    "example_dialogue": "mes_example",
    "world_scenario": "scenario",
}
_ST_NOTES_PLACEHOLDER = "Creator's notes go here."

Spec = Literal["v1", "v2", "v3"]


# ---- coercion -------------------------------------------------------------------------------------------


def _as_str_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, str)]


def _as_tags(value: Any) -> list[str]:
    if isinstance(value, str):  # V1 / ST legacy: "a, b, c"
        return [tag.strip() for tag in value.split(",") if tag.strip()]
    return [tag for tag in _as_str_list(value) if tag]


def _as_timestamp(value: Any) -> int | float:
    if isinstance(value, bool):
        return 0
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit() and len(value.strip()) <= 15:
        return int(value.strip())
    return 0


def _as_assets(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        return [dict(a) for a in DEFAULT_ASSETS]
    assets = []
    for item in value:
        if not isinstance(item, dict):
            continue
        asset = copy.deepcopy(item)
        for key in ("type", "uri", "name", "ext"):
            asset[key] = text(asset.get(key))
        assets.append(asset)
    return assets


def _as_multilingual(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v for k, v in value.items() if isinstance(v, str)}


# ---- detection and normalisation --------------------------------------------------------------------------


def detect_spec(doc: Any) -> tuple[Spec, bool]:
    """``(spec, hybrid)`` of a card JSON value; ``hybrid`` = a V2/V3 wrapper with V1 top-level copies.

    Raises ``CardError(not_a_card)`` for anything that is not a character card.
    """
    if not isinstance(doc, dict):
        raise CardError(CardErrorCode.NOT_A_CARD, "The JSON is not a character card (expected an object).")
    spec = doc.get("spec")
    data = doc.get("data")
    hybrid = any(key in doc for key in V1_FIELDS)
    if isinstance(spec, str):
        if not isinstance(data, dict) and not hybrid:
            raise CardError(CardErrorCode.NOT_A_CARD, "The card has a spec but no data object.")
        marker = spec.strip().lower()
        if marker == V3_SPEC:
            return "v3", hybrid
        if marker == V2_SPEC:
            return "v2", hybrid
        if marker == "lorebook_v3":
            raise CardError(CardErrorCode.NOT_A_CARD, "This is a lorebook (lorebook_v3), not a character card.")
        suffix = marker.removeprefix("chara_card_v")
        if suffix != marker and suffix.isdigit() and isinstance(data, dict):  # future chara_card_vN
            return ("v3" if int(suffix) >= 3 else "v2"), hybrid
        raise CardError(CardErrorCode.NOT_A_CARD, f"Unknown card spec {spec[:40]!r}.")
    if isinstance(data, dict) and any(key in data for key in V1_FIELDS):
        return "v2", hybrid
    if hybrid or any(key in doc for key in _PYGMALION):
        return "v1", False
    raise CardError(CardErrorCode.NOT_A_CARD, "The JSON is not a character card (no spec and no character fields).")


def _v1_source(doc: dict[str, Any]) -> dict[str, Any]:
    """V1 (flat) → V2-like data fields, as SillyTavern's V1 import (reference §1.4)."""
    src: dict[str, Any] = {key: doc[key] for key in V1_FIELDS if key in doc}
    for legacy, field in _PYGMALION.items():
        if field not in src and legacy in doc:
            src[field] = doc[legacy]
    notes = doc.get("creatorcomment")
    if notes is None:
        notes = text(doc.get("creator_notes")).replace(_ST_NOTES_PLACEHOLDER, "")
    src["creator_notes"] = notes
    for key in ("system_prompt", "post_history_instructions", "alternate_greetings", "tags", "creator"):
        if key in doc:
            src[key] = doc[key]
    for key in ("character_version", "character_book", "group_only_greetings"):
        if key in doc:
            src[key] = doc[key]
    extensions = copy.deepcopy(doc["extensions"]) if isinstance(doc.get("extensions"), dict) else {}
    for key in ("talkativeness", "fav"):
        if key in doc and key not in extensions:
            extensions[key] = copy.deepcopy(doc[key])
    src["extensions"] = extensions
    return src


def _wrapped_source(doc: dict[str, Any]) -> dict[str, Any]:
    data = doc.get("data")
    src = dict(data) if isinstance(data, dict) else {}
    for key in V1_FIELDS:  # ST's hybrid: top-level copies fill fields missing from data
        if key not in src and key in doc:
            src[key] = doc[key]
    if "tags" not in src and "tags" in doc:
        src["tags"] = doc["tags"]
    if "creator_notes" not in src and "creatorcomment" in doc:
        src["creator_notes"] = doc["creatorcomment"]
    return src


def _build_data(src: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in V3_DATA_KEYS:
        if key in _STRING_FIELDS or key == "nickname":
            data[key] = text(src.get(key))
        elif key in ("alternate_greetings", "group_only_greetings", "source"):
            data[key] = _as_str_list(src.get(key))
        elif key == "tags":
            data[key] = _as_tags(src.get(key))
        elif key == "extensions":
            ext = src.get(key)
            data[key] = copy.deepcopy(ext) if isinstance(ext, dict) else {}
        elif key == "character_book":
            book = normalize_character_book(src.get(key), v3=True)
            if book is not None:
                data[key] = book
        elif key == "assets":
            data[key] = _as_assets(src.get(key))
        elif key == "creator_notes_multilingual":
            data[key] = _as_multilingual(src.get(key))
        elif key in ("creation_date", "modification_date"):
            data[key] = _as_timestamp(src.get(key))
    return data


def normalize_card(doc: Any, *, name_fallback: str | None = None) -> tuple[dict[str, Any], Spec, bool]:
    """Any accepted card JSON value → ``(card_v3, spec, hybrid)``. Raises ``CardError(not_a_card)``."""
    spec, hybrid = detect_spec(doc)
    src = _v1_source(doc) if spec == "v1" else _wrapped_source(doc)
    data = _build_data(src)
    if not data["name"].strip() and name_fallback:
        data["name"] = name_fallback
    return {"spec": V3_SPEC, "spec_version": V3_VERSION, "data": data}, spec, hybrid


def normalize_card_v3(card: Any) -> dict[str, Any]:
    """Re-normalise a (possibly edited) V3 document, or just its ``data`` object, to the canonical shape."""
    if isinstance(card, dict) and isinstance(card.get("data"), dict):
        src = card["data"]
    elif isinstance(card, dict):
        src = card
    else:
        src = {}
    return {"spec": V3_SPEC, "spec_version": V3_VERSION, "data": _build_data(src)}


# ---- V2 and export --------------------------------------------------------------------------------------


def to_v2(card_v3: dict[str, Any]) -> dict[str, Any]:
    """The V2 document of a V3 card.

    The 14 V2 ``data`` fields, ``character_book`` when present (entries keep ``use_regex``; V2 readers
    ignore it) and ``group_only_greetings`` when non-empty (SillyTavern stores it in V2 too). The other
    V3-only fields (``assets``, ``nickname``, ``creator_notes_multilingual``, ``source``,
    ``creation_date``, ``modification_date``) are dropped: they travel in the V3 document (the ``ccv3``
    PNG chunk). Decorators in book entries are kept (SillyTavern reads ``@@activate`` in V2 books too)
    and ``creator_notes`` gets no backfill warning.
    """
    data = normalize_card_v3(card_v3)["data"]
    v2: dict[str, Any] = {key: copy.deepcopy(data[key]) for key in V2_DATA_KEYS}
    if "character_book" in data:
        v2["character_book"] = copy.deepcopy(data["character_book"])
    if data["group_only_greetings"]:
        v2["group_only_greetings"] = list(data["group_only_greetings"])
    return {"spec": V2_SPEC, "spec_version": V2_VERSION, "data": v2}


def export_card_json(
    card_v3: dict[str, Any], original: dict[str, Any] | None = None, spec: Literal["v2", "v3"] = "v3"
) -> dict[str, Any]:
    """The card as a V2 or V3 JSON document, merged over the stored original.

    * Every key of ``original`` that is not a card field survives: top-level keys (ST's ``avatar``,
      ``chat``, ``create_date``, anything unknown) and unknown ``data`` keys, in their original position.
    * Card fields take the current values of ``card_v3``; ``extensions`` is written as ``card_v3`` holds
      it (imported verbatim, so unchanged unless edited); a removed ``character_book`` is removed.
    * Optional V3 fields still at their default and absent from the original are not added, so an
      unedited card exports as it was imported.
    * Top-level V1 copies (V1 originals, ST's hybrid form) are updated to the current values.
    * V2: V3-only fields are dropped (see :func:`to_v2`), ``group_only_greetings`` kept when the original
      had it or it is non-empty.
    """
    if spec not in ("v2", "v3"):
        raise ValueError(f"unknown spec {spec!r}")
    data = normalize_card_v3(card_v3)["data"]
    out = copy.deepcopy(original) if isinstance(original, dict) else {}
    orig_data = out.get("data")
    wrapped = isinstance(orig_data, dict)
    merged: dict[str, Any] = dict(orig_data) if isinstance(orig_data, dict) else {}
    had = set(merged)

    if "character_book" not in data:
        merged.pop("character_book", None)
    if spec == "v3":
        for key, value in data.items():
            if key in _OPTIONAL_DEFAULTS and key not in had and value == _OPTIONAL_DEFAULTS[key]:
                continue
            merged[key] = copy.deepcopy(value)
    else:
        for key in V3_ONLY_KEYS:
            merged.pop(key, None)
        merged.update(to_v2(data)["data"])
        if "group_only_greetings" in had:
            merged["group_only_greetings"] = list(data["group_only_greetings"])

    # Top-level legacy copies: keep them truthful.
    for key in V1_FIELDS:
        if key in out:
            out[key] = data[key]
    for legacy, field in _PYGMALION.items():
        if legacy in out:
            out[legacy] = data[field]
    if isinstance(out.get("tags"), list):
        out["tags"] = list(data["tags"])
    if "creatorcomment" in out:
        out["creatorcomment"] = data["creator_notes"]

    marker, version = (V3_SPEC, V3_VERSION) if spec == "v3" else (V2_SPEC, V2_VERSION)
    if wrapped:
        out["spec"] = marker
        out["spec_version"] = version
        out["data"] = merged
        return out
    rest = {k: v for k, v in out.items() if k not in ("spec", "spec_version", "data")}
    return {"spec": marker, "spec_version": version, "data": merged, **rest}
