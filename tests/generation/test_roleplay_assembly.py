"""The pure roleplay assembly: ST Chat Completion order, depth injection, budget (no database)."""

from __future__ import annotations

import pytest

from apps.generation.roleplay.assembly import (
    NEW_CHAT,
    NEW_EXAMPLE_CHAT,
    BudgetExceeded,
    Injection,
    Sections,
    assemble_turn,
    authors_note_due,
    inject_depth,
    parse_examples,
)
from apps.providers.tokens import estimate_tokens
from apps.providers.types import ChatMessage as M


def test_parse_examples_splits_start_blocks_and_speakers():
    text = "<START>\nAlex: Hi\nSera: Hello\nhow are you?\n<start>\nSera: Bye\n\n<START>\n"
    assert parse_examples(text, user="Alex", char="Sera") == [
        [M("system", "Hi", "example_user"), M("system", "Hello\nhow are you?", "example_assistant")],
        [M("system", "Bye", "example_assistant")],
    ]


def test_parse_examples_without_speaker_lines_is_one_system_message():
    assert parse_examples("Some narration.", user="A", char="B") == [[M("system", "Some narration.")]]


@pytest.mark.parametrize(
    ("frequency", "user_messages", "due"),
    [
        (0, 0, False),
        (0, 4, False),
        (1, 1, True),
        (1, 7, True),
        (2, 1, False),
        (2, 2, True),
        (3, 6, True),
        (3, 7, False),
    ],
)
def test_authors_note_schedule(frequency, user_messages, due):
    assert authors_note_due(frequency, user_messages) is due


def test_inject_depth_orders_roles_and_keys_like_st():
    history = [M("user", "u1"), M("assistant", "a1"), M("user", "u2")]
    injections = [
        Injection(0, "system", "wi0", "customDepthWI_0_0"),
        Injection(0, "system", "note", "2_floating_prompt"),
        Injection(0, "user", "user0", "x"),
        Injection(0, "assistant", "asst0", "x"),
        Injection(1, "system", "d1", "DEPTH_PROMPT"),
        Injection(9, "system", "deep", "DEPTH_PROMPT"),
    ]
    out = [(m.role, m.content) for m, _injected in inject_depth(history, injections)]
    assert out == [
        ("system", "deep"),
        ("user", "u1"),
        ("assistant", "a1"),
        ("system", "d1"),
        ("user", "u2"),
        ("assistant", "asst0"),
        ("user", "user0"),
        ("system", "note\nwi0"),
    ]


def _sections(**overrides):
    base = {
        "main": "MAIN",
        "world_info_before": "WIB",
        "persona": "PERSONA",
        "description": "DESC",
        "personality": "PERS",
        "scenario": "SCEN",
        "world_info_after": "WIA",
        "examples": [[M("system", "ex1", "example_user")], [M("system", "ex2", "example_assistant")]],
        "history": [M("assistant", "old reply"), M("user", "new input")],
        "post_history": "PHI",
    }
    return Sections(**{**base, **overrides})


def test_full_order_when_everything_fits():
    turn = assemble_turn(_sections(), limit=10_000)
    assert [m.content for m in turn.messages] == [
        "MAIN",
        "WIB",
        "PERSONA",
        "DESC",
        "PERS",
        "SCEN",
        "WIA",
        NEW_EXAMPLE_CHAT,
        "ex1",
        NEW_EXAMPLE_CHAT,
        "ex2",
        NEW_CHAT,
        "old reply",
        "new input",
        "PHI",
    ]
    assert [b.name for b in turn.blocks] == [
        "main",
        "worldInfoBefore",
        "personaDescription",
        "charDescription",
        "charPersonality",
        "scenario",
        "worldInfoAfter",
        "dialogueExamples",
        "chatHistory",
        "postHistoryInstructions",
    ]
    assert turn.used == sum(b.tokens for b in turn.blocks) == sum(estimate_tokens(m.content) for m in turn.messages)
    assert turn.history_dropped == 0 and turn.examples_dropped == 0


def test_budget_history_before_examples_then_history_stops_at_first_misfit():
    history = [M("user", "x" * 67), M("assistant", "tiny"), M("user", "y" * 34)]  # 20, 2, 11 tokens
    sections = _sections(history=history)
    mandatory = sum(estimate_tokens(t) for t in ("MAIN", "WIB", "PERSONA", "DESC", "PERS", "SCEN", "WIA", "PHI"))
    marker = estimate_tokens(NEW_CHAT)
    # room for the marker and the two newest only: the old 20-token line does not fit, and history
    # stops there; examples (5 + 1 tokens each) get nothing either
    turn = assemble_turn(sections, limit=mandatory + marker + 13)
    assert [m.content for m in turn.messages if m.role != "system"] == ["tiny", "y" * 34]
    assert NEW_EXAMPLE_CHAT not in [m.content for m in turn.messages]
    assert (turn.history_dropped, turn.examples_dropped) == (1, 2)
    # a bit more room: all history, then one example block from what is left
    example = estimate_tokens(NEW_EXAMPLE_CHAT) + estimate_tokens("ex1")
    turn = assemble_turn(sections, limit=mandatory + marker + 33 + example)
    assert [m.content for m in turn.messages].count(NEW_EXAMPLE_CHAT) == 1
    assert (turn.history_dropped, turn.examples_dropped) == (0, 1)


def test_mandatory_over_budget_raises():
    with pytest.raises(BudgetExceeded) as caught:
        assemble_turn(_sections(main="m" * 335), limit=50)
    assert caught.value.budget == 50 and caught.value.needed > 100


def test_prefill_and_control_close_the_prompt_and_empty_parts_vanish():
    turn = assemble_turn(
        _sections(persona="", post_history="", control="IMPERSONATE", prefill="Half a sen", history=[]), limit=10_000
    )
    assert [m.content for m in turn.messages][-2:] == ["IMPERSONATE", "Half a sen"]
    assert turn.messages[-1].role == "assistant"
    assert "" not in [m.content for m in turn.messages] and NEW_CHAT not in [m.content for m in turn.messages]


def test_authors_note_before_and_after_main():
    turn = assemble_turn(_sections(before_main="AN-B", after_main="AN-A"), limit=10_000)
    assert [m.content for m in turn.messages][:3] == ["AN-B", "MAIN", "AN-A"]
