"""Writes for prompts: a prompt and its ordered contents are always written together."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.cache import cache
from django.db import transaction
from django.utils.translation import gettext as _
from rest_framework.exceptions import ValidationError

from apps.characters.models import Character
from apps.prompts.models import Prompt, PromptContent
from apps.prompts.selectors import prompt_cache_key
from apps.worldviews.models import Worldview

_REFERENCE_MODELS: dict[str, type[Character] | type[Worldview]] = {
    PromptContent.Type.CHARACTER: Character,
    PromptContent.Type.WORLDVIEW: Worldview,
}


def _check_references(*, author: Any, contents: Sequence[dict[str, Any]]) -> None:
    """A reference must point at a card/worldview in the author's own novels (one query per kind)."""
    errors: dict[str, dict[str, list[str]]] = {}
    for kind, model in _REFERENCE_MODELS.items():
        ids = {c["referenceId"] for c in contents if c["type"] == kind}
        if not ids:
            continue
        found = set(model.objects.filter(pk__in=ids, novel__owner=author).values_list("pk", flat=True))
        for index, content in enumerate(contents):
            if content["type"] == kind and content["referenceId"] not in found:
                message = _("%(kind)s %(id)s does not exist in your novels.") % {
                    "kind": _("Character") if kind == PromptContent.Type.CHARACTER else _("Worldview"),
                    "id": content["referenceId"],
                }
                errors[str(index)] = {"referenceId": [message]}
    if errors:
        raise ValidationError({"contents": errors})


def _contents_replace(*, prompt: Prompt, contents: Sequence[dict[str, Any]]) -> None:
    prompt.contents.all().delete()
    PromptContent.objects.bulk_create(
        [
            PromptContent(
                prompt=prompt,
                order=c["order"],
                type=c["type"],
                role=c.get("role") or PromptContent.Role.SYSTEM,
                content=c.get("content") or "",
                reference_id=c.get("referenceId") if c["type"] != PromptContent.Type.TEXT else None,
                name=c.get("name") or "",
            )
            for c in contents
        ]
    )


@transaction.atomic
def prompt_create(
    *, author: Any, title: str, description: str = "", is_public: bool = False, contents: Sequence[dict[str, Any]] = ()
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
    contents: Sequence[dict[str, Any]] | None = None,
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
