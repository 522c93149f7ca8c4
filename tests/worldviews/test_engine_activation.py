"""Activation rules: secondary logic, constant, scan depth, extra sources, recursion, min activations,
triggers, character filter, decorators, source ordering — table-driven, one rule per table."""

import random

import pytest

from apps.worldviews.engine import (
    ActivationSettings,
    CharacterFilter,
    ChatLine,
    Entry,
    InsertionStrategy,
    SelectiveLogic,
    activate,
)


def run(entries, *messages, settings=None, **kwargs):
    kwargs.setdefault("max_context", 100_000)
    kwargs.setdefault("rng", random.Random(0))
    chat = [ChatLine("U", m) for m in messages]
    return activate(entries, chat, settings=settings or ActivationSettings(), **kwargs)


def outcome(result):
    """uid -> (status, reason, step)"""
    return {t.uid: (t.status, t.reason, t.step) for t in result.trace}


def status(result):
    return {t.uid: t.status for t in result.trace}


# ------------------------------------------------------------------------------------- secondary logic


@pytest.mark.parametrize(
    ("logic", "text", "expected"),
    [
        (SelectiveLogic.AND_ANY, "dragon red", "activated"),
        (SelectiveLogic.AND_ANY, "dragon red blue", "activated"),
        (SelectiveLogic.AND_ANY, "dragon", "skipped"),
        (SelectiveLogic.NOT_ALL, "dragon red", "activated"),
        (SelectiveLogic.NOT_ALL, "dragon red blue", "skipped"),
        (SelectiveLogic.NOT_ALL, "dragon", "activated"),
        (SelectiveLogic.NOT_ANY, "dragon red", "skipped"),
        (SelectiveLogic.NOT_ANY, "dragon red blue", "skipped"),
        (SelectiveLogic.NOT_ANY, "dragon", "activated"),
        (SelectiveLogic.AND_ALL, "dragon red", "skipped"),
        (SelectiveLogic.AND_ALL, "dragon red blue", "activated"),
        (SelectiveLogic.AND_ALL, "dragon", "skipped"),
    ],
)
def test_secondary_logic(logic, text, expected):
    entry = Entry(uid=1, key=("dragon",), keysecondary=("red", "blue"), selective_logic=logic, content="c")
    result = run([entry], text)
    assert result.trace[0].status == expected
    if expected == "skipped":
        assert result.trace[0].reason == "secondary_logic"


def test_not_selective_ignores_secondary_keys():
    entry = Entry(uid=1, key=("dragon",), keysecondary=("red",), selective=False, content="c")
    assert status(run([entry], "dragon")) == {1: "activated"}


def test_primary_key_is_required_even_with_secondary_match():
    entry = Entry(uid=1, key=("dragon",), keysecondary=("red",), content="c")
    assert outcome(run([entry], "red"))[1][:2] == ("skipped", "no_key_match")


# ------------------------------------------------------------------------------------------- constant


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"constant": True}, ("activated", "constant")),
        ({"constant": True, "key": ("never",)}, ("activated", "constant")),
        ({"constant": True, "disable": True}, ("skipped", "disabled")),
        ({"constant": True, "probability": 0}, ("skipped", "probability")),
        ({"constant": True, "probability": 0, "use_probability": False}, ("activated", "constant")),
        ({"constant": False}, ("skipped", "no_keys")),
    ],
)
def test_constant(fields, expected):
    entry = Entry(uid=1, content="always", **fields)
    assert outcome(run([entry], "hello"))[1][:2] == expected


# ----------------------------------------------------------------------------------------- scan depth


@pytest.mark.parametrize(
    ("global_depth", "entry_depth", "expected"),
    [
        (2, None, "skipped"),  # chat newest first: "c", "b", "dragon a" -> dragon is 3 deep
        (3, None, "activated"),
        (2, 3, "activated"),  # per-entry depth beats the global one
        (5, 2, "skipped"),
        (0, None, "skipped"),  # depth 0: no chat message is scanned
    ],
)
def test_scan_depth(global_depth, entry_depth, expected):
    entry = Entry(uid=1, key=("dragon",), scan_depth=entry_depth, content="c")
    result = run([entry], "dragon a", "b", "c", settings=ActivationSettings(scan_depth=global_depth))
    assert result.trace[0].status == expected


def test_scan_depth_zero_still_scans_extras_injections_and_recursion():
    # decided: depth 0 scans no message but still the extra sources, injections and recursion buffer
    scenario = Entry(uid=1, key=("castle",), match_scenario=True, scan_depth=0, content="c1")
    injected = Entry(uid=2, key=("note",), scan_depth=0, content="mentions tower")
    recursed = Entry(uid=3, key=("tower",), scan_depth=0, content="c3")
    result = run(
        [scenario, injected, recursed],
        "castle note tower",
        extra_scan={"scenario": "An old castle."},
        scan_injections=["Author's note"],
    )
    assert status(result) == {1: "activated", 2: "activated", 3: "activated"}


@pytest.mark.parametrize(
    ("flag", "source"),
    [
        ("match_persona_description", "persona_description"),
        ("match_character_description", "character_description"),
        ("match_character_personality", "characterPersonality"),  # ST camelCase names accepted
        ("match_character_depth_prompt", "character_depth_prompt"),
        ("match_scenario", "scenario"),
        ("match_creator_notes", "creator_notes"),
    ],
)
def test_extra_match_sources(flag, source):
    with_flag = Entry(uid=1, key=("dragon",), content="c", **{flag: True})
    without = Entry(uid=2, key=("dragon",), content="c")
    result = run([with_flag, without], "hello", extra_scan={source: "likes dragon lore"})
    assert status(result) == {1: "activated", 2: "skipped"}


def test_hidden_and_system_messages_are_not_scanned():
    entry = Entry(uid=1, key=("dragon",), content="c")
    chat = [ChatLine("U", "dragon", hidden=True), ChatLine("Narrator", "dragon", role="system"), ChatLine("U", "hi")]
    result = activate([entry], chat, max_context=1000, settings=ActivationSettings(scan_depth=10))
    assert result.trace[0].status == "skipped"


# ------------------------------------------------------------------------------------------ recursion


def _chain(**b_fields):
    a = Entry(uid=1, key=("dragon",), content="lives in the castle", order=10)
    b = Entry(uid=2, key=("castle",), content="castle lore", order=20, **b_fields)
    return [a, b]


@pytest.mark.parametrize(
    ("recursive", "a_fields", "b_fields", "expected_b"),
    [
        (True, {}, {}, ("activated", "key_match", 2)),
        (False, {}, {}, ("skipped", "no_key_match", 1)),
        (True, {"prevent_recursion": True}, {}, ("skipped", "no_key_match", 1)),
        (True, {}, {"exclude_recursion": True}, ("skipped", "exclude_recursion", 2)),
        (True, {}, {"delay_until_recursion": 1}, ("activated", "key_match", 2)),
        (False, {}, {"delay_until_recursion": 1}, ("skipped", "delay_until_recursion", 1)),
    ],
)
def test_recursion(recursive, a_fields, b_fields, expected_b):
    a = Entry(uid=1, key=("dragon",), content="lives in the castle", order=10, **a_fields)
    b = Entry(uid=2, key=("castle",), content="castle lore", order=20, **b_fields)
    result = run([a, b], "a dragon", settings=ActivationSettings(recursive=recursive))
    assert outcome(result)[1][0] == "activated"
    assert outcome(result)[2] == expected_b


def test_delay_until_recursion_levels():
    a = Entry(uid=1, key=("dragon",), content="castle", order=10)
    b = Entry(uid=2, key=("castle",), content="nothing new", delay_until_recursion=1)
    c = Entry(uid=3, key=("castle",), content="tower", delay_until_recursion=2)
    d = Entry(uid=4, key=("dragon",), content="x", delay_until_recursion=True)  # true == level 1
    result = run([a, b, c, d], "a dragon")
    got = outcome(result)
    assert got[1] == ("activated", "key_match", 1)
    assert got[2] == ("activated", "key_match", 2)
    assert got[4] == ("activated", "key_match", 2)
    # level 2 opens only once level-1 recursion has nothing left to do
    assert got[3] == ("activated", "key_match", 4)


def test_delay_until_recursion_trace_when_never_reached():
    b = Entry(uid=2, key=("castle",), content="c", delay_until_recursion=1)
    result = run([b], "castle")
    assert result.trace[0].reason == "delay_until_recursion"
    assert "key 'castle' matched" in result.trace[0].detail


@pytest.mark.parametrize(("max_steps", "expected", "steps"), [(0, 4, 5), (1, 1, 1), (2, 2, 2), (3, 3, 3)])
def test_max_recursion_steps(max_steps, expected, steps):
    entries = [
        Entry(uid=1, key=("k1",), content="k2"),
        Entry(uid=2, key=("k2",), content="k3"),
        Entry(uid=3, key=("k3",), content="k4"),
        Entry(uid=4, key=("k4",), content="end"),
    ]
    result = run(entries, "k1", settings=ActivationSettings(max_recursion_steps=max_steps))
    assert len(result.activated) == expected
    assert result.steps == steps  # unlimited: a 5th step finds nothing new


def test_recursion_never_removes_activated_entries():
    # NOT_ANY entry activated in step 1 stays even if recursion later brings its secondary key
    a = Entry(uid=1, key=("dragon",), keysecondary=("fire",), selective_logic=SelectiveLogic.NOT_ANY, content="x")
    b = Entry(uid=2, key=("dragon",), content="fire everywhere")
    assert status(run([a, b], "dragon")) == {1: "activated", 2: "activated"}


# ------------------------------------------------------------------------------------- min activations


@pytest.mark.parametrize(
    ("position", "depth_max", "expected"),
    [
        (5, 0, ("activated", 5)),  # deepen one message per step up to the chat length
        (4, 3, ("activated", 4)),  # ST scans one message beyond the max depth before stopping
        (5, 3, ("skipped", 1)),
    ],
)
def test_min_activations(position, depth_max, expected):
    messages = ["filler"] * 5
    messages[5 - position] = "a dragon"  # position = depth counted from the newest
    entry = Entry(uid=1, key=("dragon",), content="c")
    settings = ActivationSettings(scan_depth=1, min_activations=1, min_activations_depth_max=depth_max)
    result = run([entry], *messages, settings=settings)
    assert (result.trace[0].status, result.trace[0].step) == expected


def test_min_activations_satisfied_stops_deepening():
    entries = [Entry(uid=1, key=("near",), content="c"), Entry(uid=2, key=("far",), content="c")]
    settings = ActivationSettings(scan_depth=1, min_activations=1)
    result = run(entries, "far", "x", "near", settings=settings)
    assert status(result) == {1: "activated", 2: "skipped"}


@pytest.mark.parametrize(("recursive", "expected"), [(False, "skipped"), (True, "activated")])
def test_min_activations_steps_do_not_scan_the_recursion_buffer(recursive, expected):
    # "tower" is only in A's content: a min-activations step does not see it; a recursion step does
    a = Entry(uid=1, key=("near",), content="tower")
    b = Entry(uid=2, key=("tower",), content="c")
    settings = ActivationSettings(scan_depth=1, min_activations=3, recursive=recursive)
    result = run([a, b], "far", "near", settings=settings)
    assert status(result)[2] == expected
    assert result.steps >= 2


# -------------------------------------------------------------------------------- triggers and filters


@pytest.mark.parametrize(
    ("triggers", "generation_type", "expected"),
    [
        ((), "normal", ("activated", "constant")),
        (("normal",), "normal", ("activated", "constant")),
        (("swipe", "regenerate"), "normal", ("skipped", "trigger_mismatch")),
        (("swipe",), "swipe", ("activated", "constant")),
        (("Continue",), "continue", ("activated", "constant")),
        (("quiet",), "impersonate", ("skipped", "trigger_mismatch")),
    ],
)
def test_triggers(triggers, generation_type, expected):
    entry = Entry(uid=1, constant=True, triggers=triggers, content="c")
    assert outcome(run([entry], "hi", generation_type=generation_type))[1][:2] == expected


@pytest.mark.parametrize(
    ("flt", "name", "tags", "expected"),
    [
        (CharacterFilter(names=("alice.png",)), "alice.png", None, "activated"),
        (CharacterFilter(names=("alice.png",)), "bob.png", None, "skipped"),
        (CharacterFilter(names=("alice.png",)), None, None, "skipped"),
        (CharacterFilter(is_exclude=True, names=("alice.png",)), "alice.png", None, "skipped"),
        (CharacterFilter(is_exclude=True, names=("alice.png",)), "bob.png", None, "activated"),
        (CharacterFilter(tags=("fantasy",)), "x", ["fantasy", "elf"], "activated"),
        (CharacterFilter(tags=("fantasy",)), "x", ["scifi"], "skipped"),
        (CharacterFilter(tags=("fantasy",)), "x", None, "activated"),  # no tag data: not applied
        (CharacterFilter(is_exclude=True, tags=("fantasy",)), "x", ["fantasy"], "skipped"),
    ],
)
def test_character_filter(flt, name, tags, expected):
    entry = Entry(uid=1, constant=True, character_filter=flt, content="c")
    result = run([entry], "hi", character_name=name, character_tags=tags)
    assert result.trace[0].status == expected
    if expected == "skipped":
        assert result.trace[0].reason == "character_filter"


# -------------------------------------------------------------------------------------------- decorators


@pytest.mark.parametrize(
    ("content", "text", "chat_length", "expected", "inserted"),
    [
        ("@@activate\nForced", "hi", None, ("activated", "decorator_activate"), "Forced"),
        ("@@dont_activate\nNever", "dragon", None, ("skipped", "decorator_dont_activate"), ""),
        ("@@activate\n@@dont_activate\nBoth", "hi", None, ("activated", "decorator_activate"), "Both"),
        ("@@unknown_thing 1\n@@@activate\nFallback", "hi", None, ("activated", "decorator_activate"), "Fallback"),
        ("@@activate\n@@@dont_activate\nKnown", "hi", None, ("activated", "decorator_activate"), "Known"),
        ("@@activate_only_after 3\nLate", "dragon", 2, ("skipped", "decorator_activate_only_after"), ""),
        ("@@activate_only_after 3\nLate", "dragon", 3, ("activated", "key_match"), "Late"),
        ("@@activate_only_every 2\nEven", "dragon", 3, ("skipped", "decorator_activate_only_every"), ""),
        ("@@activate_only_every 2\nEven", "dragon", 4, ("activated", "key_match"), "Even"),
        ("@@additional_keys castle, tower\nMore", "a tower", None, ("activated", "key_match"), "More"),
        ("@@exclude_keys orc\nNo orcs", "dragon orc", None, ("skipped", "decorator_exclude_keys"), ""),
        ("@@exclude_keys orc\nNo orcs", "dragon elf", None, ("activated", "key_match"), "No orcs"),
        ("@@activate", "hi", None, ("activated", "decorator_activate"), ""),  # only decorators: empty content
        ("Text\n@@activate", "hi", None, ("skipped", "no_key_match"), ""),  # not at the top: plain text
    ],
)
def test_decorators(content, text, chat_length, expected, inserted):
    entry = Entry(uid=1, key=("dragon",), content=content)
    result = run([entry], text, chat_length=chat_length)
    assert outcome(result)[1][:2] == expected
    assert result.by_position["before"] == inserted


def test_dont_activate_beats_constant():
    entry = Entry(uid=1, constant=True, content="@@dont_activate\nx")
    assert outcome(run([entry], "hi"))[1][:2] == ("skipped", "decorator_dont_activate")


def test_decorators_depth_role_and_scan_depth():
    entry = Entry(uid=1, key=("dragon",), content="@@depth 2\n@@role assistant\n@@scan_depth 3\nDeep lore")
    result = run([entry], "dragon", "b", "c")
    assert [(d.depth, d.role, d.content) for d in result.depth_injections] == [(2, "assistant", "Deep lore")]


# ----------------------------------------------------------------------------------------- sources


def _sourced(strategy):
    entries = [
        Entry(uid="g1", constant=True, content="g1", source="global", order=50, lorebook_id="G"),
        Entry(uid="g2", constant=True, content="g2", source="global", order=100, lorebook_id="G"),
        Entry(uid="c1", constant=True, content="c1", source="character", order=100, lorebook_id="C"),
        Entry(uid="c2", constant=True, content="c2", source="character", order=70, lorebook_id="C"),
        Entry(uid="p1", constant=True, content="p1", source="persona", order=1, lorebook_id="P"),
        Entry(uid="h1", constant=True, content="h1", source="chat", order=2, lorebook_id="H"),
    ]
    result = run(entries, "hi", settings=ActivationSettings(insertion_strategy=strategy))
    return [t.uid for t in result.trace]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        (InsertionStrategy.CHARACTER_FIRST, ["h1", "p1", "c1", "c2", "g2", "g1"]),
        (InsertionStrategy.GLOBAL_FIRST, ["h1", "p1", "g2", "g1", "c1", "c2"]),
        (InsertionStrategy.EVENLY, ["h1", "p1", "g2", "c1", "c2", "g1"]),  # ties: global first
    ],
)
def test_source_order(strategy, expected):
    assert _sourced(strategy) == expected


def test_duplicate_entries_are_kept_once():
    chat_copy = Entry(uid=1, constant=True, content="x", source="chat", lorebook_id="B")
    global_copy = Entry(uid=1, constant=True, content="x", source="global", lorebook_id="B")
    result = run([global_copy, chat_copy], "hi")
    assert [(t.source, t.status, t.reason) for t in result.trace] == [
        ("chat", "activated", "constant"),
        ("global", "skipped", "duplicate"),
    ]
    assert result.by_position["before"] == "x"


def test_disabled_entry():
    assert outcome(run([Entry(uid=1, key=("dragon",), disable=True)], "dragon"))[1] == ("skipped", "disabled", 0)
