"""Writes for characters: REST create/update with an optional SillyTavern card, and card import.

Fields policy (writing mode keeps working): when a character has a card and the request sends no
``fields``, the ``CharacterField`` rows are **stored** as ``card_fields(card)`` and marked
``fields_from_card``; they then follow every change of the card (or of the name, which is the card's
name). Explicit ``fields`` always win and stop the mirroring. ``prompt_resolve`` therefore reads rows as
before, with the same fixed number of queries.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.translation import gettext as _

from apps.cards import CardError, card_fields, parse_card_bytes, parse_card_json
from apps.cards.messages import card_error, card_error_message, card_limits, card_too_large_error
from apps.characters.models import Character, CharacterField
from apps.characters.signals import card_received
from apps.core.errors import InvalidInput
from apps.novels.models import Novel
from apps.novels.services import owned_novel_get

IMPORT_NOVEL_TITLE = "导入的角色卡"
"""Novel that receives imported cards when the request names none (created on demand, per user)."""

UNSET: Any = object()
"""Marks an optional argument that the request did not send (``None`` means "send null")."""


# --------------------------------------------------------------------------------------- helpers


def _sync_name(card: dict[str, Any], name: str) -> dict[str, Any]:
    card = copy.deepcopy(card)
    card.setdefault("data", {})["name"] = name
    return card


def _replace_fields(character: Character, fields: Sequence[tuple[str, str]]) -> None:
    CharacterField.objects.filter(character=character).delete()
    CharacterField.objects.bulk_create(
        [
            CharacterField(character=character, order=i, key=key[:200], value=value)
            for i, (key, value) in enumerate(fields)
        ]
    )


def _derived_fields(character: Character) -> list[tuple[str, str]]:
    return card_fields(character.card) if character.card else []


def card_validate(doc: Any) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A card sent over REST → ``(card_v3, original, spec)``; V1/V2/V3/hybrid documents (or a bare V3
    ``data`` object) are accepted. Errors are validation errors on ``card``."""
    if not isinstance(doc, dict):
        raise InvalidInput({"card": [_("Must be a character card object.")]})
    if "spec" not in doc and "data" not in doc and "name" not in doc and "char_name" not in doc:
        raise InvalidInput({"card": [_("Must be a character card object.")]})
    try:
        parsed = parse_card_json(doc)
    except CardError as exc:
        raise InvalidInput({"card": [card_error_message(exc.code.value, exc.message)]}) from None
    card_received.send(sender=Character, card=parsed.card_v3, path="card.")  # receivers may refuse it
    return parsed.card_v3, parsed.original, parsed.spec


# ------------------------------------------------------------------------------------ create/update


@transaction.atomic
def character_create(
    *,
    user: Any,
    novel_id: int,
    name: str | None = None,
    fields: Sequence[dict[str, str]] | None = None,
    card: Any = None,
) -> Character:
    novel = owned_novel_get(user=user, novel_id=novel_id)
    character = Character(novel=novel)
    if card is not None:
        card_v3, original, spec = card_validate(card)
        character.card, character.card_original, character.spec = card_v3, original, spec
        character.source_format = Character.SourceFormat.API
    name = name or (character.card.get("data", {}).get("name") if character.card else "") or ""
    if not name.strip():
        raise InvalidInput({"name": [_("This field is required.")]})
    character.name = name[:200]
    if character.card:
        character.card = _sync_name(character.card, character.name)
    character.fields_from_card = bool(character.card) and fields is None
    character.save()
    if fields is not None:
        _replace_fields(character, [(f["key"], f.get("value", "")) for f in fields])
    else:
        _replace_fields(character, _derived_fields(character))
    return character


@transaction.atomic
def character_update(
    *,
    character: Character,
    user: Any,
    partial: bool,
    name: str | None = None,
    novel_id: int | None = None,
    fields: Any = UNSET,
    card: Any = UNSET,
) -> Character:
    """PUT (``partial=False``) and PATCH. ``card`` absent keeps the card, ``None`` removes it (the
    rows stay as explicit fields). Without ``fields``, PUT re-derives the rows from the card (``[]``
    without one); PATCH re-derives them when they mirror the card (or there are none) and the card or
    the name changed."""
    if novel_id is not None and novel_id != character.novel_id:
        character.novel = owned_novel_get(user=user, novel_id=novel_id)
    card_changed = False
    if card is None:
        character.card, character.card_original, character.spec, character.source_format = {}, {}, "", ""
        character.fields_from_card = False
    elif card is not UNSET:
        card_v3, original, spec = card_validate(card)
        if not character.card_original:
            character.card_original, character.spec = original, spec
            character.source_format = Character.SourceFormat.API
        character.card = card_v3
        card_changed = True
        if name is None:  # a card without a sent name renames the character (when it has a name)
            name = card_v3["data"]["name"] or None
    name_changed = name is not None and name != character.name
    if name is not None:
        character.name = name[:200]
    if character.card:
        character.card = _sync_name(character.card, character.name)

    explicit = fields is not UNSET and fields is not None
    if explicit:
        character.fields_from_card = False
    elif not partial:
        character.fields_from_card = bool(character.card)
    elif (
        character.card
        and (card_changed or name_changed)
        and not character.fields_from_card
        and not CharacterField.objects.filter(character=character).exists()
    ):
        character.fields_from_card = True
    character.save()

    if explicit:
        _replace_fields(character, [(f["key"], f.get("value", "")) for f in fields])
    elif not partial or (character.fields_from_card and (card_changed or name_changed)):
        _replace_fields(character, _derived_fields(character) if character.fields_from_card else [])
    return character


def character_delete(*, character: Character) -> None:
    """Deletes the character; lorebooks linked to it stay (unlinked)."""
    character.delete()


# ---------------------------------------------------------------------------------------- import


def import_novel_get(*, user: Any) -> Novel:
    """The user's novel for imported cards, created on first use (the user row is locked so two
    concurrent imports do not create it twice)."""
    get_user_model().objects.select_for_update().filter(pk=user.pk).first()
    novel = Novel.objects.filter(owner=user, title=IMPORT_NOVEL_TITLE).order_by("id").first()
    if novel is None:
        novel = Novel.objects.create(owner=user, title=IMPORT_NOVEL_TITLE)
    return novel


@transaction.atomic
def character_import(
    *,
    user: Any,
    data: bytes,
    filename: str | None = None,
    content_type: str | None = None,
    novel_id: int | None = None,
) -> Character:
    """A card file (PNG/APNG, JSON, CHARX) → a new character in ``novel_id`` (or the import novel).

    Raises ``ApplicationError`` 400 with the codec's ``code`` on any bad file; nothing is written then."""
    limits = card_limits()
    if len(data) > limits.max_file_bytes:
        raise card_too_large_error()
    try:
        parsed = parse_card_bytes(data, filename=filename, content_type=content_type, limits=limits)
    except CardError as exc:
        raise card_error(exc) from None
    card_received.send(sender=Character, card=parsed.card_v3, path="")  # receivers may refuse it
    novel = owned_novel_get(user=user, novel_id=novel_id) if novel_id is not None else import_novel_get(user=user)
    raw_name = parsed.card_v3["data"].get("name") or ""
    name = (raw_name if raw_name.strip() else _("Unnamed character"))[:200]
    card = parsed.card_v3 if parsed.card_v3["data"].get("name") == name else _sync_name(parsed.card_v3, name)
    avatar = parsed.avatar_png
    character = Character.objects.create(
        novel=novel,
        name=name,
        card=card,
        card_original=parsed.original,
        avatar=avatar,
        avatar_sha256=hashlib.sha256(avatar).hexdigest() if avatar else "",
        spec=parsed.spec,
        source_format=parsed.source_format,
        fields_from_card=True,
    )
    _replace_fields(character, _derived_fields(character))
    return character
