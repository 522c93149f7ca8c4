"""Writes for prompts: a prompt and its ordered contents are always written together."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.utils.translation import gettext as _

from apps.characters.models import Character
from apps.core.errors import InvalidInput
from apps.prompts.models import Prompt, PromptContent
from apps.prompts.selectors import prompt_cache_key
from apps.worldviews.models import Worldview


@dataclass(frozen=True, slots=True)
class ContentSpec:
    """One content of a prompt as written: text (with `content`) or a reference (`reference_id`)."""

    order: int
    type: str
    role: str = PromptContent.Role.SYSTEM
    content: str = ""
    reference_id: int | None = None
    name: str = ""


_REFERENCE_MODELS: dict[str, type[Character] | type[Worldview]] = {
    PromptContent.Type.CHARACTER: Character,
    PromptContent.Type.WORLDVIEW: Worldview,
}


def _check_references(*, author: Any, contents: Sequence[ContentSpec]) -> None:
    """A reference must point at a card/worldview in the author's own novels (one query per kind)."""
    errors: dict[str, dict[str, list[str]]] = {}
    for kind, model in _REFERENCE_MODELS.items():
        ids = {c.reference_id for c in contents if c.type == kind and c.reference_id is not None}
        if not ids:
            continue
        found = set(model.objects.filter(pk__in=ids, novel__owner=author).values_list("pk", flat=True))
        for index, content in enumerate(contents):
            if content.type == kind and content.reference_id not in found:
                message = _("%(kind)s %(id)s does not exist in your novels.") % {
                    "kind": _("Character") if kind == PromptContent.Type.CHARACTER else _("Worldview"),
                    "id": content.reference_id,
                }
                errors[str(index)] = {"referenceId": [message]}
    if errors:
        raise InvalidInput({"contents": errors})


def _contents_replace(*, prompt: Prompt, contents: Sequence[ContentSpec]) -> None:
    prompt.contents.all().delete()
    PromptContent.objects.bulk_create(
        [
            PromptContent(
                prompt=prompt,
                order=c.order,
                type=c.type,
                role=c.role or PromptContent.Role.SYSTEM,
                content=c.content or "",
                reference_id=c.reference_id if c.type != PromptContent.Type.TEXT else None,
                name=c.name or "",
            )
            for c in contents
        ]
    )


@transaction.atomic
def prompt_create(
    *, author: Any, title: str, description: str = "", is_public: bool = False, contents: Sequence[ContentSpec] = ()
) -> Prompt:
    _check_references(author=author, contents=contents)
    prompt = Prompt.objects.create(author=author, title=title, description=description, is_public=is_public)
    _contents_replace(prompt=prompt, contents=contents)
    return prompt


@transaction.atomic
def prompt_update(
    *,
    prompt: Prompt,
    title: str | None = None,
    description: str | None = None,
    is_public: bool | None = None,
    contents: Sequence[ContentSpec] | None = None,
) -> Prompt:
    if contents is not None:
        _check_references(author=prompt.author, contents=contents)
    if title is not None:
        prompt.title = title
    if description is not None:
        prompt.description = description
    if is_public is not None:
        prompt.is_public = is_public
    prompt.save()
    if contents is not None:
        _contents_replace(prompt=prompt, contents=contents)
    _forget(prompt.pk)
    return prompt


def prompt_delete(*, prompt: Prompt) -> None:
    prompt_id = prompt.pk
    prompt.delete()
    _forget(prompt_id)


def _forget(prompt_id: int) -> None:
    transaction.on_commit(lambda: cache.delete(prompt_cache_key(prompt_id)))
    cache.delete(prompt_cache_key(prompt_id))
