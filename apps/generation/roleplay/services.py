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
from collections.abc import Sequence
from dataclasses import dataclass
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
from apps.macros.engine import MacroContext, expand
from apps.macros.limits import budget_check, checked_expander, request_budget, variable_store
from apps.providers.selectors import ModelTarget, model_chain
from apps.providers.types import ChatMessage as Message
from apps.worldviews.engine import (
    ActivationResult,
    ActivationSettings,
    ChatLine,
    Entry,
    Source,
    activate,
    entry_from_st,
)
from apps.worldviews.models import Lorebook
from apps.worldviews.selectors import attached_lorebooks, engine_entries, lorebooks_get_owned, regex_limits

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
        ctx = MacroContext(
            user=_user_name(user, persona),
            char=_char_name(character, data),
            description=str(data.get("description") or ""),
            personality=str(data.get("personality") or ""),
            scenario=scenario_override or str(data.get("scenario") or ""),
            persona=persona.description if persona else "",
            local_vars=local,
            global_vars=shared,
            tz=ZoneInfo(settings.BILLING_TIMEZONE),
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
    data = _card_data(character)
    persona = chat.persona
    user_name, char_name = _user_name(user, persona), _char_name(character, data)
    stored = list(chat.messages.all())
    visible = [m for m in stored if not m.hidden]
    last = visible[-1] if visible else None
    kind = req.generation_type
    target: ChatMessage | None = None
    history_rows = visible
    if kind in ("continue", "swipe") or (kind == "regenerate" and last is not None and last.role == "assistant"):
        if last is None or last.role != "assistant":
            raise _bad_type(kind)
        target, history_rows = last, visible[:-1]

    seed = f"chat:{chat.pk}:{len(stored)}"
    scenario = chat.scenario_override or str(data.get("scenario") or "")
    local, shared = variable_store(chat.variables), variable_store(global_variables(user=user))
    budget = request_budget(context_tokens=limit)
    ctx = MacroContext(
        user=user_name,
        char=char_name,
        description=str(data.get("description") or ""),
        personality=str(data.get("personality") or ""),
        scenario=scenario,
        persona=persona.description if persona else "",
        char_prompt=str(data.get("system_prompt") or ""),
        char_instruction=str(data.get("post_history_instructions") or ""),
        mes_examples=str(data.get("mes_example") or ""),
        model=model_id,
        local_vars=local,
        global_vars=shared,
        tz=ZoneInfo(settings.BILLING_TIMEZONE),
        seed=seed,
        input=req.user_input,
        budget=budget,
    )
    user_input = checked_expander(ctx)(req.user_input) if kind == "normal" and req.user_input else ""
    history = [Message(m.role, m.content) for m in history_rows]  # type: ignore[arg-type]
    if user_input:
        history.append(Message("user", user_input))
    prefill = target.content if kind == "continue" and target is not None else ""
    conversation = [*history, *([Message("assistant", prefill)] if prefill else [])]
    if conversation:
        ctx.last_message = conversation[-1].content
        ctx.last_message_id = str(len(conversation) - 1)
    ctx.last_user_message = next((m.content for m in reversed(conversation) if m.role == "user"), "")
    ctx.last_char_message = next((m.content for m in reversed(conversation) if m.role == "assistant"), "")

    # world info
    note = {**Chat._meta.get_field("authors_note").get_default(), **(chat.authors_note or {})}
    names = {"user": user_name, "assistant": char_name}
    lines = [ChatLine(names.get(m.role, m.name or ""), m.content, role=m.role) for m in history]
    depth_prompt = data.get("extensions", {}).get("depth_prompt") if isinstance(data.get("extensions"), dict) else None
    depth_prompt = depth_prompt if isinstance(depth_prompt, dict) else {}
    activation = activate(
        _world_entries(user=user, chat=chat, character=character),
        lines,
        settings=ActivationSettings(),
        max_context=limit,
        generation_type=kind,
        timed_state=chat.timed_state or None,
        rng=random.Random(seed),
        regex_limits=regex_limits(),
        substitute=lambda text: expand(text, ctx),
        extra_scan={
            "persona_description": ctx.persona,
            "character_description": ctx.description,
            "character_personality": ctx.personality,
            "character_depth_prompt": str(depth_prompt.get("prompt") or ""),
            "scenario": scenario,
            "creator_notes": str(data.get("creator_notes") or ""),
        },
        scan_injections=[str(note.get("text") or "")] if note.get("text") else [],
        character_name=character.name,
        character_tags=[str(t) for t in data.get("tags") or []],
    )
    sections = build_sections(
        ctx=ctx,
        activation=activation,
        generation_type=kind,
        history=history,
        prefill=prefill,
        scenario=scenario,
        persona=_persona_prompt(persona),
        authors_note=note,
        depth_prompt=depth_prompt,
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
        user_name=user_name,
        char_name=char_name,
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
