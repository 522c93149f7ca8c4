"""The request-wide budget (`MacroBudget`), dice as work, and capped variable stores (`CappedStore`)."""

from __future__ import annotations

import time
from typing import Any

import pytest

from apps.macros.engine import CappedStore, MacroBudget, MacroContext, expand
from apps.macros.engine.context import DIE_COST, MACRO_COST, MAX_DICE_PER_CALL


def ctx(**overrides: Any) -> MacroContext:
    base: dict[str, Any] = {"user": "Alice", "char": "Bob", "seed": 1}
    base.update(overrides)
    return MacroContext(**base)


# --- one budget for many calls ---------------------------------------------------------------------


def test_calls_sharing_a_budget_spend_it_together() -> None:
    budget = MacroBudget(chars=100)
    context = ctx(budget=budget)
    assert expand("{{space::30}}", context) == " " * 30
    assert budget.chars == 100 - 30 - MACRO_COST and not budget.exhausted
    assert expand("{{space::30}}|{{user}}", context) == " " * 30 + "|Alice"
    assert budget.spent == 2 * (30 + MACRO_COST) + len("Alice") + MACRO_COST and not budget.exhausted


def test_a_spent_budget_stops_every_later_call_and_is_marked() -> None:
    budget = MacroBudget(chars=1000)
    context = ctx(budget=budget)
    outputs = [expand("<{{space::999999}}>", context) for _ in range(1000)]
    assert outputs[0] == "<" + " " * (1000 - MACRO_COST) + ">"
    assert set(outputs[1:]) == {"<>"}  # the literal text stays, the macros expand to nothing
    assert budget.exhausted and budget.chars <= 0


def test_without_a_budget_each_call_keeps_its_own_limits() -> None:
    context = ctx(max_output_chars=100)
    for _ in range(3):
        assert expand("{{space::50}}", context) == " " * 50


def test_the_budget_is_not_marked_when_everything_fits() -> None:
    budget = MacroBudget(chars=10_000)
    context = ctx(budget=budget)
    expand("{{setvar::hp::10}}{{decvar::hp}}{{getvar::hp}} {{user}} {{roll::6}}", context)
    assert not budget.exhausted and 0 < budget.spent < 100


def test_a_call_is_also_marked_when_its_own_output_limit_cuts_it() -> None:
    budget = MacroBudget(chars=10_000_000)
    assert expand("{{space::2000}}", ctx(budget=budget, max_output_chars=1000)) == " " * 1000
    assert budget.exhausted


def test_macros_that_print_nothing_cost_work_too() -> None:
    budget = MacroBudget(chars=10_000)
    expand("{{noop}}" * 20_000, ctx(budget=budget))
    assert budget.exhausted


def test_scoped_blocks_and_memo_hits_are_charged() -> None:
    budget = MacroBudget(chars=10_000)
    expand("{{user}}" * 5_000, ctx(budget=budget))  # memoised after the first
    assert budget.exhausted
    budget = MacroBudget(chars=10_000)
    expand("{{if 1}}x{{/if}}" * 20_000, ctx(budget=budget))
    assert budget.exhausted


# --- dice ------------------------------------------------------------------------------------------


def test_dice_count_against_the_requests_dice_and_work() -> None:
    budget = MacroBudget(chars=1_000_000, dice=2500)
    context = ctx(budget=budget)
    first = expand("{{roll:1000d999999999}}|{{roll:1000d999999999}}", context)
    assert all(part.isdigit() for part in first.split("|"))
    assert budget.dice == 500 and budget.spent >= 2000 * DIE_COST and not budget.exhausted
    assert expand("{{roll:1000d6}}", context) == ""  # 1,000 more than the 500 left
    assert budget.exhausted and budget.dice == 500
    assert expand("{{roll:500d6}}", context).isdigit()


def test_huge_sides_are_one_draw_per_die() -> None:
    started = time.perf_counter()
    out = expand("{{roll:1000d999999999}}" * 10, ctx())
    assert len(out) > 10 and time.perf_counter() - started < 2.0


def test_without_a_budget_one_call_throws_at_most_max_dice_per_call() -> None:
    calls = MAX_DICE_PER_CALL // 1000 + 5
    out = expand("{{roll:1000d6}}," * calls, ctx())
    rolled = [part for part in out.split(",") if part]
    assert len(rolled) == MAX_DICE_PER_CALL // 1000


def test_the_dice_attack_is_bounded_by_the_budget() -> None:
    """`{{roll:1000d999999999}}` × 8,000 (184 KB): 8 M dice before; 10,000 now."""
    text = "{{roll:1000d999999999}}" * 8000
    budget = MacroBudget(chars=250_000, dice=10_000)
    started = time.perf_counter()
    expand(text, ctx(budget=budget))
    assert budget.exhausted and budget.dice >= 0
    assert time.perf_counter() - started < 2.0


# --- capped stores ---------------------------------------------------------------------------------


def test_writes_past_the_size_cap_are_refused_and_the_value_kept() -> None:
    store = CappedStore({}, max_chars=1000, max_keys=100)
    context = ctx(local_vars=store)
    expand("{{setvar::a::" + "x" * 500 + "}}{{setvar::b::" + "y" * 600 + "}}{{setvar::a::short}}", context)
    assert store.data == {"a": "short"} and store.refused == 1 and store.changed
    assert store.size == len('{"a":"short",}')


def test_writes_past_the_key_cap_are_refused() -> None:
    store = CappedStore({}, max_chars=100_000, max_keys=3)
    expand("".join(f"{{{{setvar::k{i}::{i}}}}}" for i in range(10)) + "{{setvar::k0::again}}", ctx(local_vars=store))
    assert store.data == {"k0": "again", "k1": "1", "k2": "2"}
    assert store.refused == 7


def test_growth_by_addvar_and_shorthands_stops_at_the_cap() -> None:
    store = CappedStore({"log": []}, max_chars=2000, max_keys=10)
    context = ctx(local_vars=store, global_vars=CappedStore({}, max_chars=2000, max_keys=10))
    expand(("{{addvar::log::" + "x" * 50 + "}}") * 100, context)
    assert 30 <= len(store["log"]) < 40 and store.size <= 2000
    expand("{{.s = a}}" + ("{{.s += " + "b" * 100 + "}}") * 100, context)
    assert store.size <= 2000
    expand("{{setglobalvar::g::x}}" + "{{addglobalvar::g::{{getglobalvar::g}}}}" * 100, context)
    assert context.global_vars.size <= 2000  # type: ignore[attr-defined]


def test_a_store_loaded_above_the_cap_can_only_shrink() -> None:
    store = CappedStore({"big": "x" * 5000, "n": 1}, max_chars=1000, max_keys=10)
    expand("{{setvar::new::1}}{{incvar::n}}{{setvar::big::smaller}}{{setvar::more::1}}", ctx(local_vars=store))
    assert store.data == {"big": "smaller", "n": 2, "more": "1"}
    assert store.refused == 1  # `new`: the store was still over the cap then


def test_deleting_always_works_and_sizes_stay_exact() -> None:
    store = CappedStore({"a": "x" * 10, "b": [1, 2]}, max_chars=100, max_keys=10)
    start = store.size
    del store["a"]
    assert store.size == start - len('"a":"xxxxxxxxxx",')
    store["c"] = 1.5
    assert store.size == 2 + len('"b":[1,2],') + len('"c":1.5,')


@pytest.mark.parametrize(
    "value", [10**5000, float("nan"), {"deep": [[[]]]}, None, True], ids=["huge int", "nan", "nested", "null", "true"]
)
def test_any_json_value_is_measured(value: Any) -> None:
    CappedStore({"v": value}, max_chars=100, max_keys=10)
