"""Timed effects per chat: sticky, cooldown, delay, the swipe/regenerate rule, edits, bad state."""

import json
import random

import pytest

from apps.worldviews.engine import ChatLine, Entry, activate, entry_hash, normalize_state

DRAGON = Entry(uid=7, key=("dragon",), content="Dragon lore", sticky=3, cooldown=2, lorebook_id="book")


def turn(entry, length, text, state):
    """One generation at chat length ``length`` whose newest message is ``text``."""
    result = activate(
        [entry],
        [ChatLine("U", text)],
        max_context=10_000,
        timed_state=state,
        chat_length=length,
        rng=random.Random(0),
    )
    return (result.trace[0].status, result.trace[0].reason), result.timed_state


def test_sticky_then_cooldown_timeline():
    # docs example: sticky 3, cooldown 2 — triggered at 2, stuck through 4, cooling 5-6, free at 7
    texts = {1: "nothing", 2: "dragon", 3: "nothing", 4: "nothing", 5: "dragon", 6: "dragon", 7: "dragon"}
    expected = {
        1: ("skipped", "no_key_match"),
        2: ("activated", "key_match"),
        3: ("activated", "sticky"),
        4: ("activated", "sticky"),
        5: ("skipped", "cooldown"),
        6: ("skipped", "cooldown"),
        7: ("activated", "key_match"),
    }
    state = None
    for length in range(1, 8):
        got, state = turn(DRAGON, length, texts[length], state)
        assert got == expected[length], length
        json.dumps(state)  # always JSON-serialisable
    assert state["sticky"]["book.7"]["start"] == 7
    assert state["sticky"]["book.7"]["end"] == 10


def test_state_shape():
    _, state = turn(DRAGON, 2, "dragon", None)
    digest = entry_hash(DRAGON)
    assert state == {
        "sticky": {"book.7": {"hash": digest, "start": 2, "end": 5, "protected": False}},
        "cooldown": {"book.7": {"hash": digest, "start": 2, "end": 4, "protected": False}},
    }


@pytest.mark.parametrize(
    ("swipe_text", "expected"),
    [
        ("nothing", ("skipped", "no_key_match")),  # the effect started by the swiped turn is dropped
        ("dragon", ("activated", "key_match")),  # re-triggered by its key, not by the old sticky
    ],
)
def test_swipe_rule_drops_effects_of_the_replaced_turn(swipe_text, expected):
    _, state = turn(DRAGON, 2, "dragon", None)
    got, state = turn(DRAGON, 2, swipe_text, state)  # swipe/regenerate: same chat length again
    assert got == expected
    if expected[0] == "skipped":
        assert state == {"sticky": {}, "cooldown": {}}


def test_swipe_keeps_a_protected_cooldown():
    state = None
    for length, text in [(2, "dragon"), (3, "x"), (4, "x"), (5, "dragon")]:
        _, state = turn(DRAGON, length, text, state)
    assert state["cooldown"]["book.7"]["protected"] is True
    got, state = turn(DRAGON, 5, "dragon", state)  # swipe of turn 5
    assert got == ("skipped", "cooldown")


def test_cooldown_without_sticky():
    entry = Entry(uid=1, key=("dragon",), content="c", cooldown=2, lorebook_id="b")
    statuses = []
    state = None
    for length in range(1, 6):
        got, state = turn(entry, length, "dragon", state)
        statuses.append(got)
    assert statuses == [
        ("activated", "key_match"),
        ("skipped", "cooldown"),
        ("activated", "key_match"),  # cooldown 2 from length 1 ends at 3
        ("skipped", "cooldown"),
        ("activated", "key_match"),
    ]


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, ("skipped", "delay")),
        (2, ("skipped", "delay")),
        (3, ("activated", "key_match")),
        (9, ("activated", "key_match")),
    ],
)
def test_delay(length, expected):
    entry = Entry(uid=1, key=("dragon",), content="c", delay=3)
    assert turn(entry, length, "dragon", None)[0] == expected


def test_sticky_bypasses_probability_and_recursion_flags():
    entry = Entry(
        uid=7, key=("dragon",), content="c", sticky=5, probability=0, delay_until_recursion=2, lorebook_id="book"
    )
    state = {"sticky": {"book.7": {"hash": entry_hash(entry), "start": 1, "end": 6, "protected": False}}}
    assert turn(entry, 3, "nothing", state)[0] == ("activated", "sticky")


def test_edited_entry_loses_its_effects():
    _, state = turn(DRAGON, 2, "dragon", None)
    edited = Entry(uid=7, key=("dragon",), content="New lore", sticky=3, cooldown=2, lorebook_id="book")
    got, state = turn(edited, 3, "nothing", state)
    assert got == ("skipped", "no_key_match")
    assert "book.7" in state["sticky"]  # kept until its end passes (the entry may come back)
    _, state = turn(edited, 5, "nothing", state)
    assert state["sticky"] == {}


def test_effect_removed_when_entry_no_longer_has_it():
    _, state = turn(DRAGON, 2, "dragon", None)
    plain = Entry(uid=7, key=("dragon",), content="Dragon lore", lorebook_id="book")
    # a different definition has a different hash: treated as missing, then removed at its end
    _, state = turn(plain, 6, "nothing", state)
    assert state == {"sticky": {}, "cooldown": {}}


def test_retrigger_does_not_extend_sticky():
    state = {"sticky": {}, "cooldown": {}}
    _, state = turn(DRAGON, 2, "dragon", state)
    _, state = turn(DRAGON, 3, "dragon", state)
    assert state["sticky"]["book.7"]["end"] == 5


@pytest.mark.parametrize(
    "raw",
    [
        None,
        "junk",
        [],
        {"sticky": "x"},
        {"sticky": {"a.1": "bad"}},
        {"sticky": {"a.1": {"start": "x", "end": 3}}},
        {"cooldown": {1: {"start": 1, "end": 2}}},
        {"sticky": {"book.7": {"hash": 5, "start": 1.0, "end": "9", "protected": "yes"}}},
    ],
)
def test_malformed_state_is_tolerated(raw):
    got, state = turn(DRAGON, 3, "dragon", raw)
    assert got[0] == "activated"
    assert set(state) == {"sticky", "cooldown"}
    json.dumps(state)


def test_normalize_state_keeps_valid_effects():
    raw = {"sticky": {"b.1": {"hash": "h", "start": 1, "end": 4, "protected": False}}, "other": 1}
    assert normalize_state(raw) == {
        "sticky": {"b.1": {"hash": "h", "start": 1, "end": 4, "protected": False}},
        "cooldown": {},
    }


def test_input_state_is_not_mutated():
    _, state = turn(DRAGON, 2, "dragon", None)
    frozen = json.dumps(state, sort_keys=True)
    turn(DRAGON, 7, "x", state)
    assert json.dumps(state, sort_keys=True) == frozen
