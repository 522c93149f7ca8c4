"""Reads for prompts, including the resolver used by generation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from django.core.cache import cache
from django.db.models import Prefetch, Q, QuerySet
from django.utils.translation import gettext as _

from apps.characters.models import Character
from apps.core.errors import ApplicationError, NotFound
from apps.prompts.models import Prompt, PromptContent
from apps.prompts.rendering import render_character, render_worldview
from apps.worldviews.models import Worldview

SCOPES = ("mine", "public", "all")


@dataclass(frozen=True, slots=True)
class ResolvedContent:
    order: int
    type: str
    role: str
    text: str
    name: str


@dataclass(frozen=True, slots=True)
class ResolvedPrompt:
    id: int
    title: str
    author_id: int
    is_public: bool
    contents: tuple[ResolvedContent, ...]


def prompt_list(*, user: Any, scope: str = "all", search: str | None = None) -> QuerySet[Prompt]:
    if scope == "mine":
        qs = Prompt.objects.filter(author=user)
    elif scope == "public":
        qs = Prompt.objects.filter(is_public=True)
    else:
        qs = Prompt.objects.filter(Q(author=user) | Q(is_public=True))
    if search:
        qs = qs.filter(title__icontains=search)
    return qs.prefetch_related(_ordered_contents()).order_by("-updated_at", "-id")


def prompt_get_visible(*, user: Any, prompt_id: int) -> Prompt | None:
    """The prompt when the caller may read it (author, or public); None otherwise — a private prompt
    of someone else is indistinguishable from a missing one."""
    return (
        Prompt.objects.filter(Q(author=user) | Q(is_public=True), pk=prompt_id)
        .prefetch_related(_ordered_contents())
        .first()
    )


def _ordered_contents() -> Prefetch:
    return Prefetch("contents", queryset=PromptContent.objects.order_by("order", "id"))


def prompt_resolve(*, user: Any, prompt_id: int) -> ResolvedPrompt:
    """A prompt the caller may use, as ordered contents with references rendered.

    Missing → 404 `提示词 ID=<id> 不存在`; someone else's private prompt → 400 `无权使用此提示词`.
    References to cards/worldviews outside the **caller's** novels are skipped silently, also for
    someone else's public prompt. At most six queries, whatever the number of contents.
    """
    cached = _prompt_snapshot(prompt_id)
    if cached is None:
        raise NotFound(_("Prompt ID=%(id)s does not exist") % {"id": prompt_id})
    author_id, is_public, title, contents = cached
    if not is_public and author_id != user.pk:
        raise ApplicationError(_("No permission to use this prompt"), status_code=400, code="prompt_forbidden")

    wanted = {
        kind: {c.reference_id for c in contents if c.type == kind and c.reference_id}
        for kind in (PromptContent.Type.CHARACTER, PromptContent.Type.WORLDVIEW)
    }
    rendered: dict[tuple[str, int], str] = {}
    for kind, model, render in (
        (PromptContent.Type.CHARACTER, Character, render_character),
        (PromptContent.Type.WORLDVIEW, Worldview, render_worldview),
    ):
        if not wanted[kind]:
            continue
        for entity in model.objects.filter(pk__in=wanted[kind], novel__owner=user).prefetch_related("fields"):
            fields = [(f.key, f.value) for f in entity.fields.all()]
            rendered[(kind, entity.pk)] = render(entity.name, fields)

    resolved = []
    text: str | None
    for content in contents:
        if content.type == PromptContent.Type.TEXT:
            text = content.content
        else:
            text = rendered.get((content.type, content.reference_id or 0))
            if text is None:
                continue
        resolved.append(ResolvedContent(content.order, content.type, content.role, text, content.name))
    return ResolvedPrompt(prompt_id, title, author_id, is_public, tuple(resolved))


PROMPT_CACHE_SECONDS = 60


def prompt_cache_key(prompt_id: int) -> str:
    # "v2": the entry holds `CachedContent`s, which a process of an earlier release cannot unpickle (it
    # cached `PromptContent` instances under `prompt:<id>`): during a rolling deploy the releases share
    # Redis and must not read each other's entries.
    return f"prompt:v2:{prompt_id}"


class CachedContent(NamedTuple):
    """A prompt content as the cache keeps it: plain values (the attribute names of `PromptContent`).
    Unpickling model instances cost ≈ 85 µs per content on every generation call; this, ≈ 1 µs."""

    order: int
    type: str
    role: str
    content: str
    name: str
    reference_id: int | None


def _prompt_snapshot(prompt_id: int) -> tuple[int, bool, str, list[CachedContent]] | None:
    """(author id, public, title, ordered contents) from the shared cache, else two queries.

    The services delete the entry on every change; edits made around them (admin) are seen within
    PROMPT_CACHE_SECONDS.
    """
    key = prompt_cache_key(prompt_id)
    cached = cache.get(key)
    if cached is not None:
        return cached
    prompt = Prompt.objects.filter(pk=prompt_id).prefetch_related(_ordered_contents()).first()
    if prompt is None:
        return None
    contents = [
        CachedContent(c.order, c.type, c.role, c.content, c.name, c.reference_id) for c in prompt.contents.all()
    ]
    snapshot = (prompt.author_id, prompt.is_public, prompt.title, contents)
    cache.set(key, snapshot, PROMPT_CACHE_SECONDS)
    return snapshot
