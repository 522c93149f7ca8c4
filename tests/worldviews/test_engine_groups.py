"""Inclusion groups (override, weights, scoring, sticky groups), probability and the token budget."""

import math
import random

import pytest

from apps.worldviews.engine import ActivationSettings, ChatLine, Entry, activate, entry_hash


def run(entries, *messages, settings=None, **kwargs):
    kwargs.setdefault("max_context", 100_000)
    kwargs.setdefault("rng", random.Random(0))
    chat = [ChatLine("U", m) for m in messages]
    return activate(entries, chat, settings=settings or ActivationSettings(), **kwargs)


def outcome(result):
    return {t.uid: (t.status, t.reason) for t in result.trace}


# ------------------------------------------------------------------------------------ inclusion groups


def test_group_override_picks_highest_order():
    entries = [
        Entry(uid=1, key=("dragon",), group="g", group_override=True, order=10, content="a"),
        Entry(uid=2, key=("dragon",), group="g", group_override=True, order=20, content="b"),
        Entry(uid=3, key=("dragon",), group="g", order=90, content="c"),
    ]
    result = run(entries, "dragon")
    assert outcome(result) == {
        3: ("skipped", "lost_group"),
        2: ("activated", "key_match"),
        1: ("skipped", "lost_group"),
    }
    lost = {t.uid: t.detail for t in result.trace}[1]
    assert "lost inclusion group 'g' to 2" in lost


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5, 6, 7])
def test_group_weights_follow_the_seeded_rng(seed):
    entries = [
        Entry(uid=1, key=("dragon",), group="g", group_weight=100, order=20, content="a"),
        Entry(uid=2, key=("dragon",), group="g", group_weight=300, order=10, content="b"),
    ]
    roll = random.Random(seed).random() * 400
    expected_winner = 1 if roll <= 100 else 2
    result = run(entries, "dragon", rng=random.Random(seed))
    assert [e.uid for e in result.activated] == [expected_winner]


def test_group_weights_distribution():
    entries = [
        Entry(uid=1, key=("dragon",), group="g", group_weight=25, order=20, content="a"),
        Entry(uid=2, key=("dragon",), group="g", group_weight=75, order=10, content="b"),
    ]
    wins = sum(run(entries, "dragon", rng=random.Random(seed)).activated[0].uid == 1 for seed in range(400))
    assert 70 <= wins <= 130  # expected 100


def test_zero_weight_never_wins():
    entries = [
        Entry(uid=1, key=("dragon",), group="g", group_weight=0, content="a"),
        Entry(uid=2, key=("dragon",), group="g", group_weight=100, content="b"),
    ]
    assert all(run(entries, "dragon", rng=random.Random(s)).activated[0].uid == 2 for s in range(20))


@pytest.mark.parametrize(
    ("global_scoring", "scoring_1", "scoring_2", "expected"),
    [
        (True, None, None, {1: "activated", 2: "skipped"}),  # 2 scores lower: removed
        (False, None, True, {1: "activated", 2: "skipped"}),  # per-entry scoring on the loser
        (False, True, None, "roll"),  # loser does not use scoring: the weighted roll decides
        (False, None, None, "roll"),
    ],
)
def test_group_scoring(global_scoring, scoring_1, scoring_2, expected):
    entries = [
        Entry(uid=1, key=("dragon", "red"), group="g", use_group_scoring=scoring_1, order=20, content="a"),
        Entry(uid=2, key=("dragon",), group="g", use_group_scoring=scoring_2, order=10, content="b"),
    ]
    result = run(entries, "red dragon", settings=ActivationSettings(use_group_scoring=global_scoring))
    if expected == "roll":
        winner = 1 if random.Random(0).random() * 200 <= 100 else 2
        assert [e.uid for e in result.activated] == [winner]
    else:
        assert {t.uid: t.status for t in result.trace} == expected
        assert outcome(result)[2] == ("skipped", "group_scoring")


def test_group_scoring_counts_secondary_keys():
    entries = [
        Entry(uid=1, key=("dragon",), keysecondary=("red", "big"), selective_logic=0, group="g", content="a"),
        Entry(uid=2, key=("dragon", "red"), group="g", content="b"),
    ]
    # AND_ANY: 1 + 2 = 3 beats 2
    result = run(entries, "big red dragon", settings=ActivationSettings(use_group_scoring=True))
    assert [e.uid for e in result.activated] == [1]


def test_entry_in_several_groups():
    entries = [
        Entry(uid=1, key=("dragon",), group="a, b", group_override=True, order=5, content="x"),
        Entry(uid=2, key=("dragon",), group="a", content="y"),
        Entry(uid=3, key=("dragon",), group="b", content="z"),
    ]
    assert [e.uid for e in run(entries, "dragon").activated] == [1]


def test_group_already_filled_by_an_earlier_step():
    first = Entry(uid=1, key=("dragon",), group="g", content="the castle")
    later = Entry(uid=2, key=("castle",), group="g", content="castle lore")
    result = run([first, later], "dragon")
    assert outcome(result) == {1: ("activated", "key_match"), 2: ("skipped", "group_already_active")}


def test_sticky_member_holds_its_group():
    sticky = Entry(uid=1, key=("dragon",), group="g", sticky=3, lorebook_id="B", content="a")
    other = Entry(uid=2, key=("dragon",), group="g", group_override=True, lorebook_id="B", content="b")
    state = {"sticky": {"B.1": {"hash": entry_hash(sticky), "start": 1, "end": 10, "protected": False}}}
    result = run([sticky, other], "dragon", chat_length=2, timed_state=state)
    assert outcome(result) == {1: ("activated", "sticky"), 2: ("skipped", "group_sticky")}


def test_groups_are_decided_before_probability():
    winner = Entry(uid=1, key=("dragon",), group="g", group_override=True, probability=0, content="a")
    loser = Entry(uid=2, key=("dragon",), group="g", content="b")
    result = run([winner, loser], "dragon")
    assert outcome(result) == {1: ("skipped", "probability"), 2: ("skipped", "lost_group")}


# ------------------------------------------------------------------------------------------ probability


@pytest.mark.parametrize("seed", range(8))
def test_probability_roll(seed):
    entry = Entry(uid=1, key=("dragon",), probability=50, content="a")
    expected = random.Random(seed).random() * 100 <= 50
    result = run([entry], "dragon", rng=random.Random(seed))
    assert (result.trace[0].status == "activated") is expected
    if not expected:
        assert result.trace[0].reason == "probability"


@pytest.mark.parametrize(
    ("fields", "rolls"),
    [({"probability": 100}, 0), ({"probability": 0, "use_probability": False}, 0), ({"probability": 30}, 1)],
)
def test_probability_only_rolls_when_needed(fields, rolls):
    rng = random.Random(42)
    run([Entry(uid=1, key=("dragon",), content="a", **fields)], "dragon", rng=rng)
    reference = random.Random(42)
    for _ in range(rolls):
        reference.random()
    assert rng.random() == reference.random()


def test_failed_probability_is_not_rerolled_in_recursion():
    a = Entry(uid=1, key=("dragon",), content="castle castle")
    b = Entry(uid=2, key=("castle", "dragon"), probability=1, content="b")
    rng = random.Random(3)  # first roll is > 1
    assert rng.random() * 100 > 1
    result = run([a, b], "dragon", rng=random.Random(3))
    assert outcome(result)[2] == ("skipped", "probability")


# ---------------------------------------------------------------------------------------------- budget


@pytest.mark.parametrize(
    ("percent", "max_context", "cap", "limit"),
    [
        (25, 100, 0, 25),
        (25, 10, 0, 3),  # 2.5 rounds half up, as JS Math.round
        (25, 2, 0, 1),  # round(0.5) = 1
        (1, 10, 0, 1),  # 0 becomes 1
        (25, 100_000, 500, 500),
        (25, 100, 500, 25),  # the cap only lowers
    ],
)
def test_budget_limit(percent, max_context, cap, limit):
    result = run([], "hi", max_context=max_context, settings=ActivationSettings(budget_percent=percent, budget_cap=cap))
    assert result.budget_limit == limit


def test_budget_overflow_uses_greater_or_equal():
    # budget 10 tokens (25 % of 40); a 29-char content + "\n" = 30 chars = 9 tokens fits, 30 chars do not
    fits = Entry(uid=1, key=("dragon",), content="x" * 29)
    assert run([fits], "dragon", max_context=40).trace[0].status == "activated"
    too_big = Entry(uid=1, key=("dragon",), content="x" * 30)
    result = run([too_big], "dragon", max_context=40)
    assert (result.trace[0].status, result.trace[0].reason) == ("skipped", "budget")
    assert result.budget_overflowed


def test_budget_counts_cumulative_content_and_ignore_budget():
    entries = [
        Entry(uid=i, key=("dragon",), content="y" * 33, order=100 - i, ignore_budget=(i == 4)) for i in range(1, 6)
    ]
    # budget 25: 34 chars -> 11 tokens, 68 -> 21, 102 -> 31 >= 25: overflow at the third
    result = run(entries, "dragon", max_context=100)
    assert outcome(result) == {
        1: ("activated", "key_match"),
        2: ("activated", "key_match"),
        3: ("skipped", "budget"),
        4: ("activated", "key_match"),  # ignoreBudget
        5: ("skipped", "budget"),
    }
    assert result.budget_used == math.ceil((34 * 3 - 1) / 3.35)


def test_budget_overflow_stops_recursion():
    a = Entry(uid=1, key=("dragon",), content="castle " + "z" * 20)
    b = Entry(uid=2, key=("zzz",), content="q" * 60)
    c = Entry(uid=3, key=("castle",), content="c")
    result = run([a, b, c], "dragon zzz", max_context=100)
    assert outcome(result) == {
        1: ("activated", "key_match"),
        2: ("skipped", "budget"),
        3: ("skipped", "no_key_match"),
    }
    assert result.steps == 1


def test_constant_entries_are_subject_to_the_budget():
    entry = Entry(uid=1, constant=True, content="w" * 200)
    assert outcome(run([entry], "hi", max_context=100))[1] == ("skipped", "budget")
    entry = Entry(uid=1, constant=True, ignore_budget=True, content="w" * 200)
    assert outcome(run([entry], "hi", max_context=100))[1] == ("activated", "constant")


def test_custom_token_counter():
    entries = [Entry(uid=i, key=("dragon",), content="one two three", order=10 - i) for i in range(1, 4)]
    result = run(entries, "dragon", max_context=28, count_tokens=lambda text: len(text.split()))
    # budget 7 words: 3 words fit, 6 fit, 9 do not
    assert [t.status for t in result.trace] == ["activated", "activated", "skipped"]
    assert result.budget_used == 6
