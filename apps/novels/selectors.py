from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from apps.novels.models import Novel, NovelEntity


def novel_list(*, user: Any, search: str | None = None) -> QuerySet[Novel]:
    qs = Novel.objects.filter(owner=user)
    if search:
        qs = qs.filter(title__icontains=search)
    return qs.order_by("-updated_at", "-id")


def novel_get_owned(*, user: Any, pk: int) -> Novel | None:
    """The caller's novel, or None (someone else's looks like a missing one; the caller picks 404 or 400)."""
    return Novel.objects.filter(pk=pk, owner=user).first()


def entity_list[E: NovelEntity](
    *, model: type[E], user: Any, novel_id: int | None = None, search: str | None = None
) -> QuerySet[E]:
    """Entities in the caller's novels only."""
    qs = model.objects.filter(novel__owner=user)
    if novel_id is not None:
        qs = qs.filter(novel_id=novel_id)
    if search:
        qs = qs.filter(name__icontains=search)
    return qs.prefetch_related("fields").order_by("-updated_at", "-id")


def entity_get_owned[E: NovelEntity](*, model: type[E], user: Any, pk: int) -> E | None:
    """An entity (character, worldview) in one of the caller's novels, with its fields; None otherwise."""
    return model.objects.prefetch_related("fields").filter(pk=pk, novel__owner=user).first()
