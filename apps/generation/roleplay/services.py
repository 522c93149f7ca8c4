"""Roleplay mode: personas, chats, messages, and one generation turn (plan → prepare → finish).

A turn is planned from the chat as stored (``roleplay_plan``: macros, world info, assembly, budget;
no writes — the preview is exactly this). ``roleplay_prepare`` then creates the generation record
and the billing hold like writing mode. ``roleplay_finish`` runs writing mode's ``generation_finish``
and, in the same transaction, writes the turn into the chat: the user input, the reply (new message,
new swipe or continuation), the chat variables and the world-info timed-effect state. A failed call
(or a cancelled one with no text) writes nothing to the chat.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from apps.characters.models import Character
from apps.characters.selectors import character_card_v3, character_get_owned, character_lorebook_entries
from apps.core.errors import ApplicationError, ContextExceeded, NotFound
from apps.generation import selectors
from apps.generation.models import Chat, ChatMessage, Generation, GlobalVariables, Persona
from apps.generation.roleplay.assembly import (
    AssembledTurn,
    BudgetExceeded,
    PersonaPrompt,
    assemble_turn,
    build_sections,
)
from apps.generation.selectors import global_variables
from apps.generation.services import (
    Finished,
    Outcome,
    Prepared,
    generation_finish,
    generation_open,
    max_tokens_check,
)
from apps.macros.engine import CappedStore, MacroBudget, MacroContext
from apps.macros.limits import budget_check, checked_expander, request_budget, request_clock, variable_store
from apps.providers.selectors import ModelTarget, model_chain
from apps.providers.types import ChatMessage as Message
from apps.worldviews.engine import ActivationResult, ActivationSettings, ChatLine, Entry, Source, entry_from_st
from apps.worldviews.models import Lorebook
from apps.worldviews.selectors import (
    Scene,
    attached_lorebooks,
    engine_entries,
    lorebooks_get_owned,
    world_info_activate,
)
from apps.worldviews.services import inline_entries

GENERATION_TYPES = ("normal", "continue", "regenerate", "swipe", "impersonate")
AN_POSITIONS = ("in_chat", "before_main", "after_main")
ROLES = ("system", "user", "assistant")
_POSITION_NAMES = {int(value): label for value, label in Persona.Position.choices}


# ------------------------------------------------------------------------------------------ personas


def persona_get(*, user: Any, persona_id: int) -> Persona:
    """The caller's persona, or ``NotFound`` (a path id, or a chat's ``personaId``)."""
    persona = selectors.persona_get_owned(user=user, pk=persona_id)
    if persona is None:
        raise NotFound(_("Persona %(id)s does not exist.") % {"id": persona_id})
    return persona


@transaction.atomic
def persona_save(*, user: Any, persona: Persona | None = None, **fields: Any) -> Persona:
    """Create (``persona`` None) or update a persona; ``is_default`` True unsets the previous default."""
    persona = persona or Persona(owner=user)
    for name, value in fields.items():
        setattr(persona, name, value)
    if persona.is_default:
        Persona.objects.filter(owner=user, is_default=True).exclude(pk=persona.pk).update(is_default=False)
    persona.save()
    return persona


def persona_delete(*, persona: Persona) -> None:
    """Chats that used it keep going without a persona (the user's name stands for ``{{user}}``)."""
    persona.delete()


# --------------------------------------------------------------------------------------------- chats


def chat_get(*, user: Any, chat_id: int) -> Chat:
    """The caller's chat, or ``NotFound``: someone else's looks missing."""
    chat = selectors.chat_get_owned(user=user, pk=chat_id)
    if chat is None:
        raise NotFound(_("Chat %(id)s does not exist.") % {"id": chat_id})
    return chat


def chat_delete(*, chat: Chat) -> None:
    """The chat and its messages (the generation records stay: they are the billing history)."""
    chat.delete()


def _owned_character(user: Any, character_id: int) -> Character:
    character = character_get_owned(user=user, pk=character_id)
    if character is None:
        raise NotFound(_("Character %(id)s does not exist.") % {"id": character_id})
    return character


def _owned_lorebooks(user: Any, ids: Sequence[int]) -> list[Lorebook]:
    ids = list(dict.fromkeys(ids))
    books = lorebooks_get_owned(user=user, ids=ids)
    for i in ids:
        if i not in books:
            raise NotFound(_("Lorebook %(id)s does not exist.") % {"id": i})
    return [books[i] for i in ids]


def _card_data(character: Character) -> dict[str, Any]:
    data = character_card_v3(character).get("data")
    return data if isinstance(data, dict) else {}


def _char_name(character: Character, data: dict[str, Any]) -> str:
    return str(data.get("nickname") or character.name)


def _user_name(user: Any, persona: Persona | None) -> str:
    return persona.name if persona is not None else user.get_username()


@transaction.atomic
def chat_create(
    *,
    user: Any,
    character_id: int,
    persona_id: int | None = None,
    lorebook_ids: Sequence[int] = (),
    authors_note: dict[str, Any] | None = None,
    scenario_override: str = "",
) -> Chat:
    """A new chat opens with the card's ``first_mes`` (macros expanded) as the first assistant message
    and the ``alternate_greetings`` as its other swipes. Without ``persona_id`` the user's default
    persona (if any) is used. The greetings share one macro budget (the floor: there is no model yet)
    and the capped variable stores; a spent budget is a 400 and nothing is created."""
    character = _owned_character(user, character_id)
    if persona_id is not None:
        persona: Persona | None = persona_get(user=user, persona_id=persona_id)
    else:
        persona = selectors.persona_default(user=user)
    books = _owned_lorebooks(user, lorebook_ids)
    note = Chat._meta.get_field("authors_note").get_default()
    note.update(authors_note or {})
    chat = Chat.objects.create(
        owner=user, character=character, persona=persona, authors_note=note, scenario_override=scenario_override
    )
    chat.lorebooks.set(books)
    data = _card_data(character)
    greetings = [str(data.get("first_mes") or ""), *[str(g) for g in data.get("alternate_greetings") or []]]
    if any(greetings):
        local, shared = variable_store(chat.variables), variable_store(global_variables(user=user))
        ctx = _macro_context(
            cast=_cast(user, character, persona),
            scenario=_scenario(chat, data),
            local=local,
            shared=shared,
            seed=f"chat:{chat.pk}:0",
            budget=request_budget(),
        )
        greet = checked_expander(ctx)
        swipes = [greet(g) for g in greetings if g] or [""]
        ChatMessage.objects.create(chat=chat, role="assistant", name=_char_name(character, data), swipes=swipes)
        if local.changed:
            chat.variables = local.data
            chat.save(update_fields=["variables"])
        if shared.changed:
            _global_variables_save(user.pk, shared.data)
    return chat


@transaction.atomic
def chat_update(*, user: Any, chat: Chat, **changes: Any) -> Chat:
    if "persona_id" in changes:
        pid = changes.pop("persona_id")
        chat.persona = persona_get(user=user, persona_id=pid) if pid is not None else None
    if "lorebook_ids" in changes:
        chat.lorebooks.set(_owned_lorebooks(user, changes.pop("lorebook_ids")))
    if "authors_note" in changes:
        chat.authors_note = {**chat.authors_note, **(changes.pop("authors_note") or {})}
    for name, value in changes.items():
        setattr(chat, name, value)
    chat.save()
    return chat


def message_get(*, user: Any, chat_id: int, message_id: int) -> ChatMessage:
    """A message of the caller's chat, or ``NotFound``."""
    message = selectors.message_get_owned(user=user, chat_id=chat_id, pk=message_id)
    if message is None:
        raise NotFound(_("Message %(id)s does not exist.") % {"id": message_id})
    return message


def message_delete(*, message: ChatMessage) -> None:
    message.delete()


def message_update(
    *, message: ChatMessage, content: str | None = None, swipe_id: int | None = None, hidden: bool | None = None
) -> ChatMessage:
    """Choose the current swipe, then edit its text; hide or unhide (hidden messages are not sent)."""
    if swipe_id is not None:
        if swipe_id >= len(message.swipes):
            raise ApplicationError(
                _("swipeId must be less than %(count)s.") % {"count": len(message.swipes)},
                status_code=400,
                code="invalid",
                extra={"details": {"swipeId": [_("There is no such swipe.")]}},
            )
        message.swipe_id = swipe_id
    if content is not None:
        swipes = list(message.swipes) or [""]
        swipes[min(message.swipe_id, len(swipes) - 1)] = content
        message.swipes = swipes
    if hidden is not None:
        message.hidden = hidden
    message.save()
    Chat.objects.filter(pk=message.chat_id).update(updated_at=timezone.now())
    return message


# ----------------------------------------------------------------------------------------- the scene
# What a turn's macros and world info know: shared by the turn, its preview and the lorebook dry run.


@dataclass(frozen=True, slots=True)
class Cast:
    """Who a turn is about: the character and its card data, the persona, and the names ``{{char}}``
    and ``{{user}}`` stand for (the card's nickname or name; the persona's name or the username)."""

    character: Character | None
    card: dict[str, Any]
    persona: Persona | None
    user_name: str
    char_name: str


def _cast(user: Any, character: Character | None, persona: Persona | None) -> Cast:
    data = _card_data(character) if character is not None else {}
    char_name = _char_name(character, data) if character is not None else ""
    return Cast(character, data, persona, _user_name(user, persona), char_name)


def _scenario(chat: Chat | None, data: dict[str, Any]) -> str:
    return (chat.scenario_override if chat is not None else "") or str(data.get("scenario") or "")


def _macro_context(
    *,
    cast: Cast,
    scenario: str,
    local: CappedStore,
    shared: CappedStore,
    seed: str | int,
    budget: MacroBudget,
    model_id: str = "",
    user_input: str = "",
) -> MacroContext:
    """The macro context of a turn: the cast's names and card fields, the chat's and the user's
    variables, the request's clock (``request_clock``) in ``BILLING_TIMEZONE``, the turn's seed."""
    data = cast.card
    return MacroContext(
        user=cast.user_name,
        char=cast.char_name,
        description=str(data.get("description") or ""),
        personality=str(data.get("personality") or ""),
        scenario=scenario,
        persona=cast.persona.description if cast.persona else "",
        char_prompt=str(data.get("system_prompt") or ""),
        char_instruction=str(data.get("post_history_instructions") or ""),
        mes_examples=str(data.get("mes_example") or ""),
        model=model_id,
        local_vars=local,
        global_vars=shared,
        now=request_clock(),
        tz=ZoneInfo(settings.BILLING_TIMEZONE),
        seed=seed,
        input=user_input,
        budget=budget,
    )


def _conversation_macros(ctx: MacroContext, conversation: Sequence[Message]) -> None:
    """``{{lastMessage}}``, ``{{lastUserMessage}}``, ``{{lastCharMessage}}``, ``{{lastMessageId}}``."""
    if conversation:
        ctx.last_message = conversation[-1].content
        ctx.last_message_id = str(len(conversation) - 1)
    ctx.last_user_message = next((m.content for m in reversed(conversation) if m.role == "user"), "")
    ctx.last_char_message = next((m.content for m in reversed(conversation) if m.role == "assistant"), "")


def _depth_prompt(data: dict[str, Any]) -> dict[str, Any]:
    extensions = data.get("extensions")
    depth_prompt = extensions.get("depth_prompt") if isinstance(extensions, dict) else None
    return depth_prompt if isinstance(depth_prompt, dict) else {}


def _authors_note(chat: Chat | None) -> dict[str, Any]:
    note = dict(Chat._meta.get_field("authors_note").get_default())
    if chat is not None:
        note.update(chat.authors_note or {})
    return note


def _scene(*, cast: Cast, ctx: MacroContext, scenario: str, note: dict[str, Any]) -> Scene:
    """What world info scans besides the chat: the ``match*`` sources, the Author's Note, the character
    for character filters (by name; by tags when the card is known)."""
    data = cast.card
    character = cast.character
    return Scene(
        macros=ctx,
        extra_scan={
            "persona_description": ctx.persona,
            "character_description": ctx.description,
            "character_personality": ctx.personality,
            "character_depth_prompt": str(_depth_prompt(data).get("prompt") or ""),
            "scenario": scenario,
            "creator_notes": str(data.get("creator_notes") or ""),
        },
        scan_injections=(str(note["text"]),) if note.get("text") else (),
        character_name=character.name if character is not None else (cast.char_name or None),
        character_tags=tuple(str(t) for t in data.get("tags") or []) if character is not None else None,
    )


def _scan_lines(cast: Cast, history: Sequence[Message]) -> list[ChatLine]:
    names = {"user": cast.user_name, "assistant": cast.char_name}
    return [ChatLine(names.get(m.role, m.name or ""), m.content, role=m.role) for m in history]


def _turn_rows(chat: Chat, kind: str) -> tuple[int, ChatMessage | None, list[ChatMessage]]:
    """The chat's stored message count, the message a continue/swipe/regenerate replaces, and the
    visible history the reply follows (a 400 when there is no reply to replace)."""
    stored = list(chat.messages.all())
    visible = [m for m in stored if not m.hidden]
    last = visible[-1] if visible else None
    if kind in ("continue", "swipe") or (kind == "regenerate" and last is not None and last.role == "assistant"):
        if last is None or last.role != "assistant":
            raise _bad_type(kind)
        return len(stored), last, visible[:-1]
    return len(stored), None, visible


def _turn_seed(chat: Chat, stored: int) -> str:
    """Seeds the turn's probability rolls, group weights and ``{{random}}``/``{{pick}}``: the same
    chat state gives the same seed (the preview and the dry run agree with the real turn)."""
    return f"chat:{chat.pk}:{stored}"


# ----------------------------------------------------------------------------------------- one turn


@dataclass(frozen=True, slots=True)
class RoleplayRequest:
    chat_id: int
    user_input: str
    generation_type: str
    model_id: str
    temperature: float
    max_tokens: int | None
    stream: bool = False


@dataclass(slots=True)
class Turn:
    """What the finish step writes into the chat (plain values: no ORM objects cross the await)."""

    chat_id: int
    generation_type: str
    user_input: str  # expanded; "" = no user message
    user_name: str
    char_name: str
    target_message_id: int | None  # continued / swiped / regenerated message
    variables: dict[str, Any]
    timed_state: dict[str, Any]
    user_id: int = 0
    global_variables: dict[str, Any] | None = None  # None: unchanged by this turn


@dataclass(slots=True)
class Plan:
    turn: Turn
    assembled: AssembledTurn
    activation: ActivationResult


def _world_entries(*, user: Any, chat: Chat, character: Character) -> list[Entry]:
    """Chat books (source chat), the card's embedded book (character, active by default), then the
    user's character-linked and global books."""
    chat_books = list(chat.lorebooks.all().order_by("id"))
    entries = engine_entries(lorebooks=chat_books, sources={b.pk: Source.CHAT for b in chat_books})
    entries.extend(
        entry_from_st(d, lorebook_id=f"card:{character.pk}", source=Source.CHARACTER)
        for d in character_lorebook_entries(character)
    )
    entries.extend(engine_entries(lorebooks=attached_lorebooks(user=user, character_id=character.pk)))
    return entries


def _bad_type(generation_type: str) -> ApplicationError:
    return ApplicationError(
        _("There is no assistant message to %(type)s.") % {"type": generation_type},
        status_code=400,
        code="invalid",
        extra={"details": {"generationType": [_("The chat does not end with an assistant message.")]}},
    )


def _persona_prompt(persona: Persona | None) -> PersonaPrompt | None:
    if persona is None:
        return None
    position = _POSITION_NAMES.get(persona.description_position, "none")
    return PersonaPrompt(persona.description, position, persona.depth, persona.role)


def roleplay_plan(*, user: Any, chat: Chat, req: RoleplayRequest, limit: int, model_id: str) -> Plan:
    """Assemble one turn from the stored chat. Writes nothing; the preview returns exactly this.

    Every expansion of the turn (user input, world-info keys and entries, card fields, prompts) draws
    on one macro budget sized from ``limit`` (the prompt's tokens): once it is spent the turn is a 400.
    The variable stores are capped (writes past the caps are refused)."""
    character = Character.objects.get(pk=chat.character_id)
    cast = _cast(user, character, chat.persona)
    kind = req.generation_type
    stored, target, history_rows = _turn_rows(chat, kind)
    seed = _turn_seed(chat, stored)
    scenario = _scenario(chat, cast.card)
    local, shared = variable_store(chat.variables), variable_store(global_variables(user=user))
    budget = request_budget(context_tokens=limit)
    ctx = _macro_context(
        cast=cast,
        scenario=scenario,
        local=local,
        shared=shared,
        seed=seed,
        budget=budget,
        model_id=model_id,
        user_input=req.user_input,
    )
    user_input = checked_expander(ctx)(req.user_input) if kind == "normal" and req.user_input else ""
    history = [Message(m.role, m.content) for m in history_rows]  # type: ignore[arg-type]
    if user_input:
        history.append(Message("user", user_input))
    prefill = target.content if kind == "continue" and target is not None else ""
    _conversation_macros(ctx, [*history, *([Message("assistant", prefill)] if prefill else [])])

    note = _authors_note(chat)
    activation = world_info_activate(
        entries=_world_entries(user=user, chat=chat, character=character),
        chat=_scan_lines(cast, history),
        scene=_scene(cast=cast, ctx=ctx, scenario=scenario, note=note),
        settings=ActivationSettings(),
        max_context=limit,
        generation_type=kind,
        timed_state=chat.timed_state or None,
        rng=random.Random(seed),
    )
    sections = build_sections(
        ctx=ctx,
        activation=activation,
        generation_type=kind,
        history=history,
        prefill=prefill,
        scenario=scenario,
        persona=_persona_prompt(cast.persona),
        authors_note=note,
        depth_prompt=_depth_prompt(cast.card),
    )
    budget_check(budget)  # world info swallows errors from `substitute`: checked once everything is expanded
    try:
        assembled = assemble_turn(sections, limit=limit)
    except BudgetExceeded as exc:
        raise ContextExceeded(
            _("The mandatory prompts need %(needed)s tokens, more than the %(budget)s tokens available.")
            % {"needed": exc.needed, "budget": exc.budget},
            needed=exc.needed,
            budget=exc.budget,
            extra={"neededTokens": exc.needed, "budgetTokens": exc.budget},
        ) from None
    turn = Turn(
        chat_id=chat.pk,
        generation_type=kind,
        user_input=user_input,
        user_name=cast.user_name,
        char_name=cast.char_name,
        target_message_id=target.pk if target is not None else None,
        variables=dict(local.data),
        timed_state=dict(activation.timed_state),
        user_id=user.pk,
        global_variables=dict(shared.data) if shared.changed else None,
    )
    return Plan(turn=turn, assembled=assembled, activation=activation)


def roleplay_preview(*, user: Any, req: RoleplayRequest) -> tuple[Plan, ModelTarget]:
    chat = chat_get(user=user, chat_id=req.chat_id)
    primary = model_chain(model_id=req.model_id)[0]
    limit = primary.context_tokens - max_tokens_check(primary, req.max_tokens)
    return roleplay_plan(user=user, chat=chat, req=req, limit=limit, model_id=primary.model_id), primary


# ---------------------------------------------------------------------------------- lorebook dry run


@dataclass(frozen=True, slots=True)
class DryRunRequest:
    """``POST /api/v1/lorebooks/activate``. ``entries`` are raw inline entries (validated here);
    ``chat`` None: the stored chat's history with ``chat_id``, else no lines. The context fields are
    optional; the serializer has refused conflicting ones."""

    lorebook_ids: tuple[int, ...] = ()
    entries: Sequence[Any] | None = None
    chat: Sequence[ChatLine] | None = None
    settings: ActivationSettings = field(default_factory=ActivationSettings)
    max_context: int = 8192
    generation_type: str = "normal"
    seed: int | None = None
    user_name: str | None = None
    char_name: str | None = None
    character_id: int | None = None
    persona_id: int | None = None
    chat_id: int | None = None


@dataclass(frozen=True, slots=True)
class DryRun:
    result: ActivationResult
    seed: int | str
    cast: Cast
    chat_id: int | None


def _book_character(user: Any, books: Sequence[Lorebook]) -> Character | None:
    """The character the given books are linked to, when it is exactly one: such a book is activated
    only in that character's chats, so ``{{char}}`` there is that character."""
    linked = {b.character_id for b in books if b.character_id is not None}
    if len(linked) != 1:
        return None
    return character_get_owned(user=user, pk=linked.pop())


def lorebook_dry_run(*, user: Any, req: DryRunRequest) -> DryRun:
    """World-info activation as the next roleplay turn would run it (the same path: macros expanded in
    keys before matching and in contents before the budget, with the same context), without side
    effects: no timed state kept, no variables stored, no billing, no upstream call.

    The context: with ``chat_id``, the chat's character, persona, variables, Author's Note, timed
    state, history (unless ``chat`` is given), turn seed (unless ``seed`` is) and, without books or
    entries, the chat's own world info — what generation uses. Without it: ``character_id`` (or
    ``char_name`` alone, or the one character the given books are linked to), ``persona_id`` (or
    ``user_name`` alone, or the default persona, or the username), the user's global variables.
    ``NotFound`` for a chat, character, persona or book that is not the caller's."""
    chat = chat_get(user=user, chat_id=req.chat_id) if req.chat_id is not None else None
    books = _owned_lorebooks(user, req.lorebook_ids) if req.lorebook_ids else []
    if chat is not None:
        character: Character | None = Character.objects.get(pk=chat.character_id)
        persona = chat.persona
    else:
        if req.character_id is not None:
            character = _owned_character(user, req.character_id)
        else:
            character = _book_character(user, books) if req.char_name is None else None
        if req.persona_id is not None:
            persona = persona_get(user=user, persona_id=req.persona_id)
        else:
            persona = selectors.persona_default(user=user) if req.user_name is None else None
    cast = _cast(user, character, persona)
    if req.user_name is not None:
        cast = replace(cast, user_name=req.user_name)
    if req.char_name is not None:
        cast = replace(cast, char_name=req.char_name)

    entries: list[Entry] = engine_entries(lorebooks=books) if books else []
    if req.entries is not None:
        entries.extend(inline_entries(req.entries))
    if chat is not None and not books and req.entries is None:
        entries = _world_entries(user=user, chat=chat, character=cast.character)  # type: ignore[arg-type]

    stored = chat.messages.count() if chat is not None and req.chat is not None else 0
    if req.chat is not None:
        names = {"user": cast.user_name, "assistant": cast.char_name}
        lines = [line if line.name else replace(line, name=names.get(line.role, "")) for line in req.chat]
    elif chat is not None:
        stored, _target, rows = _turn_rows(chat, req.generation_type)
        lines = _scan_lines(cast, [Message(m.role, m.content) for m in rows])  # type: ignore[arg-type]
    else:
        lines = []
    seed: int | str
    if req.seed is not None:
        seed = req.seed
    elif chat is not None:
        seed = _turn_seed(chat, stored)
    else:
        seed = secrets.randbelow(2**31)

    scenario = _scenario(chat, cast.card)
    ctx = _macro_context(
        cast=cast,
        scenario=scenario,
        local=variable_store(chat.variables if chat is not None else {}),
        shared=variable_store(global_variables(user=user)),
        seed=seed,
        budget=request_budget(context_tokens=req.max_context),
    )
    _conversation_macros(ctx, [Message(x.role, x.content) for x in lines if not x.hidden])  # type: ignore[arg-type]
    result = world_info_activate(
        entries=entries,
        chat=lines,
        scene=_scene(cast=cast, ctx=ctx, scenario=scenario, note=_authors_note(chat)),
        settings=req.settings,
        max_context=req.max_context,
        generation_type=req.generation_type,
        timed_state=(chat.timed_state or None) if chat is not None else None,
        rng=random.Random(seed),
    )
    budget_check(ctx.budget)
    return DryRun(result=result, seed=seed, cast=cast, chat_id=chat.pk if chat is not None else None)


@dataclass(slots=True)
class RoleplayPrepared(Prepared):
    turn: Turn | None = None
    message_id: int | None = None

    def answer_fields(self) -> dict[str, Any]:
        return {"messageId": self.message_id}  # null for impersonate (nothing is stored)


def roleplay_prepare(*, user: Any, req: RoleplayRequest) -> RoleplayPrepared:
    """Plan the turn, then create the record and place the hold in one transaction (as writing mode).
    Nothing is written to the chat here."""
    chat = chat_get(user=user, chat_id=req.chat_id)
    targets = model_chain(model_id=req.model_id)
    primary = targets[0]
    max_tokens = max_tokens_check(primary, req.max_tokens)
    plan = roleplay_plan(
        user=user, chat=chat, req=req, limit=primary.context_tokens - max_tokens, model_id=primary.model_id
    )
    prepared = RoleplayPrepared(
        generation_id="",
        user_id=user.pk,
        targets=targets,
        messages=plan.assembled.messages,
        max_tokens=max_tokens,
        temperature=req.temperature,
        hold_amount=0,
        is_member=False,
        history_dropped=plan.assembled.history_dropped,
        prompt_tokens_estimate=plan.assembled.used,
        turn=plan.turn,
    )
    generation_open(prepared=prepared, user=user, stream=req.stream, mode=Generation.Mode.ROLEPLAY, chat_id=chat.pk)
    return prepared


def roleplay_finish(*, prepared: RoleplayPrepared, outcome: Outcome) -> Finished:
    """``generation_finish`` plus the chat write, in one transaction: the turn is kept exactly when it
    is paid for (success, or a cancelled stream that produced text)."""
    with transaction.atomic():
        finished = generation_finish(prepared=prepared, outcome=outcome)
        if outcome.pays(len(outcome.content) + len(outcome.reasoning)) and prepared.turn is not None:
            prepared.message_id = _turn_write(prepared.turn, outcome.content, prepared.generation_id)
    return finished


def _global_variables_save(user_id: int, variables: dict[str, Any]) -> None:
    GlobalVariables.objects.update_or_create(user_id=user_id, defaults={"variables": variables})


def _turn_write(turn: Turn, reply: str, generation_id: str) -> int | None:
    chat = Chat.objects.select_for_update().filter(pk=turn.chat_id).first()
    if chat is None:
        return None
    done = ChatMessage.objects.filter(chat=chat, generation_id=generation_id).first()
    if done is not None:  # finish ran before for this generation
        return done.pk
    if turn.generation_type == "impersonate":
        return None  # returned to the client, like ST's input box; the chat is not touched
    if turn.user_input:
        ChatMessage.objects.create(chat=chat, role="user", name=turn.user_name, swipes=[turn.user_input])
    target = (
        ChatMessage.objects.filter(pk=turn.target_message_id, chat=chat).first()
        if turn.target_message_id is not None
        else None
    )
    if target is not None and turn.generation_type == "continue":
        swipes = list(target.swipes) or [""]
        index = min(target.swipe_id, len(swipes) - 1)
        swipes[index] = f"{swipes[index]}{reply}"
        target.swipes, target.generation_id = swipes, generation_id
        target.save(update_fields=["swipes", "generation_id"])
        message = target
    elif target is not None:  # swipe / regenerate: the new text becomes the current swipe
        target.swipes = [*target.swipes, reply]
        target.swipe_id, target.generation_id = len(target.swipes) - 1, generation_id
        target.save(update_fields=["swipes", "swipe_id", "generation_id"])
        message = target
    else:
        message = ChatMessage.objects.create(
            chat=chat, role="assistant", name=turn.char_name, swipes=[reply], generation_id=generation_id
        )
    chat.variables, chat.timed_state = turn.variables, turn.timed_state
    chat.save(update_fields=["variables", "timed_state", "updated_at"])
    if turn.global_variables is not None:
        _global_variables_save(turn.user_id, turn.global_variables)
    return message.pk
