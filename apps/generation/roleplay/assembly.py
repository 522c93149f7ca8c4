"""Roleplay prompt assembly after SillyTavern's Chat Completion defaults (pure: no Django imports).

Input is a :class:`Sections` whose texts are already macro-expanded; :func:`assemble_turn` orders
them, splices the depth injections into the chat history and applies the token budget. See
docs/roleplay.md for the full order and a worked example.

Order (ST's default prompt order): main → world info before → persona description → character
description → personality → scenario → world info after → example dialogues (each block after
``[Example Chat]``) → ``[Start a new Chat]`` + chat history (with depth injections) →
post-history instructions → control prompt (impersonation) → continue prefill.

Budget (ST ``populateChatCompletion``): ``limit = context − maxTokens``. Mandatory parts first
(everything except history and examples); if they alone exceed the limit, :class:`BudgetExceeded`.
Then history newest → oldest, stopping at the first message that does not fit; then example
blocks (each with its ``[Example Chat]`` header) in order until the first that does not fit.
Tokens are the character estimate of :mod:`apps.providers.tokens`, with no per-message overhead.

:func:`build_sections` turns one turn's inputs (the macro context, the world-info activation, the
persona, the author's note, the card's depth prompt) into those :class:`Sections`, expanding macros in
prompt order so that ``{{setvar}}`` early is seen later.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from apps.generation.assembly import BudgetExceeded
from apps.macros.engine import MacroContext, expand
from apps.providers.tokens import estimate_tokens
from apps.providers.types import ROLES, ChatMessage
from apps.worldviews.engine import ActivationResult

__all__ = [
    "CONTINUE_NUDGE",
    "DEFAULT_MAIN_PROMPT",
    "IMPERSONATION_PROMPT",
    "NEW_CHAT",
    "NEW_EXAMPLE_CHAT",
    "AssembledTurn",
    "Block",
    "BudgetExceeded",
    "Injection",
    "PersonaPrompt",
    "Sections",
    "assemble_turn",
    "authors_note_due",
    "build_sections",
    "inject_depth",
    "parse_examples",
]

DEFAULT_MAIN_PROMPT = "Write {{char}}'s next reply in a fictional chat between {{charIfNotGroup}} and {{user}}."
NEW_CHAT = "[Start a new Chat]"
NEW_EXAMPLE_CHAT = "[Example Chat]"
CONTINUE_NUDGE = "[Continue your last message without repeating its original content.]"
IMPERSONATION_PROMPT = (
    "[Write your next reply from the point of view of {{user}}, using the chat history so far as a guideline "
    "for the writing style of {{user}}. Don't write as {{char}} or system. Don't describe actions of {{char}}.]"
)

# Chronological order of injections sharing one depth (ST splices system, user, assistant into the
# reversed chat, so read forwards it is assistant, user, system — system closest to the end).
_ROLE_ORDER = ("assistant", "user", "system")
_START = re.compile(r"<START>", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Injection:
    """An in-chat prompt: ``depth`` 0 = after the last message. Same depth and role are joined with
    ``\\n`` sorted by ``key`` (ST's extension-prompt key order: ``2_floating_prompt`` (author's note)
    < ``DEPTH_PROMPT`` (character) < ``PERSONA_DESCRIPTION`` < ``customDepthWI_…`` (world info))."""

    depth: int
    role: str
    content: str
    key: str


@dataclass(frozen=True, slots=True)
class Sections:
    """Expanded texts of one turn. ``history`` is oldest first and already the visible history the
    reply follows (the pending user input included, the message being replaced or continued left out)."""

    main: str
    world_info_before: str = ""
    persona: str = ""
    description: str = ""
    personality: str = ""
    scenario: str = ""
    world_info_after: str = ""
    examples: Sequence[Sequence[ChatMessage]] = ()
    history: Sequence[ChatMessage] = ()
    post_history: str = ""
    injections: Sequence[Injection] = ()
    before_main: str = ""  # author's note "before main prompt"
    after_main: str = ""  # author's note "after main prompt"
    control: str = ""  # impersonation prompt (system, last but the prefill)
    prefill: str = ""  # continue: the assistant text the reply continues


@dataclass(frozen=True, slots=True)
class PersonaPrompt:
    """The user's persona as the prompt uses it; ``position`` is ST's placement by name (``in_prompt``,
    ``an_top``, ``an_bottom``, ``at_depth``, ``none``), anything else is treated as ``none``."""

    description: str
    position: str = "in_prompt"
    depth: int = 2
    role: str = "system"


@dataclass(frozen=True, slots=True)
class Block:
    name: str
    tokens: int


@dataclass(frozen=True, slots=True)
class AssembledTurn:
    messages: tuple[ChatMessage, ...]
    blocks: tuple[Block, ...]
    limit: int
    used: int
    history_dropped: int
    examples_dropped: int = 0
    names: tuple[str, ...] = field(default=())  # block name of each message, parallel to messages


def authors_note_due(frequency: int, user_messages: int) -> bool:
    """ST ``shouldWIAddPrompt``: frequency 0 = never, 1 = every turn, n = when the number of user
    messages (the pending input included) is a multiple of n."""
    if frequency <= 0:
        return False
    return user_messages % frequency == 0


def parse_examples(text: str, *, user: str, char: str) -> list[list[ChatMessage]]:
    """ST ``parseMesExamples`` + ``parseExampleIntoIndividual``: split on ``<START>``; lines starting
    ``{user}:`` / ``{char}:`` begin an example message (``system`` with name ``example_user`` /
    ``example_assistant``, the name prefix stripped); other lines continue the current one. A block
    with no such line is one ``system`` message."""
    blocks: list[list[ChatMessage]] = []
    for raw in _START.split(text.replace("\r", "")):
        block = raw.strip()
        if not block:
            continue
        parts: list[tuple[str, list[str]]] = []  # (name, lines)
        for line in block.split("\n"):
            if user and line.startswith(f"{user}:"):
                parts.append(("example_user", [line[len(user) + 1 :].strip()]))
            elif char and line.startswith(f"{char}:"):
                parts.append(("example_assistant", [line[len(char) + 1 :].strip()]))
            elif not parts:
                parts.append(("", [line]))
            else:
                parts[-1][1].append(line)
        messages = [
            ChatMessage("system", content, name or None)
            for name, lines in parts
            if (content := "\n".join(lines).strip())
        ]
        blocks.append(messages)
    return [b for b in blocks if b]


def inject_depth(history: Sequence[ChatMessage], injections: Sequence[Injection]) -> list[tuple[ChatMessage, bool]]:
    """History with in-chat injections spliced in (ST ``populationInjectionPrompts``): a depth larger
    than the history lands before its first message. Returns ``(message, is_injection)`` pairs."""
    groups: dict[int, dict[str, list[Injection]]] = {}
    for inj in injections:
        if inj.content:
            groups.setdefault(max(0, inj.depth), {}).setdefault(inj.role, []).append(inj)
    reversed_chat: list[tuple[ChatMessage, bool]] = [(m, False) for m in reversed(history)]
    inserted = 0
    for depth in sorted(groups):
        by_role = groups[depth]
        role_messages: list[tuple[ChatMessage, bool]] = []
        for role in reversed(_ROLE_ORDER):  # system, user, assistant into the reversed list
            items = by_role.get(role)
            if items:
                text = "\n".join(i.content for i in sorted(items, key=lambda i: i.key))
                role_messages.append((ChatMessage(role, text), True))  # type: ignore[arg-type]
        index = min(depth + inserted, len(reversed_chat))
        reversed_chat[index:index] = role_messages
        inserted += len(role_messages)
    return list(reversed(reversed_chat))


def _tokens(messages: Sequence[ChatMessage]) -> int:
    return sum(estimate_tokens(m.content) for m in messages)


def assemble_turn(sections: Sections, *, limit: int) -> AssembledTurn:
    """Order, inject and budget one turn (see the module docstring). Empty messages are left out."""

    def system(text: str) -> list[ChatMessage]:
        return [ChatMessage("system", text)] if text else []

    head: list[tuple[str, list[ChatMessage]]] = [
        ("main", [*system(sections.before_main), *system(sections.main), *system(sections.after_main)]),
        ("worldInfoBefore", system(sections.world_info_before)),
        ("personaDescription", system(sections.persona)),
        ("charDescription", system(sections.description)),
        ("charPersonality", system(sections.personality)),
        ("scenario", system(sections.scenario)),
        ("worldInfoAfter", system(sections.world_info_after)),
    ]
    tail: list[tuple[str, list[ChatMessage]]] = [
        ("postHistoryInstructions", system(sections.post_history)),
        ("impersonate", system(sections.control)),
        ("continuePrefill", [ChatMessage("assistant", sections.prefill)] if sections.prefill else []),
    ]
    mandatory = sum(_tokens(msgs) for _name, msgs in head) + sum(_tokens(msgs) for _name, msgs in tail)
    if mandatory > limit:
        raise BudgetExceeded(mandatory, limit)
    used = mandatory

    # history newest → oldest behind the new-chat marker; stop at the first that does not fit
    chat = [(m, injected) for m, injected in inject_depth(sections.history, sections.injections) if m.content]
    marker = ChatMessage("system", NEW_CHAT)
    kept: list[ChatMessage] = []
    history_dropped = sum(1 for _m, injected in chat if not injected)
    marker_cost = estimate_tokens(marker.content)
    if chat and used + marker_cost <= limit:
        spent = used + marker_cost
        for message, injected in reversed(chat):
            cost = estimate_tokens(message.content)
            if spent + cost > limit:
                break
            spent += cost
            kept.insert(0, message)
            if not injected:
                history_dropped -= 1
        if kept:
            used = spent
    history = [marker, *kept] if kept else []

    # example blocks from what is left, in order, until the first that does not fit
    examples: list[ChatMessage] = []
    examples_dropped = 0
    for index, block in enumerate(sections.examples):
        messages = [ChatMessage("system", NEW_EXAMPLE_CHAT), *[m for m in block if m.content]]
        cost = _tokens(messages)
        if used + cost > limit:
            examples_dropped = len(sections.examples) - index
            break
        used += cost
        examples.extend(messages)

    ordered: list[tuple[str, list[ChatMessage]]] = [
        *head,
        ("dialogueExamples", examples),
        ("chatHistory", history),
        *tail,
    ]
    messages = []
    names: list[str] = []
    for name, msgs in ordered:
        messages.extend(msgs)
        names.extend([name] * len(msgs))
    blocks = tuple(Block(name, _tokens(msgs)) for name, msgs in ordered if msgs)
    return AssembledTurn(
        messages=tuple(messages),
        blocks=blocks,
        limit=limit,
        used=_tokens(messages),
        history_dropped=history_dropped,
        examples_dropped=examples_dropped,
        names=tuple(names),
    )


def _with_original(override: str, original: str, ctx: MacroContext) -> str:
    """ST character overrides: a non-empty card prompt replaces the default, ``{{original}}`` = it."""
    if not override.strip():
        return expand(original, ctx)
    ctx.original = expand(original, ctx)
    try:
        return expand(override, ctx)
    finally:
        ctx.original = ""


def _role(value: object) -> str:
    return str(value) if value in ROLES else "system"


def build_sections(
    *,
    ctx: MacroContext,
    activation: ActivationResult,
    generation_type: str,
    history: Sequence[ChatMessage],
    prefill: str,
    scenario: str,
    persona: PersonaPrompt | None,
    authors_note: Mapping[str, Any],
    depth_prompt: Mapping[str, Any],
) -> Sections:
    """The expanded sections of one turn, in ST's prompt order.

    ``ctx`` already holds the card, persona and chat values (``ctx.user``/``ctx.char`` are the names);
    its ``outlets`` are set from the activation and its variables change as macros run. ``history`` is
    the visible history the reply follows, the expanded user input included. ``authors_note`` has every
    key of the chat's note (defaults filled); ``depth_prompt`` is the card's
    ``extensions.depth_prompt`` (``{}`` when absent).
    """
    ctx.outlets = dict(activation.outlets)
    by_position = activation.by_position
    main = _with_original(ctx.char_prompt, DEFAULT_MAIN_PROMPT, ctx)
    injections: list[Injection] = [
        Injection(d.depth, d.role, d.content, f"customDepthWI_{d.depth}_{ROLES.index(d.role)}")
        for d in activation.depth_injections
    ]
    persona_text = expand(persona.description, ctx) if persona else ""
    position = persona.position if persona else "in_prompt"
    an_top = [by_position.get("ANTop", "")]
    an_bottom = [by_position.get("ANBottom", "")]
    if persona_text and position == "an_top":
        an_top.insert(0, persona_text)
    elif persona_text and position == "an_bottom":
        an_bottom.append(persona_text)
    elif persona_text and position == "at_depth" and persona is not None:
        injections.append(Injection(persona.depth, _role(persona.role), persona_text, "PERSONA_DESCRIPTION"))
    user_messages = sum(1 for m in history if m.role == "user")
    before_main = after_main = ""
    if authors_note_due(int(authors_note.get("frequency") or 0), user_messages):
        text = "\n".join([*an_top, expand(str(authors_note.get("text") or ""), ctx), *an_bottom]).strip("\n")
        if text.strip():
            an_position = authors_note.get("position")
            if an_position == "before_main":
                before_main = text
            elif an_position == "after_main":
                after_main = text
            else:
                injections.append(
                    Injection(
                        int(authors_note.get("depth") or 0), _role(authors_note.get("role")), text, "2_floating_prompt"
                    )
                )
    if depth_prompt.get("prompt"):
        depth = depth_prompt.get("depth")
        injections.append(
            Injection(
                int(depth) if isinstance(depth, int) else 4,
                _role(depth_prompt.get("role")),
                expand(str(depth_prompt["prompt"]), ctx),
                "DEPTH_PROMPT",
            )
        )
    user, char = ctx.user, ctx.char
    examples = [
        *[block for text in activation.examples_top for block in parse_examples(text, user=user, char=char)],
        *parse_examples(expand(ctx.mes_examples, ctx), user=user, char=char),
        *[block for text in activation.examples_bottom for block in parse_examples(text, user=user, char=char)],
    ]
    return Sections(
        main=main,
        world_info_before=by_position.get("before", ""),
        persona=persona_text if position == "in_prompt" else "",
        description=expand(ctx.description, ctx),
        personality=expand(ctx.personality, ctx),
        scenario=expand(scenario, ctx),
        world_info_after=by_position.get("after", ""),
        examples=examples,
        history=history,
        post_history=_with_original(ctx.char_instruction, "", ctx),
        injections=injections,
        before_main=before_main,
        after_main=after_main,
        control=expand(IMPERSONATION_PROMPT, ctx) if generation_type == "impersonate" else "",
        prefill=prefill,
    )
