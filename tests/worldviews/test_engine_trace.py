"""The trace's match and budget fields (where a key matched, after macros; what an entry cost the
budget), and the macro expansion the engine does: in ST's order, once per key and content per call."""

from __future__ import annotations

from collections import Counter

import pytest

from apps.macros.engine import MacroContext, expand
from apps.providers.tokens import estimate_tokens
from apps.worldviews.engine import ActivationSettings, ChatLine, Entry, MatchedIn, activate

CTX = MacroContext(user="Alice", char="Sera")
CHAT = [ChatLine("Alice", "hello there"), ChatLine("Sera", "a dragon!", role="assistant")]


def run(*entries: Entry, **kwargs):
    kwargs.setdefault("substitute", lambda text: expand(text, CTX))
    kwargs.setdefault("max_context", 100_000)
    return activate(list(entries), CHAT, **kwargs)


def item(result, uid):
    return next(t for t in result.trace if t.uid == uid)


@pytest.mark.parametrize(
    ("entry", "kwargs", "matched_text", "where"),
    [
        pytest.param(Entry(uid=1, key=("dragon",)), {}, "dragon", MatchedIn("chat", 0), id="plain-newest-line"),
        pytest.param(Entry(uid=1, key=("there",)), {}, "there", MatchedIn("chat", 1), id="plain-older-line"),
        pytest.param(Entry(uid=1, key=("{{char}}",)), {}, "Sera", MatchedIn("chat", 0), id="macro-key"),
        pytest.param(Entry(uid=1, key=("/there/",)), {}, "/there/", MatchedIn("chat", 1), id="regex-older-line"),
        pytest.param(
            Entry(uid=1, key=("/\\x01{{user}}:/",)), {}, "/\\x01Alice:/", MatchedIn("chat", 1), id="regex-macro"
        ),
        pytest.param(
            Entry(uid=1, key=("cat",), match_persona_description=True),
            {"extra_scan": {"persona_description": "a cat"}},
            "cat",
            MatchedIn("persona_description"),
            id="plain-extra-source",
        ),
        pytest.param(
            Entry(uid=1, key=("/c.t/",), match_scenario=True),
            {"extra_scan": {"scenario": "a cat"}},
            "/c.t/",
            MatchedIn("scenario"),
            id="regex-extra-source",
        ),
        pytest.param(
            Entry(uid=1, key=("river",)),
            {"scan_injections": ["no", "the river"]},
            "river",
            MatchedIn("injection", 1),
            id="plain-second-injection",
        ),
        pytest.param(
            Entry(uid=1, key=("/river/",)),
            {"scan_injections": ["no", "the river"]},
            "/river/",
            MatchedIn("injection", 1),
            id="regex-second-injection",
        ),
    ],
)
def test_where_the_key_matched(entry, kwargs, matched_text, where):
    result = run(entry, **kwargs)

    traced = item(result, 1)
    assert (traced.status, traced.matched_text, traced.matched_in) == ("activated", matched_text, where)


@pytest.mark.parametrize("key", ["fire", "/fi.e/"])
def test_a_key_found_in_recursion_names_the_entry_whose_expanded_content_holds_it(key):
    result = run(
        Entry(uid=0, key=("dragon",), content="{{char}} fears fire.", lorebook_id=7, order=2),
        Entry(uid=1, key=("hello",), content="Nothing here.", lorebook_id=7, order=3),
        Entry(uid=2, key=(key,), content="Fire burns.", lorebook_id=7, order=1),
    )

    traced = item(result, 2)
    assert (traced.step, traced.matched_in) == (2, MatchedIn("recursion", None, 7, 0))


def test_costs_are_the_expanded_contents_and_the_running_total():
    result = run(
        Entry(uid=0, key=("dragon",), content="{{char}} and {{user}}.", order=2),
        Entry(uid=1, key=("hello",), content="x" * 40, order=1),
    )

    first, second = item(result, 0), item(result, 1)
    assert first.tokens == estimate_tokens("Sera and Alice.\n") == 5
    assert second.tokens == estimate_tokens("x" * 40 + "\n") == 13
    # ST compares tokens(all contents so far, each + "\n") with the budget: ⌈(16 + 41) / 3.35⌉
    assert (first.budget_total, second.budget_total) == (5, 18)
    assert result.budget_used == 18


def test_an_entry_the_budget_drops_keeps_its_match_and_cost():
    settings = ActivationSettings(budget_cap=5)

    result = run(Entry(uid=0, key=("{{char}}",), content="{{char}} and {{user}}."), settings=settings)

    traced = item(result, 0)
    assert (traced.status, traced.reason, traced.matched_key, traced.matched_text) == (
        "skipped",
        "budget",
        "{{char}}",
        "Sera",
    )
    assert (traced.tokens, traced.budget_total) == (5, 5)
    assert traced.detail == "would reach the budget of 5 tokens (5 with its 5)"


def test_the_raw_content_would_have_fit():
    # the same entry without macro expansion costs less than the cap: the cap drops only the expanded one
    settings = ActivationSettings(budget_cap=5)

    result = run(Entry(uid=0, key=("dragon",), content="{{char}}."), settings=settings, substitute=None)

    assert item(result, 0).status == "activated"


def test_each_key_and_content_is_expanded_once_per_call():
    seen: Counter[str] = Counter()

    def counting(text: str) -> str:
        seen[text] += 1
        return expand(text, CTX)

    entries = [
        Entry(uid=0, key=("{{char}}",), content="{{user}} meets step one.", order=9),
        Entry(uid=1, key=("step one",), content="{{user}} then step two.", order=8),
        Entry(uid=2, key=("step two", "{{user}}"), keysecondary=("{{char}}",), selective=True, content="{{char}}!"),
        Entry(uid=3, key=("nowhere {{user}}",), content="{{user}} is never used."),
        Entry(uid=4, constant=True, content="{{char}} always."),
    ]

    result = activate(entries, CHAT, max_context=100_000, substitute=counting)

    assert result.steps >= 3
    assert sorted(t.uid for t in result.trace if t.status == "activated") == [0, 1, 2, 4]
    assert max(seen.values()) == 1
    # the unused entry's content was never expanded (ST expands a content only when it activates)
    assert "{{user}} is never used." not in seen
