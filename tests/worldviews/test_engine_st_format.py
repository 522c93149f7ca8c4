"""Reading/writing ST world-info entries and card character_book entries."""

import pytest

from apps.worldviews.engine import (
    CharacterFilter,
    Entry,
    Position,
    entries_from_st_book,
    entry_from_character_book,
    entry_from_st,
    entry_to_st,
)

ST_ENTRY = {
    "uid": 3,
    "key": ["dragon", "/wyrm/i"],
    "keysecondary": ["red"],
    "comment": "Dragons",
    "content": "Dragons breathe fire.",
    "constant": False,
    "vectorized": False,
    "selective": True,
    "selectiveLogic": 3,
    "addMemo": True,
    "order": 120,
    "position": 4,
    "disable": False,
    "ignoreBudget": True,
    "excludeRecursion": True,
    "preventRecursion": False,
    "delayUntilRecursion": 2,
    "probability": 75,
    "useProbability": True,
    "depth": 2,
    "outletName": "",
    "group": "beasts",
    "groupOverride": True,
    "groupWeight": 40,
    "scanDepth": 5,
    "caseSensitive": True,
    "matchWholeWords": None,
    "useGroupScoring": False,
    "automationId": "",
    "role": 2,
    "sticky": 3,
    "cooldown": None,
    "delay": 1,
    "matchPersonaDescription": True,
    "matchCharacterDescription": False,
    "matchCharacterPersonality": False,
    "matchCharacterDepthPrompt": False,
    "matchScenario": True,
    "matchCreatorNotes": False,
    "characterFilter": {"isExclude": True, "names": ["x.png"], "tags": ["t1"]},
    "triggers": ["normal", "swipe"],
    "displayIndex": 7,
    "someExtension": {"kept": True},
}


def test_reads_every_field():
    e = entry_from_st(ST_ENTRY, lorebook_id=9, source="character")
    assert (e.uid, e.key, e.keysecondary, e.selective_logic, e.order, e.position) == (
        3,
        ("dragon", "/wyrm/i"),
        ("red",),
        3,
        120,
        Position.AT_DEPTH,
    )
    assert (e.ignore_budget, e.exclude_recursion, e.delay_until_recursion, e.probability, e.depth) == (
        True,
        True,
        2,
        75,
        2,
    )
    assert (e.group, e.group_override, e.group_weight, e.scan_depth, e.case_sensitive) == ("beasts", True, 40, 5, True)
    assert (e.match_whole_words, e.use_group_scoring, e.role, e.sticky, e.cooldown, e.delay) == (
        None,
        False,
        2,
        3,
        None,
        1,
    )
    assert e.character_filter == CharacterFilter(is_exclude=True, names=("x.png",), tags=("t1",))
    assert (e.triggers, e.display_index, e.lorebook_id, e.source) == (("normal", "swipe"), 7, 9, "character")
    assert e.extra == {"someExtension": {"kept": True}}


def test_round_trip():
    assert entry_to_st(entry_from_st(ST_ENTRY)) == ST_ENTRY


def test_defaults_are_st_new_entry_defaults():
    e = entry_from_st({})
    assert e == Entry()
    st = entry_to_st(e)
    assert st["selective"] is True
    assert st["probability"] == 100
    assert st["useProbability"] is True
    assert st["depth"] == 4
    assert st["groupWeight"] == 100
    assert st["order"] == 100
    assert st["scanDepth"] is None
    assert "characterFilter" not in st


@pytest.mark.parametrize(
    ("raw", "attr", "expected"),
    [
        ({"key": "a, b ,,c"}, "key", ("a", "b", "c")),
        ({"key": ["a", 5, None, {"x": 1}]}, "key", ("a", "5")),
        ({"key": 12}, "key", ()),
        ({"probability": "50"}, "probability", 50),
        ({"probability": "lots"}, "probability", 100),
        ({"probability": float("nan")}, "probability", 100),
        ({"order": 12.5}, "order", 12.5),
        ({"position": 99}, "position", Position.BEFORE),
        ({"position": "4"}, "position", Position.AT_DEPTH),
        ({"selectiveLogic": None}, "selective_logic", 0),
        ({"delayUntilRecursion": True}, "delay_until_recursion", 1),
        ({"delayUntilRecursion": False}, "delay_until_recursion", 0),
        ({"delayUntilRecursion": "3"}, "delay_until_recursion", 3),
        ({"sticky": 0}, "sticky", None),
        ({"sticky": -2}, "sticky", None),
        ({"sticky": "4"}, "sticky", 4),
        ({"scanDepth": ""}, "scan_depth", None),
        ({"caseSensitive": "true"}, "case_sensitive", True),
        ({"caseSensitive": "null"}, "case_sensitive", None),
        ({"disable": "false"}, "disable", False),
        ({"enabled": False}, "disable", True),
        ({"keys": ["k"]}, "key", ("k",)),
        ({"uid": "12"}, "uid", 12),
        ({"uid": "abc"}, "uid", "abc"),
        ({"uid": "-7"}, "uid", -7),
        ({"uid": "¹"}, "uid", "¹"),  # isdigit() but not int(): kept as text
        ({"uid": "--5"}, "uid", "--5"),
        ({"uid": "9" * 5000}, "uid", "9" * 5000),  # beyond int()'s digit limit
        ({"uid": True}, "uid", 0),
        ({"content": None}, "content", ""),
        ({"characterFilter": "nope"}, "character_filter", None),
        ({"role": 7}, "role", 0),
    ],
)
def test_tolerant_reading(raw, attr, expected):
    assert getattr(entry_from_st(raw), attr) == expected


def test_non_mapping_input():
    assert entry_from_st(None) == Entry()  # type: ignore[arg-type]
    assert entry_from_st(["x"]) == Entry()  # type: ignore[arg-type]


def test_book_file():
    book = {"entries": {"0": {"uid": 0, "key": ["a"]}, "1": {"uid": 1, "key": ["b"]}, "bad": 3}}
    entries = entries_from_st_book(book, lorebook_id="B", source="chat")
    assert [(e.uid, e.key, e.lorebook_id, e.source) for e in entries] == [
        (0, ("a",), "B", "chat"),
        (1, ("b",), "B", "chat"),
    ]
    assert entries_from_st_book({"entries": [{"uid": 5}]})[0].uid == 5
    assert entries_from_st_book({}) == []


def test_character_book_entry():
    book_entry = {
        "keys": ["tower"],
        "secondary_keys": ["old"],
        "content": "The tower is old.",
        "comment": "Tower",
        "enabled": True,
        "insertion_order": 5,
        "position": "before_char",
        "extensions": {"depth": 2, "group": "places", "sticky": 2, "match_scenario": True, "ignore_budget": True},
    }
    e = entry_from_character_book(book_entry, index=4, lorebook_id="card")
    assert (e.uid, e.key, e.keysecondary, e.order, e.position, e.disable) == (4, ("tower",), ("old",), 5, 0, False)
    assert (e.selective, e.add_memo, e.depth, e.group, e.sticky, e.match_scenario, e.ignore_budget) == (
        False,
        True,
        2,
        "places",
        2,
        True,
        True,
    )
    assert e.source == "character"
    after = entry_from_character_book({"keys": ["x"], "id": 9, "position": "after_char", "enabled": False})
    assert (after.uid, after.position, after.disable) == (9, Position.AFTER, True)
    assert entry_from_character_book({"extensions": {"position": 4}}).position == Position.AT_DEPTH
