"""Prompt post-processing converters for Chat Completions (pure; no Django).

A port of SillyTavern 1.15's ``mergeMessages`` (``src/prompt-converters.js``; our reference §4) for the
connection setting ``promptPostProcessing`` (SPEC §7):

- ``none``: untouched (a copy of the list; names stay in ``ChatMessage.name``).
- ``merge``: names folded into the content, consecutive same-role messages squashed.
- ``semi-strict``: merge, then only the first message may be ``system`` (later ones become ``user``),
  squashed again.
- ``strict``: semi-strict, and the conversation starts with a ``user`` message (after an optional
  first ``system`` one): the placeholder user message is inserted when needed.
- ``single-user``: everything in one ``user`` message (turns prefixed with the character/user names).

The algorithm, step by step (``_merge``):

1. Names are folded into the content as ``"{name}: "`` unless the content already starts with that
   prefix. A ``system`` message named ``example_assistant`` gets ``"{char_name}: "`` (unless it already
   starts with it or with ``"{g}: "`` for a group member ``g``), one named ``example_user`` gets
   ``"{user_name}: "``; any other ``system`` name is dropped without folding (as SillyTavern does).
   Non-system messages use their own ``name``.
2. ``single-user``: assistant content additionally gets ``"{char_name}: "`` (same exceptions), user
   content ``"{user_name}: "``, and every message becomes ``user``.
3. ``name`` is removed from every message.
4. Squash: a message is appended to the previous one (``previous + "\\n\\n" + content``) when they have
   the same role **and its content is non-empty**; otherwise it is kept as a new message. So empty
   messages are never merged into their predecessor (but a later same-role message is merged into an
   empty one, giving ``"\\n\\nlater"`` — SillyTavern's behaviour, kept).
5. An empty result becomes ``[user: placeholder]`` (every mode except ``none``).
6. ``semi-strict``/``strict``/``single-user``: every ``system`` message after the first position
   becomes ``user``. ``strict`` only: if the first message is ``system`` and the second is missing or
   not ``user``, a ``user: placeholder`` is inserted second; else if the first message is ``assistant``,
   a ``user: placeholder`` is prepended. Then steps 1–5 run once more (names are gone by then) to
   squash what the role changes made adjacent.

Tool messages and media are not part of :class:`~apps.providers.types.ChatMessage` and are ignored.
SillyTavern only folds the character/user names when they are known (truthy); likewise here
``char_name``/``user_name`` of ``None`` or ``""`` fold nothing.

The placeholder defaults to ``[Start a new chat]`` (SillyTavern's shipped ``config.yaml``; its code
fallback is ``Let's get started.``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from apps.providers.types import ChatMessage, Role

POSTPROCESS_MODES: tuple[str, ...] = ("none", "merge", "semi-strict", "strict", "single-user")
DEFAULT_PLACEHOLDER = "[Start a new chat]"


def postprocess(
    messages: Sequence[ChatMessage],
    mode: str,
    *,
    placeholder: str = DEFAULT_PLACEHOLDER,
    char_name: str | None = None,
    user_name: str | None = None,
    group_names: Sequence[str] = (),
) -> list[ChatMessage]:
    """Convert ``messages`` for an upstream according to ``mode`` (one of :data:`POSTPROCESS_MODES`).

    ``char_name``/``user_name``/``group_names`` are only needed for example messages (``system`` named
    ``example_assistant``/``example_user``) and for ``single-user``; writing mode leaves them unset.
    Raises ``ValueError`` for an unknown mode. The input is never modified.
    """
    if mode not in POSTPROCESS_MODES:
        raise ValueError(f"unknown prompt post-processing mode {mode!r}; expected one of {POSTPROCESS_MODES}")
    if mode == "none":
        return list(messages)
    names = _Names(char_name or "", user_name or "", tuple(group_names))
    return _merge(
        messages,
        names,
        placeholder=placeholder,
        strict=mode in ("semi-strict", "strict", "single-user"),
        placeholders=mode == "strict",
        single=mode == "single-user",
    )


@dataclass(frozen=True, slots=True)
class _Names:
    char: str
    user: str
    groups: tuple[str, ...]

    def with_char(self, content: str) -> str:
        if not self.char or any(content.startswith(f"{group}: ") for group in self.groups):
            return content
        return _prefixed(self.char, content)

    def with_user(self, content: str) -> str:
        return _prefixed(self.user, content) if self.user else content


def _prefixed(name: str, content: str) -> str:
    prefix = f"{name}: "
    return content if content.startswith(prefix) else prefix + content


def _fold(message: ChatMessage, names: _Names, *, single: bool) -> tuple[Role, str]:
    """Steps 1–3: the message's role and content once its name is folded in."""
    role, content = message.role, message.content
    if role == "system":
        if message.name == "example_assistant":
            content = names.with_char(content)
        elif message.name == "example_user":
            content = names.with_user(content)
    elif message.name:
        content = _prefixed(message.name, content)
    if single:
        if role == "assistant":
            content = names.with_char(content)
        elif role == "user":
            content = names.with_user(content)
        role = "user"
    return role, content


def _merge(
    messages: Sequence[ChatMessage],
    names: _Names,
    *,
    placeholder: str,
    strict: bool,
    placeholders: bool,
    single: bool,
) -> list[ChatMessage]:
    merged: list[tuple[Role, str]] = []
    for message in messages:
        role, content = _fold(message, names, single=single)
        if merged and merged[-1][0] == role and content:
            merged[-1] = (role, f"{merged[-1][1]}\n\n{content}")
        else:
            merged.append((role, content))
    if not merged:
        merged.append(("user", placeholder))

    if strict:
        for index in range(1, len(merged)):
            if merged[index][0] == "system":
                merged[index] = ("user", merged[index][1])
        if placeholders:
            if merged[0][0] == "system" and (len(merged) == 1 or merged[1][0] != "user"):
                merged.insert(1, ("user", placeholder))
            elif merged[0][0] == "assistant":
                merged.insert(0, ("user", placeholder))
        return _merge(
            [ChatMessage(role, content) for role, content in merged],
            names,
            placeholder=placeholder,
            strict=False,
            placeholders=False,
            single=False,
        )
    return [ChatMessage(role, content) for role, content in merged]
