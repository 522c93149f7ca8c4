"""Property tests: arbitrary entries, chats and settings never raise; a fixed seed gives a fixed result,
cold (caches cleared) or warm."""

import json
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.worldviews.engine import (
    ActivationSettings,
    CharacterFilter,
    ChatLine,
    Entry,
    activate,
    clear_caches,
    entry_from_st,
    entry_to_st,
)

ALPHABET = "ab 猫cé-_#/\\()[]{}|*+?.^$\n\x01<>@:,"
words = st.text(alphabet=ALPHABET, max_size=8)
keys = st.one_of(
    words,
    st.sampled_from(["a", "猫", "b c", "{{char}}", "<USER>", "/a+/i", "/(a|b)c/", "/[x/", "/(a+)+/", "/\\bb\\b/y"]),
    st.builds(lambda body, flags: f"/{body}/{flags}", words, st.sampled_from(["", "i", "gim", "s", "uy", "ii"])),
)
junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=4),
    st.lists(st.integers(), max_size=2),
)
content = st.one_of(
    words,
    st.builds(
        lambda deco, rest: deco + "\n" + rest,
        st.sampled_from(
            [
                "@@activate",
                "@@dont_activate",
                "@@depth 1",
                "@@role user",
                "@@x\n@@@activate",
                "@@activate_only_every 0",
                "@@exclude_keys a",
                "@@additional_keys b, 猫",
                "@@scan_depth -4",
                "@@position scenario",
            ]
        ),
        words,
    ),
)

st_dicts = st.fixed_dictionaries(
    {},
    optional={
        "uid": st.one_of(st.integers(0, 5), junk),
        "key": st.one_of(st.lists(keys, max_size=3), junk),
        "keysecondary": st.one_of(st.lists(keys, max_size=2), junk),
        "content": st.one_of(content, junk),
        "constant": junk,
        "selective": junk,
        "selectiveLogic": junk,
        "order": junk,
        "position": junk,
        "disable": st.one_of(st.just(False), junk),
        "ignoreBudget": junk,
        "excludeRecursion": junk,
        "preventRecursion": junk,
        "delayUntilRecursion": junk,
        "probability": junk,
        "useProbability": junk,
        "depth": junk,
        "outletName": st.one_of(words, junk),
        "group": st.one_of(st.sampled_from(["g", "g, h", "h", ""]), junk),
        "groupOverride": junk,
        "groupWeight": junk,
        "scanDepth": junk,
        "caseSensitive": junk,
        "matchWholeWords": junk,
        "useGroupScoring": junk,
        "role": junk,
        "sticky": junk,
        "cooldown": junk,
        "delay": junk,
        "matchScenario": junk,
        "characterFilter": st.one_of(junk, st.just({"isExclude": True, "names": ["a"], "tags": ["t"]})),
        "triggers": st.one_of(st.lists(st.sampled_from(["normal", "swipe", "x"]), max_size=2), junk),
    },
)
entries_from_dicts = st.builds(
    lambda d, book, source: entry_from_st(d, lorebook_id=book, source=source),
    st_dicts,
    st.one_of(st.none(), st.sampled_from(["A", "B", 1])),
    st.sampled_from(["chat", "persona", "character", "global", "weird"]),
)
direct_entries = st.builds(
    Entry,
    uid=st.integers(0, 6),
    key=st.lists(keys, max_size=3).map(tuple),
    keysecondary=st.lists(keys, max_size=2).map(tuple),
    content=content,
    constant=st.booleans(),
    selective_logic=st.integers(-1, 5),
    order=st.one_of(st.integers(-5, 300), st.integers(), st.floats(allow_nan=True)),
    position=st.integers(-1, 9),
    depth=st.one_of(st.integers(-2, 5), st.integers()),
    role=st.integers(-1, 4),
    probability=st.one_of(st.integers(-10, 110), st.floats(allow_nan=True)),
    group=st.sampled_from(["", "g", "g,h", " , "]),
    group_weight=st.one_of(st.integers(-5, 100), st.integers(), st.floats(allow_nan=True, allow_infinity=True)),
    group_override=st.booleans(),
    use_group_scoring=st.one_of(st.none(), st.booleans()),
    scan_depth=st.one_of(st.none(), st.integers(-3, 2000), st.integers()),
    delay_until_recursion=st.integers(0, 3),
    exclude_recursion=st.booleans(),
    prevent_recursion=st.booleans(),
    ignore_budget=st.booleans(),
    sticky=st.one_of(st.none(), st.integers(-1, 4)),
    cooldown=st.one_of(st.none(), st.integers(-1, 4)),
    delay=st.one_of(st.none(), st.integers(-1, 4), st.integers()),
    case_sensitive=st.one_of(st.none(), st.booleans()),
    match_whole_words=st.one_of(st.none(), st.booleans()),
    match_persona_description=st.booleans(),
    character_filter=st.one_of(st.none(), st.just(CharacterFilter(names=("a",), tags=("t",)))),
    triggers=st.lists(st.sampled_from(["normal", "swipe", "Quiet"]), max_size=2).map(tuple),
    source=st.sampled_from(["chat", "persona", "character", "global"]),
    lorebook_id=st.sampled_from([None, "A", "B"]),
)
chats = st.lists(
    st.builds(
        ChatLine,
        name=st.text(alphabet="AB猫 ", max_size=4),
        content=st.text(alphabet=ALPHABET, max_size=40),
        role=st.sampled_from(["user", "assistant", "system"]),
        hidden=st.booleans(),
    ),
    max_size=8,
)
activation_settings = st.builds(
    ActivationSettings,
    scan_depth=st.integers(-2, 10),
    budget_percent=st.one_of(st.integers(-5, 100), st.floats(allow_nan=True)),
    budget_cap=st.integers(-5, 200),
    min_activations=st.integers(-1, 4),
    min_activations_depth_max=st.integers(-1, 6),
    max_recursion_steps=st.integers(-1, 4),
    include_names=st.booleans(),
    recursive=st.booleans(),
    case_sensitive=st.booleans(),
    match_whole_words=st.booleans(),
    use_group_scoring=st.booleans(),
    insertion_strategy=st.integers(-1, 3),
)
timed_states = st.one_of(
    st.none(),
    junk,
    st.fixed_dictionaries(
        {
            "sticky": st.dictionaries(
                st.sampled_from(["A.1", "B.2", ".3", "x"]),
                st.fixed_dictionaries({"hash": st.text(max_size=3), "start": junk, "end": junk, "protected": junk}),
                max_size=3,
            )
        }
    ),
)


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


def _substitute(text: str) -> str:
    if "<USER>" in text:
        raise ValueError("broken macro")
    return text.replace("{{char}}", "猫")


def _snapshot(result):
    return (
        [(t.lorebook_id, t.uid, t.status, t.reason, t.detail, t.step) for t in result.trace],
        result.by_position,
        result.depth_injections,
        result.outlets,
        result.examples_top,
        result.examples_bottom,
        json.dumps(result.timed_state, sort_keys=True),
        result.budget_limit,
        result.budget_used,
        [entry_to_st(e) for e in result.activated],
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(st.one_of(entries_from_dicts, direct_entries), max_size=12),
    chat=chats,
    config=activation_settings,
    max_context=st.one_of(st.integers(-10, 5000), st.floats(allow_nan=True)),
    generation_type=st.sampled_from(["normal", "swipe", "QUIET", "", "weird"]),
    state=timed_states,
    seed=st.integers(0, 2**32),
    chat_length=st.one_of(st.none(), st.integers(-2, 20)),
    use_substitute=st.booleans(),
)
def test_never_raises_and_is_deterministic(
    entries, chat, config, max_context, generation_type, state, seed, chat_length, use_substitute
):
    def go():
        return activate(
            entries,
            chat,
            settings=config,
            max_context=max_context,
            generation_type=generation_type,
            timed_state=state,
            rng=random.Random(seed),
            substitute=_substitute if use_substitute else None,
            extra_scan={"persona_description": "猫 a", "scenario": "b c"},
            chat_length=chat_length,
            scan_injections=["a note"],
            character_name="a",
            character_tags=["t"],
        )

    warm_first = go()
    clear_caches()
    cold = go()
    warm = go()
    assert _snapshot(warm_first) == _snapshot(cold) == _snapshot(warm)
    assert len(cold.trace) == len(entries)
    assert {t.status for t in cold.trace} <= {"activated", "skipped"}
    json.dumps(cold.timed_state)
    # the next turn accepts the state this one produced
    activate(entries, chat, settings=config, max_context=1000, timed_state=cold.timed_state, rng=random.Random(seed))


@settings(max_examples=100, deadline=None)
@given(raw=st.dictionaries(st.text(max_size=20), junk, max_size=10))
def test_reader_never_raises(raw):
    entry = entry_from_st(raw)
    assert entry_from_st(entry_to_st(entry)) == entry


REGEX_ALPHABET = "abAB猫 .*+?()[]^$|\\-{}1,2ſK"
REGEX_TOKENS = [
    "a",
    "ab",
    "B",
    "猫",
    " ",
    "\\b",
    "\\B",
    "\\w",
    "\\W",
    "\\d",
    "\\s",
    "\\x01",
    "\\n",
    "\\u0061",
    "(?:",
    "(?=",
    "(?!",
    "(?<=",
    "(?<n>",
    "\\k<n>",
    "\\1",
    ")",
    "[",
    "]",
    "[^",
    "|",
    "*",
    "+",
    "?",
    "{2}",
    "{1,2}",
    ".",
    "^",
    "$",
    "\\/",
    "ſ",
    "K",
    "U: ",
]


@settings(max_examples=300, deadline=None)
@given(
    body=st.one_of(
        st.text(alphabet=REGEX_ALPHABET, min_size=1, max_size=10),
        st.lists(st.sampled_from(REGEX_TOKENS), min_size=1, max_size=8).map("".join),
    ),
    flags=st.sampled_from(["", "i", "m", "s", "is", "y"]),
    messages=st.lists(st.text(alphabet="abAB猫 ſK\n", max_size=12), min_size=1, max_size=4),
)
def test_regex_keys_agree_with_a_direct_search(body, flags, messages):
    """The literal prefilter and the segment index never change a regex key's outcome."""
    from apps.worldviews.engine import parse_regex_key

    key = f"/{body}/{flags}"
    regex = parse_regex_key(key)
    chat = [ChatLine("U", m) for m in messages]
    result = activate(
        [Entry(uid=1, key=(key,), content="x")],
        chat,
        settings=ActivationSettings(scan_depth=len(chat), recursive=False),
        max_context=10_000,
        rng=random.Random(0),
    )
    if regex is None:  # not a regex: a plain key, nothing to compare
        return
    haystack = "\x01" + "\n\x01".join(f"U: {m}".strip() for m in reversed(messages))
    compiled = regex.compiled
    if compiled is None:
        expected = False
    elif regex.sticky:
        expected = compiled.match(haystack) is not None
    else:
        expected = compiled.search(haystack) is not None
    assert (result.trace[0].status == "activated") is expected
