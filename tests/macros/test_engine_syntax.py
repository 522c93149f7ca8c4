"""Macro syntax: arguments, nesting, escaping, unknown/malformed macros, legacy forms, parameters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from apps.macros.engine import MacroContext, expand, needs_expansion

NOW = datetime(2026, 1, 5, 15, 45, 7, 123000, tzinfo=UTC)


def ctx(**overrides: Any) -> MacroContext:
    base: dict[str, Any] = {"user": "Alice", "char": "Bob", "seed": 7, "now": lambda: NOW}
    base.update(overrides)
    return MacroContext(**base)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # argument separators and whitespace
        ("{{reverse::abc}}", "cba"),
        ("{{reverse abc def}}", "fed cba"),
        ("{{reverse:abc}}", "cba"),
        ("{{reverse:abc::def}}", "fed::cba"),  # legacy single colon: the rest is one argument
        ("{{ setvar :: x :: y }}{{getvar::x}}", "y"),
        ("{{ user }}", "Alice"),
        ("{{\n  char\n}}", "Bob"),
        # case-insensitive names
        ("{{User}} {{USER}} {{uSeR}}", "Alice Alice Alice"),
        ("{{REVERSE::ab}}", "ba"),
        # nesting resolves inside-out, left to right
        ("{{setvar::Bob_mood::glad}}{{getvar::{{char}}_mood}}", "glad"),
        ("{{reverse::{{user}}}}", "ecilA"),
        ("{{reverse::{{reverse::{{user}}}}}}", "Alice"),
        ("{{setvar::a::1}}{{setvar::b::{{getvar::a}}{{getvar::a}}}}{{getvar::b}}", "11"),
        # braces
        ("{{{char}}}", "{Bob}"),
        ("{{{{char}}}}", "{{Bob}}"),
        ("{ {char} }", "{ {char} }"),
        ("a { b } c {{user}}", "a { b } c Alice"),
        ("{{ hehe", "{{ hehe"),
        ("{{ hehe {{user}}", "{{ hehe Alice"),
        ("}} {{user}} }}", "}} Alice }}"),
        ("{{a{{b", "{{a{{b"),
        # escaping
        (r"\{\{x\}\}", "{{x}}"),
        (r"\{\{user\}\}", "{{user}}"),
        (r"\{{user}}", "{{user}}"),
        (r"{{setvar::x::a\}\}b}}{{getvar::x}}", "a}}b"),
        (r"LaTeX \{ x \} stays {{user}}", r"LaTeX \{ x \} stays Alice"),
        # unknown macros stay verbatim, with nested macros resolved
        ("{{unknown}}", "{{unknown}}"),
        ("{{unknown::{{newline}}}}", "{{unknown::\n}}"),
        ("{{unknown::a::{{user}}}}", "{{unknown::a::Alice}}"),
        ("{{ Unknown :: x }}", "{{ Unknown :: x }}"),
        ("{{}}", "{{}}"),
        ("{{ }}", "{{ }}"),
        ("{{::}}", "{{::}}"),
        ("{{123}}", "{{123}}"),
        ("{{{{user}}}}", "{{Alice}}"),
        ("{{a.b}}", "{{a.b}}"),
        # arity: wrong argument count keeps the macro literal
        ("{{user::x}}", "{{user::x}}"),
        ("{{reverse}}", "{{reverse}}"),
        ("{{reverse::a::b}}", "{{reverse::a::b}}"),
        ("{{newline::extra}}", "{{newline::extra}}"),
        ("{{ newline :: x }}", "{{ newline :: x }}"),
        ("{{getvar::x::y}}", "{{getvar::x::y}}"),
        ("{{setvar::only}}", "{{setvar::only}}"),
        ("{{setvar x 5}}", "{{setvar x 5}}"),
        ("{{random}}", "{{random}}"),
        ("{{if}}", "{{if}}"),
        ("{{if x}}", "{{if x}}"),
        ("{{/if}}", "{{/if}}"),
        ("{{else}}", "{{else}}"),
        # legacy angle-bracket tokens (upper case only, see docs/macros.md)
        ("<USER> meets <BOT> and <CHAR>", "Alice meets Bob and Bob"),
        ("<GROUP>|<CHARIFNOTGROUP>", "Bob|Bob"),
        ("<user> and <User> stay", "<user> and <User> stay"),
        ("<b>bold</b> <USER>", "<b>bold</b> Alice"),
        ("{{time_UTC+8}}", "11:45 PM"),
    ],
)
def test_syntax(text: str, expected: str) -> None:
    assert expand(text, ctx()) == expected


@pytest.mark.parametrize(
    ("text", "parameters", "expected"),
    [
        ("{{主角名字}}走进了房间。", {"主角名字": "李雷"}, "李雷走进了房间。"),
        ("{{ 主角名字 }}", {"主角名字": "李雷"}, "李雷"),
        ("{{世界观}}:{{主角名字}}", {"世界观": "修仙", "主角名字": "韩立"}, "修仙:韩立"),
        ("{{角色 名字}}", {"角色 名字": "小明"}, "小明"),  # any Unicode name, even with a space
        ("{{名字.全称}}", {"名字.全称": "司马懿"}, "司马懿"),
        ("{{topic}}", {"Topic": "dragons"}, "dragons"),  # case-insensitive like ST dynamic macros
        ("{{Topic}}/{{topic}}", {"Topic": "A", "topic": "b"}, "A/b"),  # exact case wins
        ("{{value}}", {"value": "{{user}}"}, "{{user}}"),  # inserted literally
        ("{{value}}", {"value": r"\{\{x\}\}"}, r"\{\{x\}\}"),
        ("{{value}}", {"value": "<USER>"}, "<USER>"),
        ("{{user}}", {"user": "Override"}, "Override"),  # parameters override built-ins (ST dynamic macros)
        ("{{reverse::ab}}", {"reverse": "R"}, "ba"),  # ...only in the argument-less form
        ("{{getvar::{{key}}}}", {"key": "k"}, ""),
        ("{{setvar::k::{{key}}}}{{getvar::k}}", {"key": "v"}, "v"),
        ("{{未知参数}}", {"主角名字": "李雷"}, "{{未知参数}}"),
        ("{{n}}", {"n": 5}, "5"),  # non-string values are stringified
    ],
)
def test_parameters(text: str, parameters: dict[str, Any], expected: str) -> None:
    assert expand(text, ctx(parameters=parameters)) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain text", False),
        ("", False),
        ("a { b } c", False),
        ("<b>html</b> <user>", False),
        ("{{user}}", True),
        ("x <USER> y", True),
        (r"\{\{x\}\}", True),
        (r"only closing \}\}", True),
        (r"LaTeX \{ x \} and \}", False),
    ],
)
def test_needs_expansion(text: str, expected: bool) -> None:
    assert needs_expansion(text) is expected


def test_fast_path_returns_same_object() -> None:
    text = "没有宏的文本。" * 1000
    assert expand(text, ctx()) is text


def test_non_string_input_is_coerced() -> None:
    assert expand(None, ctx()) == ""  # type: ignore[arg-type]
