"""Key matching: plain keys, case sensitivity, whole words (incl. CJK), regex keys, macros in keys."""

import random

import pytest

from apps.worldviews.engine import ActivationSettings, ChatLine, Entry, activate, parse_regex_key
from apps.worldviews.engine.matching import SUB, PlainMatcher, match_plain, plain_kind


def _activated(entry: Entry, *messages: str, **settings) -> bool:
    chat = [ChatLine("U", m) for m in messages]
    result = activate([entry], chat, settings=ActivationSettings(**settings), max_context=100_000, rng=random.Random(0))
    return result.trace[0].status == "activated"


@pytest.mark.parametrize(
    ("key", "text", "case_sensitive", "whole_words", "expected"),
    [
        ("dragon", "a dragon appears", False, True, True),
        ("dragon", "two dragons", False, True, False),
        ("dragon", "two dragons", False, False, True),
        ("Dragon", "a dragon", True, True, False),
        ("Dragon", "a Dragon", True, True, True),
        ("Dragon", "a DRAGON", False, True, True),
        ("AI", "Welcome to Maine", False, False, True),  # ST's substring false positive…
        ("AI", "Welcome to Maine", False, True, False),  # …avoided by whole words
        ("na", "a naïve knight", False, True, False),  # ST's ASCII \W would match here
        ("café", "un café noir", False, True, True),
        ("кот", "мой котик", False, True, False),
        ("кот", "мой кот, да", False, True, True),
        ("猫", "我的猫很可爱", False, True, True),  # CJK key: substring
        ("魔法师", "她是魔法师们的老师", False, True, True),
        ("魔法师", "她是魔法使", False, True, False),
        # a CJK key next to Latin letters or digits still matches (ST's `(?:^|\W)魔法(?:$|\W)` does not:
        # `I` and `3` are ASCII word characters) — docs/worldinfo.md §8.1
        ("魔法", "他学会了AI魔法", False, True, True),
        ("章", "翻到第3章了", False, True, True),
        ("猫", "Hello猫world", False, True, True),
        ("ねこ", "うちのねこです", False, True, True),
        ("고양이", "고양이가 좋아요", False, True, True),  # Hangul key: substring
        ("cat", "我的cat很可爱", False, True, True),  # Latin key: CJK characters are boundaries
        ("cat", "我的catfish很大", False, True, False),
        ("#hello", "say #hello there", False, True, True),
        ("#hello", "say a#hello there", False, True, False),
        ("c++", "I write c++ daily", False, True, True),
        ("new york", "off to new yorkshire", False, True, True),  # keys with spaces: substring (as ST)
        ("  dragon  ", "a dragon", False, True, True),  # keys are trimmed
        ("u: dragon", "dragon", False, True, True),  # the "Name: " prefix is scanned
    ],
)
def test_plain_keys(key, text, case_sensitive, whole_words, expected):
    entry = Entry(uid=1, key=(key,), content="x")
    assert _activated(entry, text, case_sensitive=case_sensitive, match_whole_words=whole_words) is expected


@pytest.mark.parametrize(
    ("key", "entry_flags", "expected"),
    [
        ("DRAGONS", {"case_sensitive": True}, False),  # per-entry override beats the global setting
        ("DRAGONS", {"case_sensitive": None}, True),  # None: global (case-insensitive)
        ("dragon", {"match_whole_words": False}, True),
        ("dragon", {"match_whole_words": None}, False),  # None: global (whole words)
    ],
)
def test_per_entry_overrides(key, entry_flags, expected):
    entry = Entry(uid=1, key=(key,), content="x", **entry_flags)
    assert _activated(entry, "many dragons", case_sensitive=False, match_whole_words=True) is expected


def test_include_names_off_does_not_scan_names():
    entry = Entry(uid=1, key=("alice",), content="x")
    chat = [ChatLine("Alice", "hello")]
    on = activate([entry], chat, settings=ActivationSettings(), max_context=1000, rng=random.Random(0))
    off = activate(
        [entry], chat, settings=ActivationSettings(include_names=False), max_context=1000, rng=random.Random(0)
    )
    assert on.trace[0].status == "activated"
    assert off.trace[0].status == "skipped"


def test_empty_keys_never_match():
    assert not _activated(Entry(uid=1, key=("", "   "), content="x"), "anything")


@pytest.mark.parametrize(
    ("key", "messages", "expected"),
    [
        ("/drag(o|0)n/", ["a drag0n"], True),
        ("/DRAGON/", ["a dragon"], False),  # regex keys ignore the case-insensitive setting
        ("/DRAGON/i", ["a dragon"], True),
        ("/colou?r/i", ["COLOR"], True),
        ("/^U: hi/", ["hi"], False),  # the buffer starts with \x01
        ("/\\x01U: hi/", ["hi"], True),
        ("/there\\n\\x01U: hi/", ["hi", "there"], True),  # newest first, joined by \n\x01
        ("/\\bcat\\b/", ["我cat很"], True),  # JS \b is ASCII
        ("/\\w+ish/", ["日本ish"], False),  # JS \w is ASCII
        ("/\\d{3}/", ["code 123"], True),
        ("/(?<n>ab)\\k<n>/", ["xabab"], True),  # JS named groups and backreferences
        ("/foo$/", ["a foo"], True),
        ("/hello/y", ["hello"], False),  # sticky: only at index 0
        ("/(a+)+$/", ["aaaaaaaaaaaaaaaaaaaaaaaaaaaaab"], False),  # refused: nested quantifiers
        ("/[unclosed/", ["[unclosed"], False),  # invalid: never matches
        ("/a/b/", ["a/b"], False),  # unescaped slash: not a regex; the plain text does not occur
        ("/a\\/b/", ["a/b"], True),
        ("/ſ/i", ["S"], True),
    ],
)
def test_regex_keys(key, messages, expected):
    entry = Entry(uid=1, key=(key,), content="x")
    assert _activated(entry, *messages) is expected


def test_regex_parsing_details():
    assert parse_regex_key("plain") is None
    assert parse_regex_key("/a/b/") is None
    assert parse_regex_key("/x/gg").compiled is None  # duplicate flags
    assert parse_regex_key("/" + "a" * 2000 + "/").error == "pattern too long"
    assert parse_regex_key("/(\\w+\\s?)+$/").error == "nested quantifier"
    assert parse_regex_key("/(?:ab)+c/").compiled is not None
    assert parse_regex_key("/dragon(?:s)?/i").literal == "dragon"
    assert parse_regex_key("/a|b/").literal is None


def test_regex_literal_prefilter_agrees_with_regex():
    for key, text in [("/k+night/i", "A KNIGHT"), ("/İstanbul/i", "istanbul"), ("/straße/i", "STRASSE")]:
        rx = parse_regex_key(key)
        assert rx.search(text) is (rx.compiled.search(text) is not None)


def test_macros_in_keys():
    entry = Entry(uid=1, key=("{{char}}",), content="About {{char}}")
    chat = [ChatLine("U", "Where is Seraphina?")]

    def substitute(text: str) -> str:
        return text.replace("{{char}}", "Seraphina")

    result = activate([entry], chat, max_context=1000, substitute=substitute, rng=random.Random(0))
    assert result.trace[0].status == "activated"
    assert result.by_position["before"] == "About Seraphina"


def test_a_failing_substitute_does_not_break_activation():
    def substitute(text: str) -> str:
        raise RuntimeError("boom")

    entry = Entry(uid=1, key=("{{x}}", "dragon"), content="c")
    result = activate([entry], [ChatLine("U", "dragon")], max_context=1000, substitute=substitute, rng=random.Random(0))
    assert result.trace[0].status == "activated"


@pytest.mark.parametrize("whole_words", [True, False])
def test_matcher_agrees_with_reference_semantics(whole_words):
    rng = random.Random(5)
    alphabet = "ab c-猫é_"
    keys = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 4))).strip() for _ in range(300)}
    keys.discard("")
    items = frozenset((plain_kind(k, whole_words), k) for k in keys)
    matcher = PlainMatcher(items)
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        found_sub, found_word = matcher.scan(text)
        for kind, key in items:
            expected = match_plain(text, key, kind)
            got = key in (found_sub if kind == SUB else found_word)
            assert got is expected, (key, text, kind)


@pytest.mark.parametrize(("name", "expected"), [("Alice", "activated"), ("Bob", "skipped")])
def test_macro_keys_are_substituted_per_call(name, expected):
    # the compiled entry set is cached; substituted keys must not be
    entry = Entry(uid=1, key=("{{char}}",), content="c")
    for _ in range(2):
        result = activate(
            [entry],
            [ChatLine("U", "hello Alice")],
            max_context=1000,
            substitute=lambda text: text.replace("{{char}}", name),
            rng=random.Random(0),
        )
        assert result.trace[0].status == expected
