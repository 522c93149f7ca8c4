"""Context, text and random macros."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from apps.macros.engine import MacroContext, expand

NOW = datetime(2026, 1, 5, 15, 45, 7, 123000, tzinfo=UTC)

FULL = {
    "user": "Alice",
    "char": "Bob",
    "description": "A knight of {{user}}",
    "personality": "brave",
    "scenario": "a castle",
    "persona": "a traveller",
    "char_prompt": "SYS",
    "char_instruction": "JB",
    "mes_examples": "<START>ex",
    "original": "ORIG",
    "model": "qwen-max",
    "last_message": "last",
    "last_user_message": "last-user",
    "last_char_message": "last-char",
    "last_message_id": "41",
    "max_prompt": "8192",
    "outlets": {"lore": "dragons live here", "空": ""},
    "input": "typed",
}


def ctx(**overrides: Any) -> MacroContext:
    base: dict[str, Any] = {**FULL, "seed": 7, "now": lambda: NOW}
    base.update(overrides)
    return MacroContext(**base)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{user}}|{{char}}", "Alice|Bob"),
        ("{{group}}|{{charIfNotGroup}}|{{groupNotMuted}}", "Bob|Bob|Bob"),  # solo chat: the char
        ("{{notChar}}", "Alice"),
        ("{{description}}", "A knight of {{user}}"),  # context values are inserted literally
        ("{{charDescription}}|{{personality}}|{{charPersonality}}", "A knight of {{user}}|brave|brave"),
        ("{{scenario}}|{{charScenario}}|{{persona}}", "a castle|a castle|a traveller"),
        ("{{charPrompt}}|{{charInstruction}}|{{charJailbreak}}", "SYS|JB|JB"),
        ("{{mesExamples}}|{{mesExamplesRaw}}", "<START>ex|<START>ex"),
        ("{{model}}|{{maxPrompt}}", "qwen-max|8192"),
        ("{{lastMessage}}|{{lastUserMessage}}|{{lastCharMessage}}|{{lastMessageId}}", "last|last-user|last-char|41"),
        ("{{input}}", "typed"),
        ("{{original}}|{{original}}|{{ORIGINAL}}", "ORIG||"),  # first use only
        ("{{if original}}[{{original}}]{{/if}}{{original}}", "[ORIG]"),  # a condition does not use it up
        ("{{outlet::lore}}", "dragons live here"),
        ("{{outlet::missing}}|{{outlet::空}}", "|"),
        ("{{outlet}}", "{{outlet}}"),
    ],
)
def test_context_macros(text: str, expected: str) -> None:
    assert expand(text, ctx()) == expected


@pytest.mark.parametrize(
    ("overrides", "text", "expected"),
    [
        ({"group": "Bob, Carol"}, "{{group}}|{{charIfNotGroup}}", "Bob, Carol|Bob, Carol"),
        ({"not_char": "Alice, Carol"}, "{{notChar}}", "Alice, Carol"),
        ({"mes_examples_raw": "raw"}, "{{mesExamplesRaw}}", "raw"),
        ({"user": "", "char": ""}, "[{{user}}][{{char}}]", "[][]"),
        ({"user": "小明", "char": "小红"}, "{{user}}对{{char}}说", "小明对小红说"),
    ],
)
def test_context_overrides(overrides: dict[str, Any], text: str, expected: str) -> None:
    assert expand(text, ctx(**overrides)) == expected


def test_empty_context_gives_empty_strings() -> None:
    text = "[{{user}}{{char}}{{description}}{{model}}{{lastMessage}}{{original}}{{outlet::x}}]"
    assert expand(text, MacroContext()) == "[]"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a{{newline}}b", "a\nb"),
        ("a{{newline::3}}b", "a\n\n\nb"),
        ("a{{newline::0}}b", "ab"),
        ("a{{newline::-1}}b", "a{{newline::-1}}b"),
        ("a{{space}}b", "a b"),
        ("a{{space::4}}b", "a    b"),
        ("a{{space::x}}b", "a{{space::x}}b"),
        ("a{{noop}}b", "ab"),
        ("{{reverse::abc}}", "cba"),
        ("{{reverse::你好世界}}", "界世好你"),
        ("{{reverse::😀ab}}", "ba😀"),
        ("x{{// a comment}}y", "xy"),
        ("x{{//comment with {{user}} inside}}y", "xy"),
        ("x{{// multi\nline\ncomment}}y", "xy"),
        ("x{{comment::hidden}}y", "xy"),
        ('x{{banned "evil"}}y', "xy"),
        ("x{{banned::bad}}y", "xy"),
        # trim eats itself and the newlines around it (ST's (?:\r?\n)*{{trim}}(?:\r?\n)*)
        ("a\n\n{{trim}}\n\nb", "ab"),
        ("a\r\n{{trim}}\r\nb", "ab"),
        ("a  \n{{trim}}\n  b", "a    b"),
        ("a{{newline}}{{trim}}{{newline}}b", "ab"),
        ("{{trim}}\n\nstart", "start"),
        ("end\n\n{{trim}}", "end"),
        ("a\n{{trim}}{{noop}}\nb", "ab"),
        ("{{trim::  padded  }}|", "padded|"),
    ],
)
def test_text_macros(text: str, expected: str) -> None:
    assert expand(text, ctx()) == expected


def test_banned_words_are_collected() -> None:
    context = ctx()
    assert expand('{{banned "evil"}}{{banned::bad}}{{banned ""}}', context) == ""
    assert context.banned_words == ["evil", "bad"]


@pytest.mark.parametrize(
    ("text", "options"),
    [
        ("{{random::red::green::blue}}", ["red", "green", "blue"]),
        ("{{random:red,green,blue}}", ["red", "green", "blue"]),
        ("{{random red, green , blue}}", ["red", "green", "blue"]),
        ("{{random::a,b}}", ["a", "b"]),  # one argument: split on commas
        (r"{{random:a\,b,c}}", ["a,b", "c"]),  # \, is a literal comma
        ("{{random::only}}", ["only"]),
        ("{{random::甲::乙::丙}}", ["甲", "乙", "丙"]),
        ("{{random:x::y}}", ["x", "y"]),  # legacy single colon with '::' options
    ],
)
def test_random_uses_the_injected_rng(text: str, options: list[str]) -> None:
    expected = random.Random(99).choice(options)
    assert expand(text, ctx(rng=random.Random(99))) == expected
    assert expand(text, ctx(seed=99, rng=None)) == expected  # a seed builds the same RNG


def test_any_seed_object_works() -> None:
    seed = uuid.UUID("12345678-1234-5678-1234-567812345678")
    expected = random.Random(str(seed)).choice(["a", "b", "c"])
    assert expand("{{random::a::b::c}}", ctx(seed=seed)) == expected


def test_random_draws_again_for_each_occurrence() -> None:
    rng = random.Random(5)
    expected = "".join(rng.choice("ab") for _ in range(20))
    assert expand("{{random::a::b}}" * 20, ctx(rng=random.Random(5))) == expected


def test_pick_is_stable_for_same_text_seed_and_position() -> None:
    text = "{{pick::a::b::c::d::e::f::g::h}}"
    first = expand(text, ctx(seed="chat-1"))
    assert all(expand(text, ctx(seed="chat-1", rng=random.Random(i))) == first for i in range(5))
    assert first in "abcdefgh"


def test_pick_golden_values() -> None:
    text = "{{pick::a::b::c::d::e::f::g::h}} {{pick::a::b::c::d::e::f::g::h}}"
    assert expand(text, ctx(seed="chat-1")) == "c e"
    assert expand(text, ctx(seed="chat-2")) == "c f"


def test_pick_depends_on_seed_and_text() -> None:
    text = "{{pick::1::2::3::4::5::6::7::8::9::10}}"
    by_seed = {expand(text, ctx(seed=s)) for s in range(40)}
    by_text = {expand("x" * i + text, ctx(seed=1)) for i in range(40)}
    assert len(by_seed) > 5
    assert len(by_text) > 5


@pytest.mark.parametrize(
    ("text", "sides", "count", "modifier"),
    [
        ("{{roll:1d20}}", 20, 1, 0),
        ("{{roll 2d6+3}}", 6, 2, 3),
        ("{{roll::6}}", 6, 1, 0),
        ("{{roll:d8}}", 8, 1, 0),
        ("{{roll:3D4-2}}", 4, 3, -2),
        ("{{roll: 1d100 }}", 100, 1, 0),
    ],
)
def test_roll(text: str, sides: int, count: int, modifier: int) -> None:
    rng = random.Random(3)
    expected = sum(rng.randint(1, sides) for _ in range(count)) + modifier
    assert expand(text, ctx(rng=random.Random(3))) == str(expected)


@pytest.mark.parametrize(
    "text",
    ["{{roll:abc}}", "{{roll:0d6}}", "{{roll:1d0}}", "{{roll:1001d6}}", "{{roll:2d6*3}}", "{{roll::}}"],
)
def test_invalid_roll_is_empty(text: str) -> None:
    assert expand(text, ctx()) == ""
