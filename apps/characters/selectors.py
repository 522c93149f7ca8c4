"""Reads for characters: lists, the caller's character, card export, the embedded lorebook."""

from __future__ import annotations

import copy
from typing import Any, Literal

from django.db.models import QuerySet

from apps.cards import (
    character_book_to_st_entries,
    export_card_json,
    export_card_png,
    normalize_card_v3,
)
from apps.characters.models import Character


def character_list(*, user: Any, novel_id: int | None = None, search: str | None = None) -> QuerySet[Character]:
    """Characters in the caller's novels only (avatar bytes and the original card are not loaded)."""
    qs = Character.objects.filter(novel__owner=user)
    if novel_id is not None:
        qs = qs.filter(novel_id=novel_id)
    if search:
        qs = qs.filter(name__icontains=search)
    return qs.prefetch_related("fields").order_by("-updated_at", "-id")


def character_get_owned(*, user: Any, pk: int, full: bool = False) -> Character | None:
    """The caller's character, or None (someone else's looks missing; the caller picks 404 or 400).
    The avatar bytes and the original card stay deferred unless ``full`` (card export needs them)."""
    characters = Character.objects.all()
    if full:
        characters = characters.defer(None)
    return characters.filter(pk=pk, novel__owner=user).first()


def character_avatar(*, user: Any, character_id: int) -> tuple[bytes, str] | None:
    """``(png, sha256)`` of the caller's character avatar, or None."""
    row = (
        Character.objects.filter(pk=character_id, novel__owner=user)
        .exclude(avatar_sha256="")
        .values_list("avatar", "avatar_sha256")
        .first()
    )
    if row is None or row[0] is None:
        return None
    return bytes(row[0]), row[1]


def character_card_v3(character: Character) -> dict[str, Any]:
    """The character's card, or one built from its name and fields when it has none (the fields become
    the description, one ``key: value`` per line)."""
    if character.card:
        return character.card
    lines = [f"{f.key}: {f.value}" for f in character.fields.all()]
    return normalize_card_v3({"name": character.name, "description": "\n".join(lines)})


def character_export(
    *, character: Character, fmt: Literal["json", "png"], spec: Literal["v2", "v3"] = "v3"
) -> dict[str, Any] | bytes:
    """The card as a JSON document (``spec`` v2/v3, merged over the imported original) or a PNG with
    both ``chara`` (V2) and ``ccv3`` (V3) chunks on the stored avatar."""
    card = character_card_v3(character)
    original = character.card_original or None
    if fmt == "png":
        avatar = bytes(character.avatar) if character.avatar is not None else None
        return export_card_png(card, original, avatar)
    return export_card_json(card, original, spec=spec)


def character_lorebook_entries(character: Character) -> list[dict[str, Any]]:
    """The card's embedded ``character_book`` as SillyTavern world-info entry dicts (reference §1.5),
    in book order; ``[]`` without a book. The book is active in the character's chats by default."""
    book = (character.card or {}).get("data", {}).get("character_book")
    if not isinstance(book, dict):
        return []
    return character_book_to_st_entries(copy.deepcopy(book))
