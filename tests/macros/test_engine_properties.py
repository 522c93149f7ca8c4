"""Property tests: the engine never raises, leaves macro-free text alone and is deterministic."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.macros.engine import MacroContext, expand
from apps.macros.engine.evaluator import Evaluator

NOW = datetime(2026, 1, 5, 15, 45, 7, tzinfo=UTC)
LEGACY_TOKENS = ("<USER>", "<BOT>", "<CHAR>", "<GROUP>", "<CHARIFNOTGROUP>")

FRAGMENTS = [
    "{{",
    "}}",
    "{",
    "}",
    "::",
    ":",
    " ",
    "\n",
    "\r\n",
    "\\",
    "\\{",
    "\\}",
    "/",
    "#",
    "!",
    ".",
    "$",
    "=",
    "+",
    "-",
    "|",
    "?",
    "<USER>",
    "<BOT>",
    "user",
    "char",
    "setvar",
    "getvar",
    "addvar",
    "incvar",
    "decvar",
    "if",
    "else",
    "/if",
    "trim",
    "/trim",
    "//",
    "///",
    "newline",
    "space",
    "reverse",
    "random",
    "pick",
    "roll",
    "1d6",
    "time",
    "UTC+8",
    "time_UTC-3",
    "datetimeformat",
    "YYYY",
    "LT",
    "timeDiff",
    "idle_duration",
    "original",
    "outlet",
    "banned",
    "comment",
    "noop",
    "x",
    "0",
    "1",
    "99999",
    "主角名字",
    "名字",
    "😀",
    "\ud800",
    ",",
    "\\,",
    "[",
    "]",
    '"',
    "getglobalvar",
    "setglobalvar",
    "hasvar",
    "deletevar",
]
macro_soup = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=8)), max_size=60).map("".join)
plain_text = st.text(max_size=300).filter(
    lambda t: "{{" not in t and "\\{\\{" not in t and "\\}\\}" not in t and not any(tok in t for tok in LEGACY_TOKENS)
)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])


def ctx(**overrides: Any) -> MacroContext:
    base: dict[str, Any] = {
        "user": "Alice",
        "char": "Bob",
        "seed": 42,
        "now": lambda: NOW,
        "parameters": {"主角名字": "李雷", "名字": "{{user}}"},
        "outlets": {"x": "OUT"},
        "original": "ORIG",
        "max_output_chars": 5_000,
    }
    base.update(overrides)
    return MacroContext(**base)


@SETTINGS
@given(macro_soup)
def test_never_raises_and_output_is_bounded(text: str) -> None:
    # The evaluator itself, without expand()'s last-resort fallback, must not raise.
    out = Evaluator(ctx(), text).run()
    assert isinstance(out, str)
    assert len(out) <= max(5_000, len(text))
    assert expand(text, ctx()) == out


@SETTINGS
@given(st.text(max_size=500))
def test_arbitrary_unicode_never_raises(text: str) -> None:
    assert isinstance(Evaluator(ctx(), text).run(), str)


@SETTINGS
@given(plain_text)
def test_macro_free_text_is_unchanged(text: str) -> None:
    assert expand(text, ctx()) == text


@SETTINGS
@given(macro_soup)
def test_deterministic_for_fixed_seed_and_clock(text: str) -> None:
    assert expand(text, ctx()) == expand(text, ctx())


@SETTINGS
@given(st.text(max_size=200))
def test_parameter_values_are_inserted_literally(value: str) -> None:
    assert expand("{{p}}", ctx(parameters={"p": value})) == value


@SETTINGS
@given(st.text(alphabet=st.characters(blacklist_characters="{}\\<"), max_size=100))
def test_escaped_braces_become_literal(body: str) -> None:
    assert expand("\\{\\{" + body + "\\}\\}", ctx()) == "{{" + body + "}}"


@SETTINGS
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), min_size=1, max_size=6), st.integers(0, 10_000))
def test_pick_is_stable_and_valid(options: list[str], seed: int) -> None:
    text = "{{pick::" + "::".join(options) + "}}"
    first = expand(text, ctx(seed=seed))
    assert first in options
    assert expand(text, ctx(seed=seed)) == first
