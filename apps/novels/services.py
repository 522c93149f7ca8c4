"""Writes for novels and for the entities that live in them (characters, worldviews)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.db import transaction
from django.utils.translation import gettext as _

from apps.core.errors import InvalidInput
from apps.novels.models import EntityField, Novel, NovelEntity
from apps.novels.selectors import novel_get_owned


def novel_create(*, owner: Any, title: str, description: str = "") -> Novel:
    return Novel.objects.create(owner=owner, title=title, description=description)


def novel_update(*, novel: Novel, **changes: Any) -> Novel:
    for name in ("title", "description"):
        if name in changes:
            setattr(novel, name, changes[name])
    novel.save()
    return novel


def novel_delete(*, novel: Novel) -> None:
    """Deletes the novel with its characters and worldviews; prompts referencing them keep working."""
    novel.delete()


def owned_novel_get(*, user: Any, novel_id: int) -> Novel:
    """The caller's novel, or a validation error on `novelId` (someone else's looks like a missing one)."""
    novel = novel_get_owned(user=user, pk=novel_id)
    if novel is None:
        raise InvalidInput({"novelId": [_("Novel %(id)s does not exist.") % {"id": novel_id}]})
    return novel


def _fields_replace(*, entity: NovelEntity, fields: Sequence[dict[str, str]]) -> None:
    relation = entity.fields  # type: ignore[attr-defined]
    field_model: type[EntityField] = relation.model
    relation.all().delete()
    fk_name = relation.field.name
    field_model.objects.bulk_create(
        [
            field_model(**{fk_name: entity}, order=i, key=f["key"], value=f.get("value", ""))
            for i, f in enumerate(fields)
        ]
    )


@transaction.atomic
def entity_create[E: NovelEntity](
    *, model: type[E], user: Any, novel_id: int, name: str, fields: Sequence[dict[str, str]]
) -> E:
    novel = owned_novel_get(user=user, novel_id=novel_id)
    entity = model.objects.create(novel=novel, name=name)
    _fields_replace(entity=entity, fields=fields)
    return entity


@transaction.atomic
def entity_update[E: NovelEntity](
    *,
    entity: E,
    user: Any,
    name: str | None = None,
    novel_id: int | None = None,
    fields: Sequence[dict[str, str]] | None = None,
) -> E:
    if novel_id is not None and novel_id != entity.novel_id:
        entity.novel = owned_novel_get(user=user, novel_id=novel_id)
    if name is not None:
        entity.name = name
    entity.save()
    if fields is not None:
        _fields_replace(entity=entity, fields=fields)
    return entity
