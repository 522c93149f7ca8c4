"""The roleplay planner without HTTP: the pure section building (`build_sections`), then `roleplay_plan`
on stored chats — what it assembles, which turn it plans, and that planning writes nothing."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from django.utils import translation

from apps.characters.services import character_create
from apps.core.errors import ApplicationError, ContextExceeded
from apps.generation.models import Chat, ChatMessage, GlobalVariables
from apps.generation.roleplay.assembly import (
    DEFAULT_MAIN_PROMPT,
    Injection,
    PersonaPrompt,
    build_sections,
)
from apps.generation.roleplay.services import RoleplayRequest, chat_create, persona_save, roleplay_plan
from apps.macros.engine import MacroContext
from apps.novels.models import Novel
from apps.providers.types import ChatMessage as M
from apps.worldviews.engine import activate
from apps.worldviews.models import Lorebook, LorebookEntry


@pytest.fixture(autouse=True)
def _chinese():
    """Messages are asserted in the default language, whatever an earlier test left active."""
    with translation.override("zh-hans"):
        yield


NO_WORLD_INFO = activate([], [], max_context=10_000)
NOTE = {"text": "", "depth": 4, "frequency": 1, "role": "system", "position": "in_chat"}


def ctx(**values: Any) -> MacroContext:
    return MacroContext(user="Alex", char="Sera", **values)


def sections(**overrides: Any):
    args: dict[str, Any] = {
        "ctx": ctx(),
        "activation": NO_WORLD_INFO,
        "generation_type": "normal",
        "history": [M("user", "hi")],
        "prefill": "",
        "scenario": "",
        "persona": None,
        "authors_note": NOTE,
        "depth_prompt": {},
    }
    args.update(overrides)
    return build_sections(**args)


# ------------------------------------------------------------------------------- build_sections


def test_defaults_expand_the_main_prompt_and_leave_the_rest_empty():
    built = sections()

    assert built.main == "Write Sera's next reply in a fictional chat between Sera and Alex."
    assert (built.persona, built.description, built.post_history, built.control) == ("", "", "", "")
    assert (built.injections, built.examples, built.before_main, built.after_main) == ([], [], "", "")
    assert built.history == [M("user", "hi")]
    assert DEFAULT_MAIN_PROMPT.startswith("Write {{char}}")


@pytest.mark.parametrize(
    ("position", "persona", "before_main", "injections"),
    [
        ("in_prompt", "Alex rides.", "Note", []),
        ("none", "", "Note", []),
        ("bogus", "", "Note", []),
        # the note is [top…, text, …bottom] joined by lines (world info's ANTop/ANBottom are empty here)
        ("an_top", "", "Alex rides.\n\nNote", []),
        ("an_bottom", "", "Note\n\nAlex rides.", []),
        ("at_depth", "", "Note", [Injection(3, "system", "Alex rides.", "PERSONA_DESCRIPTION")]),
    ],
)
def test_persona_positions(position, persona, before_main, injections):
    built = sections(
        persona=PersonaPrompt("{{user}} rides.", position, depth=3, role="narrator"),  # unknown role: system
        authors_note={**NOTE, "text": "Note", "position": "before_main"},
    )

    assert built.persona == persona
    assert built.before_main == before_main
    assert built.injections == injections


@pytest.mark.parametrize(
    ("note", "user_messages", "expected"),
    [
        ({"text": "N", "position": "in_chat", "depth": 2, "role": "user"}, 1, ("", "", [(2, "user")])),
        ({"text": "N", "position": "in_chat", "role": "narrator"}, 1, ("", "", [(4, "system")])),
        ({"text": "N", "position": "before_main"}, 1, ("N", "", [])),
        ({"text": "N", "position": "after_main"}, 1, ("", "N", [])),
        ({"text": "N", "frequency": 2}, 1, ("", "", [])),  # not due on the first user message
        ({"text": "N", "frequency": 2}, 2, ("", "", [(4, "system")])),
        ({"text": "  ", "position": "before_main"}, 1, ("", "", [])),  # blank notes are left out
        ({"text": "N", "frequency": 0}, 1, ("", "", [])),
    ],
)
def test_authors_note_placement_and_schedule(note, user_messages, expected):
    history = [M("user", f"u{i}") for i in range(user_messages)]

    built = sections(history=history, authors_note={**NOTE, **note})

    floating = [(i.depth, i.role) for i in built.injections if i.key == "2_floating_prompt"]
    assert (built.before_main, built.after_main, floating) == expected


@pytest.mark.parametrize(
    ("depth_prompt", "injection"),
    [
        (
            {"prompt": "{{char}} is tired.", "depth": 1, "role": "user"},
            Injection(1, "user", "Sera is tired.", "DEPTH_PROMPT"),
        ),
        ({"prompt": "x", "depth": "2"}, Injection(4, "system", "x", "DEPTH_PROMPT")),  # not an int: ST's 4
        ({"prompt": "x", "depth": True}, Injection(1, "system", "x", "DEPTH_PROMPT")),
        ({"prompt": ""}, None),
    ],
)
def test_card_depth_prompt(depth_prompt, injection):
    built = sections(depth_prompt=depth_prompt)

    assert built.injections == ([injection] if injection else [])


def test_macros_expand_in_prompt_order_and_overrides_see_the_original():
    context = ctx(
        char_prompt="{{setvar::mood::calm}}{{original}} Be brief.",
        description="{{char}} is {{getvar::mood}}.",
        char_instruction="Stay {{getvar::mood}}.",
        mes_examples="<START>\n{{user}}: Hi\n{{char}}: Hello",
    )

    built = sections(ctx=context, scenario="{{user}} wakes.", generation_type="impersonate", prefill="So")

    assert built.main == "Write Sera's next reply in a fictional chat between Sera and Alex. Be brief."
    assert (built.description, built.scenario, built.post_history) == ("Sera is calm.", "Alex wakes.", "Stay calm.")
    assert built.examples == [[M("system", "Hi", "example_user"), M("system", "Hello", "example_assistant")]]
    assert built.control.startswith("[Write your next reply from the point of view of Alex")
    assert built.prefill == "So"
    assert context.local_vars == {"mood": "calm"}


def test_world_info_positions_outlets_and_depth_entries():
    activation = dataclasses.replace(
        NO_WORLD_INFO,
        by_position={**NO_WORLD_INFO.by_position, "before": "WB", "after": "WA", "ANTop": "T", "ANBottom": "B"},
        outlets={"lore": "from an outlet"},
        examples_top=["<START>\nAlex: top"],
    )
    context = ctx(description="{{outlet::lore}}")

    built = sections(ctx=context, activation=activation, authors_note={**NOTE, "text": "N", "position": "after_main"})

    assert (built.world_info_before, built.world_info_after) == ("WB", "WA")
    assert built.after_main == "T\nN\nB"
    assert built.description == "from an outlet"
    assert built.examples == [[M("system", "top", "example_user")]]


# ------------------------------------------------------------------------------- roleplay_plan


CARD: dict[str, Any] = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "Seraphina",
        "nickname": "Sera",
        "description": "{{char}} guards the forest.",
        "personality": "",
        "scenario": "",
        "first_mes": "Awake, {{user}}?",
        "mes_example": "",
        "system_prompt": "",
        "post_history_instructions": "",
        "tags": [],
        "extensions": {},
    },
}


@pytest.fixture
def chat(db, user) -> Chat:
    novel = Novel.objects.create(owner=user, title="林")
    character = character_create(user=user, novel_id=novel.pk, card=CARD)
    book = Lorebook.objects.create(owner=user, name="Forest")
    LorebookEntry.objects.create(
        lorebook=book, uid=0, data={"uid": 0, "key": ["glade"], "content": "The glade hides {{char}}'s shrine."}
    )
    persona_save(user=user, name="Alex", description="{{user}} is lost.", is_default=True)
    return chat_create(user=user, character_id=character.pk, lorebook_ids=[book.pk])


def plan_of(user: Any, chat: Chat, *, limit: int = 4000, **req: Any):
    values: dict[str, Any] = {
        "chat_id": chat.pk,
        "user_input": "",
        "generation_type": "normal",
        "model_id": "m",
        "temperature": 0.7,
        "max_tokens": None,
    }
    values.update(req)
    return roleplay_plan(
        user=user, chat=Chat.objects.get(pk=chat.pk), req=RoleplayRequest(**values), limit=limit, model_id="m"
    )


def contents(plan: Any) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in plan.assembled.messages]


def test_a_normal_turn_assembles_world_info_from_the_input_and_writes_nothing(user, chat):
    plan = plan_of(user, chat, user_input="Where is the glade, {{char}}?")

    assert contents(plan) == [
        ("system", "Write Sera's next reply in a fictional chat between Sera and Alex."),
        ("system", "The glade hides Sera's shrine."),
        ("system", "Alex is lost."),
        ("system", "Sera guards the forest."),
        ("system", "[Start a new Chat]"),
        ("assistant", "Awake, Alex?"),
        ("user", "Where is the glade, Sera?"),
    ]
    turn = plan.turn
    assert (turn.user_input, turn.user_name, turn.char_name) == ("Where is the glade, Sera?", "Alex", "Sera")
    assert (turn.generation_type, turn.target_message_id, turn.global_variables) == ("normal", None, None)
    assert [(t.uid, t.status) for t in plan.activation.trace if t.status == "activated"] == [(0, "activated")]
    assert ChatMessage.objects.filter(chat=chat).count() == 1  # the greeting only


def test_continue_targets_the_last_reply_and_prefills_it(user, chat):
    greeting = ChatMessage.objects.get(chat=chat)

    plan = plan_of(user, chat, generation_type="continue", user_input="ignored")

    assert plan.turn.target_message_id == greeting.pk
    assert plan.turn.user_input == ""  # only a normal turn sends the input
    # no history left before it, so no "[Start a new Chat]" either
    assert contents(plan)[-2:] == [("system", "Sera guards the forest."), ("assistant", "Awake, Alex?")]


def test_swipe_replaces_the_last_reply_and_hidden_messages_are_not_sent(user, chat):
    greeting = ChatMessage.objects.get(chat=chat)
    ChatMessage.objects.create(chat=chat, role="user", name="Alex", swipes=["secret"], hidden=True)
    reply = ChatMessage.objects.create(chat=chat, role="assistant", name="Sera", swipes=["first try"])

    plan = plan_of(user, chat, generation_type="swipe")

    assert plan.turn.target_message_id == reply.pk
    sent = [c for _r, c in contents(plan)]
    assert "secret" not in sent and "first try" not in sent and greeting.content in sent


def test_swipe_without_a_reply_to_replace_is_400(user, chat):
    ChatMessage.objects.create(chat=chat, role="user", name="Alex", swipes=["hello"])

    with pytest.raises(ApplicationError) as raised:
        plan_of(user, chat, generation_type="swipe")

    assert raised.value.status_code == 400
    assert raised.value.extra["details"] == {"generationType": ["聊天的最后一条消息不是助手消息。"]}


def test_variables_change_in_the_plan_only(user, chat):
    GlobalVariables.objects.create(user=user, variables={"visits": 1})

    plan = plan_of(user, chat, user_input="{{setvar::seen::yes}}{{incglobalvar::visits}}hi")

    assert plan.turn.variables == {"seen": "yes"}
    assert plan.turn.global_variables == {"visits": 2}
    assert Chat.objects.get(pk=chat.pk).variables == {}
    assert GlobalVariables.objects.get(user=user).variables == {"visits": 1}


def test_mandatory_prompts_over_the_limit_are_context_exceeded(user, chat):
    with pytest.raises(ContextExceeded) as raised:
        plan_of(user, chat, limit=10, user_input="hello")

    assert raised.value.budget == 10 and raised.value.needed > 10
