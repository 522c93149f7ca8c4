"""character_book ⇄ SillyTavern World Info entries, lorebook_v3 helpers (exact dicts)."""

from __future__ import annotations

import copy

import pytest

from apps.cards import (
    book_to_lorebook_v3,
    character_book_to_st_entries,
    character_book_to_st_world,
    lorebook_v3_to_book,
    lorebook_v3_to_st_entries,
    normalize_character_book,
    st_entries_to_character_book,
    st_entries_to_lorebook_v3,
    st_world_entries,
)

# An entry with every ST extension set to a non-default value, plus unknown extension keys.
FULL_EXT = {
    "position": 4,
    "exclude_recursion": True,
    "prevent_recursion": True,
    "delay_until_recursion": 2,
    "display_index": 9,
    "probability": 35,
    "useProbability": False,
    "depth": 6,
    "selectiveLogic": 3,
    "outlet_name": "天气",
    "group": "天气组",
    "group_override": True,
    "group_weight": 60,
    "scan_depth": 5,
    "case_sensitive": True,
    "match_whole_words": False,
    "use_group_scoring": True,
    "automation_id": "qr-1",
    "role": 2,
    "vectorized": True,
    "sticky": 3,
    "cooldown": 4,
    "delay": 1,
    "match_persona_description": True,
    "match_character_description": True,
    "match_character_personality": True,
    "match_character_depth_prompt": True,
    "match_scenario": True,
    "match_creator_notes": True,
    "triggers": ["normal", "swipe"],
    "ignore_budget": True,
    "第三方扩展": {"保留": [1, 2]},
}

BOOK = {
    "name": "长安城",
    "description": "唐代长安的设定",
    "scan_depth": 4,
    "token_budget": 512,
    "recursive_scanning": True,
    "extensions": {"书级扩展": "值"},
    "entries": [
        {
            "keys": ["雨", "下雨"],
            "secondary_keys": ["伞"],
            "content": "长安的雨细如牛毛。",
            "extensions": FULL_EXT,
            "enabled": True,
            "insertion_order": 30,
            "case_sensitive": False,
            "name": "雨天",
            "priority": 10,
            "id": 12,
            "comment": "天气",
            "selective": True,
            "constant": False,
            "position": "after_char",
            "use_regex": False,
        },
        {
            "keys": ["东市"],
            "content": "东市多奇货。",
            "extensions": {},
            "enabled": False,
            "insertion_order": 100,
            "position": "before_char",
        },
    ],
}

ST_FULL = {
    "uid": 12,
    "key": ["雨", "下雨"],
    "keysecondary": ["伞"],
    "comment": "天气",
    "content": "长安的雨细如牛毛。",
    "constant": False,
    "selective": True,
    "order": 30,
    "position": 4,
    "disable": False,
    "addMemo": True,
    "displayIndex": 9,
    "excludeRecursion": True,
    "preventRecursion": True,
    "delayUntilRecursion": 2,
    "probability": 35,
    "useProbability": False,
    "depth": 6,
    "selectiveLogic": 3,
    "outletName": "天气",
    "group": "天气组",
    "groupOverride": True,
    "groupWeight": 60,
    "scanDepth": 5,
    "caseSensitive": True,
    "matchWholeWords": False,
    "useGroupScoring": True,
    "automationId": "qr-1",
    "role": 2,
    "vectorized": True,
    "sticky": 3,
    "cooldown": 4,
    "delay": 1,
    "matchPersonaDescription": True,
    "matchCharacterDescription": True,
    "matchCharacterPersonality": True,
    "matchCharacterDepthPrompt": True,
    "matchScenario": True,
    "matchCreatorNotes": True,
    "triggers": ["normal", "swipe"],
    "ignoreBudget": True,
    "extensions": FULL_EXT,
}

# Second entry: no id (→ index 1), no extensions (→ ST import defaults), disabled, before_char.
ST_DEFAULTS = {
    "uid": 1,
    "key": ["东市"],
    "keysecondary": [],
    "comment": "",
    "content": "东市多奇货。",
    "constant": False,
    "selective": False,
    "order": 100,
    "position": 0,
    "disable": True,
    "addMemo": False,
    "displayIndex": 1,
    "excludeRecursion": False,
    "preventRecursion": False,
    "delayUntilRecursion": False,
    "probability": 100,
    "useProbability": True,
    "depth": 4,
    "selectiveLogic": 0,
    "outletName": "",
    "group": "",
    "groupOverride": False,
    "groupWeight": 100,
    "scanDepth": None,
    "caseSensitive": None,
    "matchWholeWords": None,
    "useGroupScoring": None,
    "automationId": "",
    "role": 0,
    "vectorized": False,
    "sticky": None,
    "cooldown": None,
    "delay": None,
    "matchPersonaDescription": False,
    "matchCharacterDescription": False,
    "matchCharacterPersonality": False,
    "matchCharacterDepthPrompt": False,
    "matchScenario": False,
    "matchCreatorNotes": False,
    "triggers": [],
    "ignoreBudget": False,
    "extensions": {},
}


def test_character_book_to_st_entries_exact() -> None:
    assert character_book_to_st_entries(BOOK) == [ST_FULL, ST_DEFAULTS]


def test_character_book_to_st_world_shape() -> None:
    world = character_book_to_st_world(BOOK)

    assert world == {"entries": {"12": ST_FULL, "1": ST_DEFAULTS}, "originalData": BOOK}


def test_input_book_is_not_mutated() -> None:
    book = copy.deepcopy(BOOK)

    character_book_to_st_entries(book)
    st_entries_to_character_book(character_book_to_st_entries(book), name="x", base_book=book)

    assert book == BOOK


def test_case_sensitive_falls_back_to_v2_entry_field() -> None:
    entries = character_book_to_st_entries({"entries": [{"keys": ["甲"], "content": "", "case_sensitive": True}]})

    assert entries[0]["caseSensitive"] is True
    assert entries[0]["disable"] is False  # missing `enabled` means enabled


def test_uids_are_unique_integers() -> None:
    book = {
        "entries": [
            {"keys": ["a"], "content": "", "id": 1},
            {"keys": ["b"], "content": "", "id": 1},  # duplicate
            {"keys": ["c"], "content": "", "id": "7"},  # digit string
            {"keys": ["d"], "content": "", "id": "abc"},  # not a number
            {"keys": ["e"], "content": ""},  # missing
        ]
    }

    assert [e["uid"] for e in character_book_to_st_entries(book)] == [1, 0, 7, 3, 4]


def test_string_keys_are_split() -> None:
    entries = character_book_to_st_entries({"entries": [{"keys": "长安, 洛阳", "content": "两京"}]})

    assert entries[0]["key"] == ["长安", "洛阳"]


BOOK_FROM_ST_FULL = {
    "id": 12,
    "keys": ["雨", "下雨"],
    "secondary_keys": ["伞"],
    "comment": "天气",
    "content": "长安的雨细如牛毛。",
    "constant": False,
    "selective": True,
    "insertion_order": 30,
    "enabled": True,
    "position": "after_char",
    "use_regex": False,
    "extensions": FULL_EXT,
}

BOOK_FROM_ST_DEFAULTS = {
    "id": 1,
    "keys": ["东市"],
    "secondary_keys": [],
    "comment": "",
    "content": "东市多奇货。",
    "constant": False,
    "selective": False,
    "insertion_order": 100,
    "enabled": False,
    "position": "before_char",
    "use_regex": False,
    "extensions": {
        "position": 0,
        "exclude_recursion": False,
        "display_index": 1,
        "prevent_recursion": False,
        "delay_until_recursion": False,
        "probability": 100,
        "useProbability": True,
        "depth": 4,
        "selectiveLogic": 0,
        "outlet_name": "",
        "group": "",
        "group_override": False,
        "group_weight": 100,
        "scan_depth": None,
        "case_sensitive": None,
        "match_whole_words": None,
        "use_group_scoring": None,
        "automation_id": "",
        "role": 0,
        "vectorized": False,
        "sticky": None,
        "cooldown": None,
        "delay": None,
        "match_persona_description": False,
        "match_character_description": False,
        "match_character_personality": False,
        "match_character_depth_prompt": False,
        "match_scenario": False,
        "match_creator_notes": False,
        "triggers": [],
        "ignore_budget": False,
    },
}


def test_st_entries_to_character_book_exact() -> None:
    book = st_entries_to_character_book([ST_FULL, ST_DEFAULTS], name="长安城")

    assert book == {"name": "长安城", "extensions": {}, "entries": [BOOK_FROM_ST_FULL, BOOK_FROM_ST_DEFAULTS]}


def test_st_world_object_is_iterated_in_javascript_order() -> None:
    world = {"entries": {"10": {**ST_DEFAULTS, "uid": 10}, "2": {**ST_FULL, "uid": 2}, "x": {**ST_DEFAULTS, "uid": 3}}}

    assert [e["uid"] for e in st_world_entries(world)] == [2, 10, 3]
    assert [e["id"] for e in st_entries_to_character_book(world, name="w")["entries"]] == [2, 10, 3]
    assert [e["uid"] for e in st_world_entries(world["entries"])] == [2, 10, 3]


def test_st_export_defaults_for_missing_fields() -> None:
    minimal = {"uid": 5, "key": ["钟楼"], "content": "晨钟暮鼓。"}

    book = st_entries_to_character_book([minimal], name="最小")

    entry = book["entries"][0]
    assert {k: entry[k] for k in ("id", "selective", "insertion_order", "enabled", "position")} == {
        "id": 5,
        "selective": True,
        "insertion_order": 100,
        "enabled": True,
        "position": "before_char",
    }
    # ST's export defaults, except use_group_scoring which keeps null
    assert (entry["extensions"]["probability"], entry["extensions"]["useProbability"]) == (None, False)
    assert (entry["extensions"]["group_weight"], entry["extensions"]["use_group_scoring"]) == (None, None)


def test_base_book_keeps_book_level_fields() -> None:
    book = st_entries_to_character_book(character_book_to_st_entries(BOOK), name="新名字", base_book=BOOK)

    assert {k: v for k, v in book.items() if k != "entries"} == {
        "name": "新名字",
        "description": "唐代长安的设定",
        "scan_depth": 4,
        "token_budget": 512,
        "recursive_scanning": True,
        "extensions": {"书级扩展": "值"},
    }


def test_round_trip_book_entries_book_keeps_mapped_fields_and_extensions() -> None:
    again = st_entries_to_character_book(character_book_to_st_entries(BOOK), name="长安城")

    assert again["entries"][0] == BOOK_FROM_ST_FULL
    assert again["entries"][0]["extensions"]["第三方扩展"] == {"保留": [1, 2]}
    # the second entry now carries ST's fields in its extensions, as ST's own export does
    assert character_book_to_st_entries(again) == [
        ST_FULL,
        {**ST_DEFAULTS, "extensions": BOOK_FROM_ST_DEFAULTS["extensions"]},
    ]


def test_character_filter_round_trips_through_extensions() -> None:
    entry = {**ST_DEFAULTS, "characterFilter": {"isExclude": True, "names": ["李白.png"], "tags": []}}

    book = st_entries_to_character_book([entry], name="f")
    back = character_book_to_st_entries(book)

    assert book["entries"][0]["extensions"]["character_filter"] == entry["characterFilter"]
    assert back[0]["characterFilter"] == entry["characterFilter"]


# ---- lorebook_v3 -----------------------------------------------------------------------------------------


def test_lorebook_v3_helpers() -> None:
    doc = {"spec": "lorebook_v3", "data": copy.deepcopy(BOOK)}

    book = lorebook_v3_to_book(doc)

    assert book == normalize_character_book(BOOK)
    assert book["entries"][1]["use_regex"] is False
    assert lorebook_v3_to_st_entries(doc) == [ST_FULL, ST_DEFAULTS]
    assert book_to_lorebook_v3(book) == {"spec": "lorebook_v3", "data": book}
    exported = st_entries_to_lorebook_v3([ST_FULL], name="长安城")
    assert exported == {
        "spec": "lorebook_v3",
        "data": {"name": "长安城", "extensions": {}, "entries": [BOOK_FROM_ST_FULL]},
    }
    with pytest.raises(ValueError):
        lorebook_v3_to_book({"spec": "chara_card_v3", "data": {}})
