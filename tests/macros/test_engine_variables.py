"""Variables, shorthands, {{if}} and scoped blocks."""

from __future__ import annotations

from typing import Any

import pytest

from apps.macros.engine import MacroContext, expand


def ctx(**overrides: Any) -> MacroContext:
    base: dict[str, Any] = {"user": "Alice", "char": "Bob", "seed": 1}
    base.update(overrides)
    return MacroContext(**base)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{setvar::x::hello}}[{{getvar::x}}]", "[hello]"),
        ("[{{getvar::missing}}]", "[]"),
        ("{{setvar::x::007}}{{getvar::x}}", "7"),  # numeric strings read back as numbers
        ("{{setvar::x::1e3}}{{getvar::x}}", "1000"),
        ("{{setvar::x::0x10}}{{getvar::x}}", "16"),
        ("{{setvar::x::1.50}}{{getvar::x}}", "1.5"),
        ("{{setvar::x::{{newline}}}}[{{getvar::x}}]", "[\n]"),  # whitespace-only kept
        ("{{addvar::x::5}}{{getvar::x}}", "5"),
        ("{{setvar::x::5}}{{addvar::x::2}}{{getvar::x}}", "7"),
        ("{{setvar::x::5}}{{addvar::x::-7.5}}{{getvar::x}}", "-2.5"),
        ("{{setvar::x::0.1}}{{addvar::x::0.2}}{{getvar::x}}", "0.30000000000000004"),
        ("{{setvar::x::5}}{{addvar::x::abc}}{{getvar::x}}", "5abc"),
        ("{{setvar::x::abc}}{{addvar::x::1}}{{getvar::x}}", "abc1"),
        ("{{addvar::x::abc}}{{getvar::x}}", "abc"),
        ('{{setvar::x::[1,"a"]}}{{addvar::x::b}}{{getvar::x}}', '[1,"a","b"]'),
        ("{{setvar::x::[]}}{{addvar::x::名字}}{{getvar::x}}", '["名字"]'),
        ("{{setvar::x::[broken}}{{addvar::x::1}}{{getvar::x}}", "[broken1"),
        ("{{incvar::n}}{{incvar::n}}{{decvar::n}}", "121"),
        ("{{decvar::m}}", "-1"),
        ("{{setvar::x::abc}}{{incvar::x}}", "abc1"),
        ("{{setvar::x::1e21}}{{incvar::x}}", "1e+21"),
        ("{{setvar::x::0.000001}}{{getvar::x}}|{{setvar::y::0.0000001}}{{getvar::y}}", "0.000001|1e-7"),
        ("{{hasvar::x}}{{setvar::x::1}}{{hasvar::x}}{{deletevar::x}}{{hasvar::x}}", "falsetruefalse"),
        ("{{setvar::名字::小明}}{{getvar::名字}}", "小明"),
        ("{{setvar::x::a::b}}", "{{setvar::x::a::b}}"),
        ("{{setglobalvar::g::1}}{{getglobalvar::g}}{{incglobalvar::g}}{{decglobalvar::g}}", "121"),
        ("{{addglobalvar::g::3}}{{getglobalvar::g}}{{hasglobalvar::g}}", "3true"),
        ("{{setglobalvar::g::1}}{{deleteglobalvar::g}}{{hasglobalvar::g}}", "false"),
        ("{{setvar::s::local}}{{setglobalvar::s::global}}{{getvar::s}}/{{getglobalvar::s}}", "local/global"),
        ("{{SetVar::x::1}}{{GETVAR::x}}", "1"),  # macro names are case-insensitive...
        ("{{setvar::X::1}}[{{getvar::x}}]", "[]"),  # ...variable names are not
    ],
)
def test_variable_macros(text: str, expected: str) -> None:
    assert expand(text, ctx()) == expected


def test_variables_live_in_caller_stores() -> None:
    local: dict[str, Any] = {"count": 2, "items": ["a"], "flag": True}
    global_vars: dict[str, Any] = {}
    context = ctx(local_vars=local, global_vars=global_vars)
    text = "{{incvar::count}} {{addvar::items::b}}{{getvar::items}} {{getvar::flag}}{{setglobalvar::g::x}}"
    assert expand(text, context) == '3 ["a","b"] true'
    assert local == {"count": 3, "items": ["a", "b"], "flag": True}
    assert global_vars == {"g": "x"}


def test_variables_persist_across_calls() -> None:
    store: dict[str, Any] = {}
    for _ in range(3):
        expand("{{incvar::turn}}", ctx(local_vars=store))
    assert expand("{{getvar::turn}}", ctx(local_vars=store)) == "3"
    assert store == {"turn": 3}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[{{.x}}]{{.x = hi}}{{.x}}", "[]hi"),
        ("{{$x = g}}{{$x}}|{{getglobalvar::x}}|[{{.x}}]", "g|g|[]"),
        ("{{.n++}}{{.n++}}{{.n--}}", "121"),
        ("{{.n += 5}}{{.n}}", "5"),
        ("{{.n = 5}}{{.n -= 2}}{{.n}}", "3"),
        ("{{.n -= abc}}", "{{.n -= abc}}"),
        ("{{.s = x}}{{.s += y}}{{.s}}", "xy"),
        ("{{.e || fallback}}|{{.e ?? fallback}}", "fallback|fallback"),
        ("{{.z = 0}}{{.z || fb}}|{{.z ?? fb}}", "fb|0"),
        ("{{.q ||= first}}{{.q ||= second}}", "firstfirst"),
        ("{{.r ??= first}}{{.r ??= second}}", "firstfirst"),
        (
            "{{.a = 10}}{{.a == 10}} {{.a != 10}} {{.a > 9}} {{.a >= 10}} {{.a < 9}} {{.a <= 10}}",
            "true false true true false true",
        ),
        ("{{.a = 10}}{{.a == 10.0}} {{.a > 9.5}} {{.a < 0x10}}", "true true true"),
        ("{{.w = apple}}{{.w == apple}} {{.w < banana}} {{.w > banana}} {{.w != pear}}", "true true false true"),
        ("{{.x = {{user}}}}{{.x}}", "Alice"),
        ("{{.my-var = 3}}{{getvar::my-var}}", "3"),
        ("{{.名字 = 小红}}{{.名字}}", "小红"),
        ("{{ .x = spaced }}{{ .x }}", "spaced"),
        ("{{.a b}}", "{{.a b}}"),
        ("{{.}}", "{{.}}"),
        ("{{.x++ y}}", "{{.x++ y}}"),
    ],
)
def test_shorthands(text: str, expected: str) -> None:
    assert expand(text, ctx()) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{if 1}}yes{{else}}no{{/if}}", "yes"),
        ("{{if 0}}yes{{else}}no{{/if}}", "no"),
        ("{{if 0}}yes{{/if}}|", "|"),
        ("{{if false}}a{{/if}}{{if FALSE}}b{{/if}}{{if off}}c{{/if}}{{if no}}d{{/if}}|", "|"),
        ("{{if hello}}a{{/if}}", "a"),  # an unknown bare word is just text (truthy)
        ("{{if user}}named{{else}}anonymous{{/if}}", "named"),  # a bare macro name is resolved
        ("{{if description}}has{{else}}none{{/if}}", "none"),
        ("{{if !description}}none{{/if}}", "none"),
        ("{{if ! user}}x{{else}}y{{/if}}", "y"),
        ("{{if {{getvar::flag}}}}on{{else}}off{{/if}}", "off"),
        ("{{setvar::flag::yes}}{{if {{getvar::flag}}}}on{{else}}off{{/if}}", "on"),
        ("{{if !{{getvar::flag}}}}unset{{/if}}", "unset"),
        ("{{.flag = 1}}{{if .flag}}on{{else}}off{{/if}}", "on"),
        ("{{if .missing}}on{{else}}off{{/if}}", "off"),
        ("{{.n = 3}}{{if {{.n > 2}}}}big{{/if}}", "big"),
        ("{{ if :: 1 }}spaced{{ /if }}", "spaced"),
        ("{{if 1}}{{if 0}}a{{else}}b{{/if}}{{else}}c{{/if}}", "b"),
        ("{{if 0}}{{if 1}}a{{else}}b{{/if}}{{else}}c{{/if}}", "c"),
        ("{{if 0}}x{{else}}{{if 1}}y{{else}}z{{/if}}{{/if}}", "y"),
        ("{{if 1}}\n    line1\n      line2\n{{/if}}|", "line1\n  line2|"),  # trimmed and dedented
        ("{{#if 1}}  x  {{/if}}|", "  x  |"),  # '#' keeps whitespace
        ("{{if 0}}{{setvar::side::effect}}{{/if}}[{{getvar::side}}]", "[]"),  # untaken branch is not run
        ("{{if::1::yes::no}}|{{if::0::yes::no}}|{{if::0::yes}}", "yes|no|"),
        ("{{if 1}}a{{/if}}{{/if}}", "a{{/if}}"),
        ("{{if 1}}a{{else}}b{{else}}c{{/if}}", "a"),
        ("{{if 1}}x{{if 0}}y{{/if}}", "{{if 1}}x"),  # the closer takes the latest opener
        ("{{if 1}}{{reverse}}ab{{/if}}{{/reverse}}", "{{reverse}}ab{{/reverse}}"),  # crossing blocks
        ("{{newline}}{{trim}}{{if 0}}a{{else}}b{{/if}}", "b"),
    ],
)
def test_if_blocks(text: str, expected: str) -> None:
    assert expand(text, ctx()) == expected


def test_if_with_parameter_condition() -> None:
    template = "{{if 风格}}风格:{{风格}}{{else}}默认风格{{/if}}"
    assert expand(template, ctx(parameters={"风格": "武侠"})) == "风格:武侠"
    assert expand(template, ctx(parameters={"风格": ""})) == "默认风格"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{setvar::k}}\n  multi\n  line\n{{/setvar}}[{{getvar::k}}]", "[multi\nline]"),
        ("{{#setvar::k}}\n  multi\n{{/setvar}}[{{getvar::k}}]", "[\n  multi\n]"),
        (
            "{{ setvar backstory }}\n    Born in {{char}}'s village.\n{{ /setvar }}{{getvar::backstory}}",
            "Born in Bob's village.",
        ),
        ("{{reverse}}hello{{/reverse}}", "olleh"),
        ("{{ reverse }}\n  Hello World\n{{ /reverse }}", "dlroW olleH"),
        ("{{trim}}  x  {{/trim}}|", "x|"),
        ("{{//}}\nhidden {{setvar::q::1}}\n{{///}}[{{getvar::q}}]", "[]"),
        ("{{comment}}hidden{{/comment}}x", "x"),
        ("{{setglobalvar::g}}v{{/setglobalvar}}{{getglobalvar::g}}", "v"),
        ("{{newline}}{{newline}}{{setvar::a}}x{{/setvar}}{{getvar::a}}", "\n\nx"),
    ],
)
def test_scoped_blocks(text: str, expected: str) -> None:
    assert expand(text, ctx()) == expected
