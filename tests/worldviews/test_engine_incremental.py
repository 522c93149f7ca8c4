"""Incremental work: long recursion chains (each step scans only the new content) and entry sets
derived from a previous one (per-entry preparation cache, patched key index and scan order) must give
exactly the results of a from-scratch activation."""

import dataclasses
import random

import pytest

from apps.worldviews.engine import ActivationSettings, ChatLine, Entry, activate, clear_caches


@pytest.fixture(autouse=True)
def _unhurried_regex_keys():
    """These tests are about what activates, not about time: the regex time limits (wall clock) are
    lifted so that a loaded machine cannot cut a chain short (tests/worldviews/test_engine_regex_keys.py
    tests the limits)."""
    from apps.worldviews.engine.matching import RegexLimits, default_limits, set_default_limits

    before = default_limits()
    set_default_limits(RegexLimits(timeout=10.0, budget=600.0))
    yield
    set_default_limits(before)


def chain(size, **fields):
    keys = [f"link{i}x" for i in range(size + 1)]
    return [
        Entry(uid=i, key=(keys[i],), content=f"Entry {i} leads on to {keys[i + 1]}.", lorebook_id="chain", **fields)
        for i in range(size)
    ], [ChatLine("U", f"Tell me about {keys[0]}.")]


def run(entries, chat, settings=None, **kwargs):
    kwargs.setdefault("max_context", 10**8)
    kwargs.setdefault("rng", random.Random(0))
    return activate(entries, chat, settings=settings or ActivationSettings(recursive=True), **kwargs)


# --------------------------------------------------------------------------------------- recursion chain


def test_long_chain_activates_every_entry_in_order():
    entries, chat = chain(1500)
    result = run(entries, chat)
    assert result.steps == 1501  # one entry per step, then a step that finds nothing new
    steps = {t.uid: t.step for t in result.trace}
    assert all(t.status == "activated" for t in result.trace)
    assert [steps[i] for i in range(1500)] == list(range(1, 1501))
    assert [t.matched_key for t in sorted(result.trace, key=lambda t: t.step)] == [f"link{i}x" for i in range(1500)]


def test_long_chain_respects_max_recursion_steps():
    entries, chat = chain(400)
    result = run(entries, chat, ActivationSettings(recursive=True, max_recursion_steps=25))
    activated = {e.uid for e in result.activated}
    assert activated == set(range(25))
    assert result.steps == 25


def test_long_chain_stops_at_the_budget():
    entries, chat = chain(400)
    result = run(entries, chat, max_context=4000)  # 25 % = 1000 tokens ≈ 3,350 characters
    activated = sorted(e.uid for e in result.activated)
    assert activated == list(range(len(activated)))
    assert 50 < len(activated) < 400
    assert result.budget_overflowed
    assert result.budget_used <= result.budget_limit


def test_chain_without_recursion_stops_after_the_first_entry():
    entries, chat = chain(50)
    result = run(entries, chat, ActivationSettings(recursive=False))
    assert [e.uid for e in result.activated] == [0]


def test_chain_prevent_recursion_breaks_the_chain():
    entries, chat = chain(50)
    entries[10] = dataclasses.replace(entries[10], prevent_recursion=True)
    result = run(entries, chat)
    assert sorted(e.uid for e in result.activated) == list(range(11))


def test_chain_keys_from_min_activations_do_not_use_the_recursion_buffer():
    entries, chat = chain(30)
    settings = ActivationSettings(recursive=True, min_activations=100, scan_depth=1)
    result = run(entries, [ChatLine("U", "nothing here"), *chat], settings)
    assert sorted(e.uid for e in result.activated) == list(range(30))


# ------------------------------------------------------------------------- derived (edited) entry sets


def book(seed=5, size=300):
    rng = random.Random(seed)
    words = [f"w{i}q" for i in range(200)]
    entries = []
    for uid in range(size):
        entries.append(
            Entry(
                uid=uid,
                key=tuple(rng.sample(words, rng.randint(1, 2))),
                keysecondary=(rng.choice(words),) if rng.random() < 0.2 else (),
                selective_logic=rng.choice([0, 1, 2, 3]),
                content=" ".join(rng.choice(words + ["filler"] * 200) for _ in range(12)),
                order=rng.randint(1, 50),
                group=f"g{rng.randint(0, 5)}" if rng.random() < 0.2 else "",
                probability=rng.choice([100, 100, 50]),
                constant=rng.random() < 0.02,
                lorebook_id=f"b{uid % 3}",
                source=rng.choice(["global", "character", "chat"]),
            )
        )
    chat = [ChatLine("U", " ".join(rng.choice(words + ["hello"] * 300) for _ in range(40))) for _ in range(6)]
    return entries, chat


def snapshot(result):
    return (
        [(e.lorebook_id, e.uid, e.content) for e in result.activated],
        result.by_position,
        [tuple(t) for t in result.trace],
        result.steps,
        result.budget_used,
        result.timed_state,
    )


EDITS = [
    ("content", lambda e: dataclasses.replace(e, content=e.content + " w7q w8q")),
    ("key", lambda e: dataclasses.replace(e, key=("w1q", "brand new key"))),
    ("secondary", lambda e: dataclasses.replace(e, keysecondary=("w2q",), selective=True)),
    ("order", lambda e: dataclasses.replace(e, order=999)),
    ("source", lambda e: dataclasses.replace(e, source="chat")),
    ("uid dupe", lambda e: dataclasses.replace(e, uid=0, lorebook_id="b0")),
    ("constant", lambda e: dataclasses.replace(e, constant=True)),
    ("disabled", lambda e: dataclasses.replace(e, disable=True)),
    ("probability", lambda e: dataclasses.replace(e, probability=10)),
    ("group", lambda e: dataclasses.replace(e, group="g1")),
    ("decorator", lambda e: dataclasses.replace(e, content="@@activate\n" + e.content)),
    ("delay", lambda e: dataclasses.replace(e, delay_until_recursion=1)),
    ("scan depth", lambda e: dataclasses.replace(e, scan_depth=6)),
    ("regex key", lambda e: dataclasses.replace(e, key=("/w1\\dq/i",))),
    ("sticky", lambda e: dataclasses.replace(e, sticky=3)),
    ("comment", lambda e: dataclasses.replace(e, comment="renamed")),
]


@pytest.mark.parametrize(("name", "edit"), EDITS, ids=[name for name, _ in EDITS])
@pytest.mark.parametrize("positions", [(0,), (7,), (3, 150, 299)])
def test_edited_set_matches_a_cold_activation(name, edit, positions):
    entries, chat = book()
    settings = ActivationSettings(recursive=True, scan_depth=4)
    clear_caches()
    run(entries, chat, settings)  # warm: the edited set is derived from this one
    edited = list(entries)
    for i in positions:
        edited[i] = edit(edited[i])
    incremental = run(edited, chat, settings)
    clear_caches()
    cold = run(edited, chat, settings)
    assert snapshot(incremental) == snapshot(cold)
    # and back: the original set, from the caches, is unchanged
    again = run(entries, chat, settings)
    clear_caches()
    assert snapshot(again) == snapshot(run(entries, chat, settings))


@pytest.mark.parametrize("edits", [(), (5,), (0, 100, 299)])
def test_rebuilt_entries_match_a_cold_activation(edits):
    """Entries rebuilt from storage (new, mostly equal objects) after an edit: derived by value from the
    last set; unchanged entries may come back as the cached equal objects, as for a value-cache hit."""
    entries, chat = book()
    clear_caches()
    run(entries, chat)
    rebuilt = [dataclasses.replace(e) for e in entries]
    for i in edits:
        rebuilt[i] = dataclasses.replace(rebuilt[i], content=rebuilt[i].content + " w3q changed", order=7)
    result = run(rebuilt, chat)
    clear_caches()
    assert snapshot(result) == snapshot(run(rebuilt, chat))
    assert result.activated == run(rebuilt, chat).activated


def test_unhashable_entries_are_still_activated():
    entries, chat = book(size=40)
    odd = [dataclasses.replace(e, triggers=["normal"]) for e in entries]  # a list: the Entry is unhashable
    clear_caches()
    first = run(odd, chat)
    odd[3] = dataclasses.replace(odd[3], content="w1q w2q")
    warm = run(odd, chat)
    clear_caches()
    assert snapshot(warm) == snapshot(run(odd, chat))
    assert first.trace


def test_reordered_and_resized_sets_match_a_cold_activation():
    entries, chat = book()
    clear_caches()
    run(entries, chat)
    for variant in (list(reversed(entries)), entries[:-1], [*entries, dataclasses.replace(entries[0], uid=1000)]):
        warm = run(variant, chat)
        clear_caches()
        assert snapshot(warm) == snapshot(run(variant, chat))
        run(entries, chat)


def test_many_successive_edits_stay_consistent():
    entries, chat = book(seed=9)
    settings = ActivationSettings(recursive=True, scan_depth=3)
    clear_caches()
    rng = random.Random(4)
    current = list(entries)
    for _ in range(15):
        i = rng.randrange(len(current))
        _, edit = rng.choice(EDITS)
        current[i] = edit(current[i])
        warm = run(current, chat, settings)
        clear_caches()
        assert snapshot(warm) == snapshot(run(current, chat, settings))
        # rebuild the caches from an older set so the next edit is derived incrementally again
        run(current, chat, settings)


def test_a_small_per_entry_cache_evicts_and_stays_correct(monkeypatch):
    from apps.worldviews.engine import compile as engine_compile

    monkeypatch.setattr(engine_compile, "_PREP_CACHE_SIZE", 40)
    entries, chat = book(size=120)
    clear_caches()
    run(entries, chat)
    assert len(engine_compile._PREPS) <= 40
    rebuilt = [dataclasses.replace(e, order=e.order + 1) for e in entries]  # every entry changed
    warm = run(rebuilt, chat)
    assert len(engine_compile._PREPS) <= 40
    clear_caches()
    assert snapshot(warm) == snapshot(run(rebuilt, chat))


@pytest.mark.parametrize(
    "pattern",
    [
        "/{key}s?\\b/i",  # bounded: searched from just before the newest content first
        "/(?<=about ){key}/",  # lookbehind into older text
        "/{key}(?=\\.)/",  # lookahead
        "/{key}\\. here$/m",  # anchored at line ends
        "/{key}.*here/",  # unbounded: whole-text search only
    ],
)
def test_regex_keyed_chain_activates_every_entry_in_order(pattern):
    size = 300
    keys = [f"link{i}x" for i in range(size + 1)]
    entries = [
        Entry(uid=i, key=(pattern.format(key=keys[i]),), content=f"Entry {i} leads on to {keys[i + 1]}. here")
        for i in range(size)
    ]
    result = run(entries, [ChatLine("U", f"Entry about {keys[0]}. here")])
    steps = {t.uid: t.step for t in result.trace if t.status == "activated"}
    if pattern.startswith("/(?<=about"):
        assert steps == {0: 1}  # only the chat line has "about " before the key
    else:
        assert steps == {i: i + 1 for i in range(size)}


def test_regex_that_only_matches_older_text_is_still_found():
    entries = [
        Entry(uid=0, key=("alpha",), content="beta"),
        Entry(uid=1, key=("beta",), content="gamma"),
        Entry(uid=2, key=("gamma",), content="delta"),
        # its literal "alpha" is only in the chat line; its lookahead needs the first recursion content
        Entry(uid=3, key=("/alpha[\\s\\S]*gamma/",), content="done", delay_until_recursion=2),
    ]
    result = run(entries, [ChatLine("U", "alpha")])
    assert {e.uid for e in result.activated} == {0, 1, 2, 3}


def test_bounded_regex_matching_before_the_newest_content_falls_back_to_a_full_search():
    filler = " ".join(["filler"] * 30)
    entries = [
        Entry(uid=0, key=("start",), content=f"one {filler}"),
        Entry(uid=1, key=("one",), content=f"two {filler}"),
        Entry(uid=2, key=("two",), content="omega"),
        # width 5: the match ("alpha" in the chat line) lies far before the newest content, which only
        # completes its lookahead
        Entry(uid=3, key=("/alpha(?=[\\s\\S]*omega)/",), content="found"),
    ]
    result = run(entries, [ChatLine("U", f"start alpha {filler}")])
    steps = {t.uid: t.step for t in result.trace if t.status == "activated"}
    assert steps == {0: 1, 1: 2, 2: 3, 3: 4}
