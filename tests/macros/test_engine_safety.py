"""Hostile input: bounded output, bounded nesting, no blow-up, never an exception."""

from __future__ import annotations

import time
from typing import Any

import pytest

from apps.macros.engine import MacroContext, expand
from apps.macros.engine.context import MAX_NESTING


def ctx(**overrides: Any) -> MacroContext:
    base: dict[str, Any] = {"user": "Alice", "char": "Bob", "seed": 1, "max_output_chars": 10_000}
    base.update(overrides)
    return MacroContext(**base)


DOUBLING = "{{setvar::a::xy}}" + "{{setvar::a::{{getvar::a}}{{getvar::a}}}}" * 200 + "{{getvar::a}}"


@pytest.mark.parametrize(
    ("name", "text", "max_len"),
    [
        ("setvar/getvar doubling", DOUBLING, 10_000),
        ("addvar doubling", "{{setvar::a::xy}}" + "{{addvar::a::{{getvar::a}}}}" * 200 + "{{getvar::a}}", 10_000),
        ("shorthand doubling", "{{.a = xy}}" + "{{.a += {{.a}}}}" * 200 + "{{.a}}", 10_000),
        ("huge newline count", "{{newline::99999999}}", 10_000),
        ("huge space counts", "{{space::999999}}" * 50, 10_000),
        ("global doubling", "{{setglobalvar::g::x}}" + "{{addglobalvar::g::{{getglobalvar::g}}}}" * 100, 10_000),
    ],
)
def test_output_is_capped(name: str, text: str, max_len: int) -> None:
    context = ctx()
    out = expand(text, context)
    assert len(out) <= max(max_len, len(text))
    assert all(len(str(v)) <= max(max_len, len(text)) for v in context.local_vars.values())


def test_budget_does_not_starve_ordinary_variable_use() -> None:
    context = ctx()
    out = expand("{{setvar::hp::100}}" + "{{decvar::hp}}" * 5_000 + "|{{getvar::hp}}|{{hasvar::hp}}", context)
    assert out.endswith("|-4900|true")
    assert context.local_vars == {"hp": -4900}


def test_list_store_grows_without_reserialising() -> None:
    context = ctx(local_vars={"log": []})
    expand("{{addvar::log::x}}" * 3_000 + "{{addvar::log::y}}", context)
    assert len(context.local_vars["log"]) == 3_001
    assert context.local_vars["log"][-1] == "y"


def test_cap_never_truncates_the_input_itself() -> None:
    text = "x" * 20_000 + "{{user}}"
    assert expand(text, ctx()) == "x" * 20_000 + "Alice"


def test_newline_count_too_long_to_be_a_number_stays_literal() -> None:
    assert expand("{{newline::999999999999999999999}}", ctx()) == "{{newline::999999999999999999999}}"


def test_nesting_deeper_than_the_limit_is_text() -> None:
    deep = "{{reverse::" * (MAX_NESTING + 5) + "ab" + "}}" * (MAX_NESTING + 5)
    out = expand(deep, ctx())
    assert out.count("{{") == out.count("}}")
    assert "ab" in out or "ba" in out


@pytest.mark.parametrize(
    "text",
    [
        "{{" * 100_000 + "user" + "}}" * 100_000,
        "{{" * 200_000,
        "}}" * 200_000,
        "{" * 300_000 + "}" * 300_000,
        "{{a{{b}}c" * 20_000,
        "{{if 1}}" * 20_000 + "x" + "{{/if}}" * 20_000,
        "{{if 1}}" * 20_000 + "{{/if}}",
        "{{/if}}" * 20_000,
        "{{if 1}}" + "{{else}}" * 20_000 + "{{/if}}",
        "{{if 1}}{{reverse}}{{trim}}" * 5_000 + "{{/if}}{{/reverse}}{{/trim}}" * 5_000,
        "\\{\\{" * 100_000,
        "{{trim}}\n" * 20_000,
        "{{setvar::a::" + "[" * 50_000 + "}}{{addvar::a::x}}{{getvar::a}}",
        "{{random::" + "::".join(["a"] * 50_000) + "}}",
        "{{datetimeformat " + "x" * 4000 + "}}",
        "{{setvar::a::" + "9" * 5000 + "}}{{incvar::a}}{{getvar::a}}",
        "{{setvar::a::0x" + "f" * 5000 + "}}{{incvar::a}}",
        "{{pick::\ud800::b}}\ud800{{user}}",
        "{{roll:1000d999999999}}" * 20,
        "{{" + "::" * 50_000 + "}}",
        "{{.a" + "=" * 50_000 + "}}",
        "{{time::UTC+" + "9" * 5000 + "}}",
        "{{setvar::x::" + "1" * 200_000 + "x}}{{getvar::x}}{{incvar::x}}{{.x == 1}}",
        "{{setvar::x::" + "1" * 200_000 + ".5e}}{{getvar::x}}",
        "{{.x = " + "7" * 100_000 + "}}{{.x > " + "7" * 100_000 + "}}",
        "{{roll:" + "1" * 100_000 + "d6}}",
        # variable work that produces little text is charged to the budget too
        "{{setvar::a::" + "y" * 300_000 + "}}" + "{{addvar::a::x}}" * 20_000,
        "{{setvar::a::" + "y" * 300_000 + "}}" + "{{.a == 1}}" * 20_000,
        "{{setvar::a::" + "0" * 300_000 + "1}}" + "{{getvar::a}}" * 20_000,
        "{{setvar::a::" + "y" * 300_000 + "}}" + "{{if .a}}x{{/if}}" * 10_000,
        "{{setvar::l::[]}}" + "{{addvar::l::" + "x" * 100 + "}}" * 5_000,
    ],
)
def test_hostile_input_is_fast_and_safe(text: str) -> None:
    started = time.perf_counter()
    out = expand(text, ctx(max_output_chars=1_000_000))
    elapsed = time.perf_counter() - started
    assert isinstance(out, str)
    assert len(out) <= max(1_000_000, len(text))
    assert elapsed < 5.0


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{pick::\ud800::\ud800}}", "\ud800"),
        ("\ud800{{user}}\udfff", "\ud800Alice\udfff"),
        ("{{reverse::a\x00b}}", "b\x00a"),
        ("{{setvar::" + "x" * 300 + "::v}}{{getvar::" + "x" * 300 + "}}", "v"),
    ],
)
def test_odd_characters(text: str, expected: str) -> None:
    assert expand(text, ctx()) == expected


def test_broken_store_does_not_raise() -> None:
    class Exploding(dict[str, Any]):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("store down")

    text = "{{getvar::x}} {{user}}"
    assert expand(text, ctx(local_vars=Exploding())) == text
