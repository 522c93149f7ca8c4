"""JSON cards: V1/V2/V3/hybrid detection and normalisation, export merge, V2 down-conversion, errors."""

from __future__ import annotations

import copy
import json
import pickle

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.cards import (
    CardError,
    Limits,
    card_fields,
    export_card_json,
    export_card_png,
    normalize_card_v3,
    parse_card_bytes,
    parse_card_json,
    to_v2,
)


def as_bytes(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8")


EMPTY_V3_DATA = {
    "name": "",
    "description": "",
    "personality": "",
    "scenario": "",
    "first_mes": "",
    "mes_example": "",
    "creator_notes": "",
    "system_prompt": "",
    "post_history_instructions": "",
    "alternate_greetings": [],
    "tags": [],
    "creator": "",
    "character_version": "",
    "extensions": {},
    "group_only_greetings": [],
    "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
    "nickname": "",
    "creator_notes_multilingual": {},
    "source": [],
    "creation_date": 0,
    "modification_date": 0,
}

V1_CARD = {
    "name": "孙悟空",
    "description": "齐天大圣，花果山美猴王。",
    "personality": "桀骜不驯，重情重义",
    "scenario": "西天取经路上",
    "first_mes": "俺老孙来也！",
    "mes_example": "<START>\n{{user}}: 大圣\n{{char}}: 何事？",
    "creatorcomment": "经典角色",
    "talkativeness": "0.8",
    "tags": "西游记, 神话",
    "未知字段": [1, 2, 3],
}

BOOK = {
    "name": "西游设定",
    "description": "取经路上的世界观",
    "scan_depth": 3,
    "extensions": {"作者扩展": True},
    "entries": [
        {
            "keys": ["金箍棒", "如意棒"],
            "content": "重一万三千五百斤。",
            "extensions": {"position": 4, "depth": 2, "自定义": "保留"},
            "enabled": True,
            "insertion_order": 50,
            "comment": "兵器",
            "id": 7,
            "未知条目键": "也保留",
        }
    ],
}

V2_CARD = {
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "唐僧",
        "description": "大唐高僧。",
        "personality": "慈悲",
        "scenario": "西行",
        "first_mes": "阿弥陀佛。",
        "mes_example": "",
        "creator_notes": "请勿用于提示词",
        "system_prompt": "你是{{char}}。{{original}}",
        "post_history_instructions": "保持角色。",
        "alternate_greetings": ["贫僧从东土大唐而来。"],
        "tags": ["西游记"],
        "creator": "吴承恩",
        "character_version": "2",
        "extensions": {
            "talkativeness": "0.5",
            "fav": False,
            "world": "西游设定",
            "depth_prompt": {"prompt": "", "depth": 4, "role": "system"},
        },
        "character_book": BOOK,
        "数据层未知键": {"嵌套": ["值"]},
    },
    "顶层未知键": "保留我",
}

V3_CARD = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        **{k: v for k, v in V2_CARD["data"].items() if k != "character_book"},
        "name": "猪八戒",
        "nickname": "呆子",
        "group_only_greetings": ["大师兄，师父被妖怪抓走了！"],
        "assets": [
            {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},
            {"type": "background", "uri": "https://example.com/高老庄.png", "name": "高老庄", "ext": "png"},
            {"type": "emotion", "uri": "embeded://assets/emotion/images/开心.png", "name": "开心", "ext": "png"},
        ],
        "creator_notes_multilingual": {"zh": "中文说明", "en": "notes"},
        "source": ["https://example.com/八戒"],
        "creation_date": 1700000000,
        "modification_date": 1700000500,
    },
}

HYBRID_CARD = {
    "name": "沙僧",
    "description": "卷帘大将（旧值）",
    "personality": "老实",
    "scenario": "流沙河",
    "first_mes": "大师兄！",
    "mes_example": "",
    "creatorcomment": "旧注释",
    "avatar": "none",
    "chat": "沙僧 - 2024-1-1",
    "talkativeness": "0.5",
    "fav": False,
    "tags": ["西游记"],
    "create_date": "2024-1-1 @10h 00m 00s 000ms",
    "spec": "chara_card_v2",
    "spec_version": "2.0",
    "data": {
        "name": "沙僧",
        "description": "卷帘大将，本性忠厚。",
        "personality": "老实",
        "scenario": "流沙河",
        "first_mes": "大师兄！",
        "mes_example": "",
        "creator_notes": "旧注释",
        "system_prompt": "",
        "post_history_instructions": "",
        "alternate_greetings": [],
        "tags": ["西游记"],
        "creator": "",
        "character_version": "",
        "extensions": {
            "talkativeness": "0.5",
            "fav": False,
            "world": "",
            "depth_prompt": {"prompt": "", "depth": 4, "role": "system"},
        },
        "group_only_greetings": [],
    },
}


# ---- detection and normalisation ----------------------------------------------------------------------------


def test_v1_maps_as_sillytavern() -> None:
    parsed = parse_card_bytes(as_bytes(V1_CARD), filename="wukong.json")

    assert parsed.spec == "v1"
    assert parsed.source_format == "json"
    assert parsed.original == V1_CARD
    assert parsed.card_v3 == {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            **EMPTY_V3_DATA,
            "name": "孙悟空",
            "description": "齐天大圣，花果山美猴王。",
            "personality": "桀骜不驯，重情重义",
            "scenario": "西天取经路上",
            "first_mes": "俺老孙来也！",
            "mes_example": "<START>\n{{user}}: 大圣\n{{char}}: 何事？",
            "creator_notes": "经典角色",
            "tags": ["西游记", "神话"],
            "extensions": {"talkativeness": "0.8"},
        },
    }


def test_v1_creator_notes_placeholder_is_stripped() -> None:
    parsed = parse_card_json({"name": "甲", "creator_notes": "Creator's notes go here.注释"})

    assert parsed.card_v3["data"]["creator_notes"] == "注释"


def test_pygmalion_json_maps_to_v1_fields() -> None:
    doc = {
        "char_name": "小白",
        "char_persona": "一只白猫",
        "char_greeting": "喵～",
        "example_dialogue": "{{char}}: 喵",
        "world_scenario": "屋顶",
    }

    data = parse_card_json(doc).card_v3["data"]

    assert (data["name"], data["description"], data["first_mes"], data["mes_example"], data["scenario"]) == (
        "小白",
        "一只白猫",
        "喵～",
        "{{char}}: 喵",
        "屋顶",
    )


def test_v2_with_book() -> None:
    parsed = parse_card_bytes(as_bytes(V2_CARD))

    assert parsed.spec == "v2"
    assert parsed.hybrid is False
    data = parsed.card_v3["data"]
    assert data["system_prompt"] == "你是{{char}}。{{original}}"
    assert data["extensions"] == V2_CARD["data"]["extensions"]
    assert "数据层未知键" not in data
    assert data["character_book"] == {
        **BOOK,
        "entries": [{**BOOK["entries"][0], "use_regex": False, "constant": False}],
    }


def test_v3_with_assets() -> None:
    parsed = parse_card_bytes(as_bytes(V3_CARD))

    assert parsed.spec == "v3"
    expected = {k: v for k, v in V3_CARD["data"].items() if k != "数据层未知键"}
    assert parsed.card_v3["data"] == {**EMPTY_V3_DATA, **expected}
    assert [(a.type, a.name, a.path, a.data) for a in parsed.assets] == [
        ("icon", "main", None, None),
        ("background", "高老庄", None, None),
        ("emotion", "开心", "assets/emotion/images/开心.png", None),
    ]


def test_hybrid_reads_data_and_flags_hybrid() -> None:
    parsed = parse_card_bytes(as_bytes(HYBRID_CARD))

    assert parsed.spec == "v2"
    assert parsed.hybrid is True
    assert parsed.card_v3["data"]["description"] == "卷帘大将，本性忠厚。"


def test_hybrid_fills_fields_missing_from_data_from_top_level() -> None:
    doc = {"spec": "chara_card_v2", "spec_version": "2.0", "name": "白龙马", "first_mes": "嘶——", "data": {}}

    data = parse_card_json(doc).card_v3["data"]

    assert (data["name"], data["first_mes"]) == ("白龙马", "嘶——")


def test_future_spec_version_is_accepted() -> None:
    doc = {"spec": "chara_card_v3", "spec_version": "3.5", "data": {"name": "未来"}}

    parsed = parse_card_json(doc)

    assert (parsed.spec, parsed.card_v3["data"]["name"]) == ("v3", "未来")


def test_wrong_types_are_coerced() -> None:
    doc = {
        "spec": "chara_card_v3",
        "data": {
            "name": 42,
            "description": None,
            "tags": "甲, 乙,,丙",
            "alternate_greetings": ["一", 2, None, "三"],
            "extensions": [],
            "assets": "bad",
            "creation_date": "1700000000",
            "modification_date": True,
            "character_book": {"entries": [{"keys": "钥匙,  锁", "content": None, "insertion_order": "x"}, 5]},
        },
    }

    data = parse_card_json(doc).card_v3["data"]

    assert data["name"] == "42"
    assert data["description"] == ""
    assert data["tags"] == ["甲", "乙", "丙"]
    assert data["alternate_greetings"] == ["一", "三"]
    assert data["extensions"] == {}
    assert data["assets"] == EMPTY_V3_DATA["assets"]
    assert (data["creation_date"], data["modification_date"]) == (1700000000, 0)
    assert data["character_book"] == {
        "entries": [
            {
                "keys": ["钥匙", "锁"],
                "content": "",
                "insertion_order": 100,
                "extensions": {},
                "enabled": True,
                "use_regex": False,
                "constant": False,
            }
        ],
        "extensions": {},
    }


def test_nameless_card_takes_the_file_stem() -> None:
    parsed = parse_card_bytes(as_bytes({"spec": "chara_card_v2", "data": {"name": ""}}), filename="dir/无名氏.json")

    assert parsed.card_v3["data"]["name"] == "无名氏"


# ---- export ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("card", [V2_CARD, V3_CARD, HYBRID_CARD], ids=["v2", "v3", "hybrid"])
def test_unedited_card_exports_as_imported_in_its_own_spec(card: dict) -> None:
    parsed = parse_card_json(copy.deepcopy(card))
    spec = "v3" if card["spec"] == "chara_card_v3" else "v2"

    exported = export_card_json(parsed.card_v3, parsed.original, spec=spec)

    expected = copy.deepcopy(card)
    if card is V2_CARD:  # the book gained the V3-required entry keys
        expected["data"]["character_book"]["entries"][0].update({"use_regex": False, "constant": False})
    if card is HYBRID_CARD:  # the stale top-level copy is brought in line with data
        expected["description"] = "卷帘大将，本性忠厚。"
    assert exported == expected
    assert json.dumps(exported, ensure_ascii=False, sort_keys=True) == json.dumps(
        export_card_json(parsed.card_v3, parsed.original, spec=spec), ensure_ascii=False, sort_keys=True
    )


def test_unknown_keys_and_extensions_survive_import_export_byte_equal() -> None:
    # given a V2 card with unknown keys at every level
    parsed = parse_card_bytes(as_bytes(V2_CARD))

    # when exported as V3 and as PNG
    v3 = export_card_json(parsed.card_v3, parsed.original, spec="v3")
    again = parse_card_bytes(export_card_png(parsed.card_v3, parsed.original, None))

    # then
    def dump(value: object) -> str:
        return json.dumps(value, ensure_ascii=False)

    assert dump(v3["顶层未知键"]) == dump(V2_CARD["顶层未知键"])
    assert dump(v3["data"]["数据层未知键"]) == dump(V2_CARD["data"]["数据层未知键"])
    assert dump(v3["data"]["extensions"]) == dump(V2_CARD["data"]["extensions"])
    assert dump(v3["data"]["character_book"]["extensions"]) == dump(BOOK["extensions"])
    assert dump(v3["data"]["character_book"]["entries"][0]["extensions"]) == dump(BOOK["entries"][0]["extensions"])
    assert v3["data"]["character_book"]["entries"][0]["未知条目键"] == "也保留"
    assert again.original == v3
    assert again.card_v3 == parsed.card_v3


def test_v1_export_is_st_style_hybrid_keeping_unknown_keys() -> None:
    parsed = parse_card_json(copy.deepcopy(V1_CARD))
    parsed.card_v3["data"]["description"] = "斗战胜佛。"

    exported = export_card_json(parsed.card_v3, parsed.original, spec="v2")

    assert exported == {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "孙悟空",
            "description": "斗战胜佛。",
            "personality": "桀骜不驯，重情重义",
            "scenario": "西天取经路上",
            "first_mes": "俺老孙来也！",
            "mes_example": "<START>\n{{user}}: 大圣\n{{char}}: 何事？",
            "creator_notes": "经典角色",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": [],
            "tags": ["西游记", "神话"],
            "creator": "",
            "character_version": "",
            "extensions": {"talkativeness": "0.8"},
        },
        **{**V1_CARD, "description": "斗战胜佛。"},
    }


def test_edits_are_merged_and_hybrid_top_level_updated() -> None:
    parsed = parse_card_json(copy.deepcopy(HYBRID_CARD))
    card = copy.deepcopy(parsed.card_v3)
    card["data"]["description"] = "新的描述"
    card["data"]["creator_notes"] = "新注释"
    card["data"]["tags"] = ["取经"]
    card["data"]["extensions"]["新扩展"] = {"开": True}

    exported = export_card_json(card, parsed.original, spec="v2")

    assert exported["description"] == "新的描述"
    assert exported["creatorcomment"] == "新注释"
    assert exported["tags"] == ["取经"]
    assert exported["data"]["description"] == "新的描述"
    assert exported["data"]["extensions"]["新扩展"] == {"开": True}
    assert exported["chat"] == "沙僧 - 2024-1-1"
    assert exported["data"]["group_only_greetings"] == []


def test_removed_book_is_removed_on_export() -> None:
    parsed = parse_card_json(copy.deepcopy(V2_CARD))
    card = copy.deepcopy(parsed.card_v3)
    del card["data"]["character_book"]

    assert "character_book" not in export_card_json(card, parsed.original, spec="v3")["data"]
    assert "character_book" not in export_card_json(card, parsed.original, spec="v2")["data"]


def test_v3_export_of_v2_original_does_not_add_default_optional_fields() -> None:
    parsed = parse_card_json(copy.deepcopy(HYBRID_CARD))

    exported = export_card_json(parsed.card_v3, parsed.original, spec="v3")

    assert (exported["spec"], exported["spec_version"]) == ("chara_card_v3", "3.0")
    assert set(exported["data"]) == set(HYBRID_CARD["data"])


def test_v2_export_of_v3_card_drops_v3_only_fields() -> None:
    parsed = parse_card_json(copy.deepcopy(V3_CARD))

    exported = export_card_json(parsed.card_v3, parsed.original, spec="v2")

    assert (exported["spec"], exported["spec_version"]) == ("chara_card_v2", "2.0")
    for key in ("assets", "nickname", "creator_notes_multilingual", "source", "creation_date", "modification_date"):
        assert key not in exported["data"]
    assert exported["data"]["group_only_greetings"] == ["大师兄，师父被妖怪抓走了！"]
    assert exported["data"]["数据层未知键"] == {"嵌套": ["值"]}


def test_to_v2_shape() -> None:
    card = normalize_card_v3({"name": "观音", "nickname": "菩萨", "assets": []})

    assert to_v2(card) == {
        "spec": "chara_card_v2",
        "spec_version": "2.0",
        "data": {
            "name": "观音",
            "description": "",
            "personality": "",
            "scenario": "",
            "first_mes": "",
            "mes_example": "",
            "creator_notes": "",
            "system_prompt": "",
            "post_history_instructions": "",
            "alternate_greetings": [],
            "tags": [],
            "creator": "",
            "character_version": "",
            "extensions": {},
        },
    }


def test_export_without_original() -> None:
    exported = export_card_json({"spec": "chara_card_v3", "data": {"name": "哪吒"}}, None, spec="v3")

    assert exported == {
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            k: v
            for k, v in {**EMPTY_V3_DATA, "name": "哪吒"}.items()
            if k
            not in ("assets", "nickname", "creator_notes_multilingual", "source", "creation_date", "modification_date")
        },
    }
    with pytest.raises(ValueError):
        export_card_json({"data": {}}, None, spec="v4")  # type: ignore[arg-type]


# ---- card_fields ----------------------------------------------------------------------------------------


def test_card_fields_order_skips_empty_and_creator_notes() -> None:
    card = parse_card_json(copy.deepcopy(V3_CARD)).card_v3
    card["data"]["mes_example"] = "  "

    assert card_fields(card) == [
        ("姓名", "猪八戒"),
        ("昵称", "呆子"),
        ("描述", "大唐高僧。"),
        ("性格", "慈悲"),
        ("场景", "西行"),
        ("开场白", "阿弥陀佛。"),
    ]
    assert card_fields(card["data"]) == card_fields(card)


# ---- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "kwargs", "code"),
    [
        (b"\x00\x01\x02 random bytes", {}, "not_a_card"),
        (b"hello world", {"filename": "card.txt"}, "not_a_card"),
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", {"filename": "a.jpg"}, "unsupported_format"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", {}, "unsupported_format"),
        (b"name: foo\n", {"filename": "card.yaml"}, "unsupported_format"),
        (b"not json", {"filename": "card.json"}, "bad_json"),
        (b"not json", {"content_type": "application/json; charset=utf-8"}, "bad_json"),
        (b'{"name": "a",', {}, "bad_json"),
        (b'{"name": NaN}', {}, "bad_json"),
        (b"[" * 100_000, {}, "bad_json"),
        (b'{"name": "a", "x": ' + b"[" * 150 + b"]" * 150 + b"}", {}, "bad_json"),
        (b'{"name": "\\u0000"}', {}, "bad_json"),
        (b'{"name": "\\ud800"}', {}, "bad_json"),
        (b'{"name": "a", "n": 1e400}', {}, "bad_json"),
        (b"[1, 2]", {}, "not_a_card"),
        (b'{"foo": 1}', {}, "not_a_card"),
        (b'{"spec": "lorebook_v3", "data": {"entries": []}}', {}, "not_a_card"),
        (b'{"spec": "something_else", "data": {}}', {}, "not_a_card"),
        (b'{"spec": "chara_card_v2", "data": "oops"}', {}, "not_a_card"),
    ],
)
def test_errors(data: bytes, kwargs: dict, code: str) -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(data, **kwargs)

    assert info.value.code == code
    assert info.value.message


def test_card_error_pickles_and_prints_its_message() -> None:
    error = CardError("bad_json", "坏的 JSON")

    again = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes

    assert (again.code, again.message, str(again)) == ("bad_json", "坏的 JSON", "坏的 JSON")
    assert repr(again) == "CardError('bad_json', '坏的 JSON')"


def test_not_a_card_message() -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(b"GARBAGE")

    assert info.value.message == "The file is not a character card (expected a PNG/APNG, JSON or CHARX card)."


def test_too_large_file_and_json() -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(b" " * 2001 + b"{}", limits=Limits(max_file_bytes=2000))
    assert (info.value.code, info.value.message) == ("too_large", "The file is larger than 0 MB.")

    with pytest.raises(CardError) as info:
        parse_card_bytes(as_bytes({"name": "长" * 1000}), limits=Limits(max_json_bytes=1000))
    assert info.value.code == "too_large"


def test_default_file_limit_is_20_mb() -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(b"{" + b" " * (20 * 1024 * 1024))

    assert (info.value.code, info.value.message) == ("too_large", "The file is larger than 20 MB.")


# ---- hypothesis -------------------------------------------------------------------------------------------

_PNG_PREFIX = b"\x89PNG\r\n\x1a\n"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.one_of(
        st.binary(max_size=2048),
        st.binary(max_size=2048).map(lambda b: _PNG_PREFIX + b),
        st.binary(max_size=2048).map(lambda b: b"PK\x03\x04" + b),
        st.binary(max_size=512).map(lambda b: b"{" + b),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
            lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
            max_leaves=20,
        ).map(lambda v: json.dumps(v).encode()),
        st.fixed_dictionaries(
            {"spec": st.sampled_from(["chara_card_v2", "chara_card_v3", 3, None])},
            optional={
                "data": st.dictionaries(
                    st.sampled_from(["name", "tags", "extensions", "character_book", "assets", "creation_date"]),
                    st.none()
                    | st.integers()
                    | st.text(max_size=5)
                    | st.lists(st.integers(), max_size=3)
                    | st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
                ),
                "name": st.text(max_size=5),
            },
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_arbitrary_bytes_raise_only_card_error(data: bytes) -> None:
    try:
        parsed = parse_card_bytes(data)
    except CardError as exc:
        assert exc.code.value == exc.code
        return
    # a success is a usable card that exports again
    exported = export_card_png(parsed.card_v3, parsed.original, parsed.avatar_png)
    assert parse_card_bytes(exported).card_v3 == parsed.card_v3


@pytest.mark.parametrize("card", [V1_CARD, V2_CARD, V3_CARD, HYBRID_CARD], ids=["v1", "v2", "v3", "hybrid"])
def test_round_trip_through_png(card: dict) -> None:
    # given a card imported from JSON
    parsed = parse_card_bytes(as_bytes(card))

    # when exported as PNG and imported again
    again = parse_card_bytes(export_card_png(parsed.card_v3, parsed.original, None))

    # then the ccv3 chunk wins, the card is unchanged and the original is the V3 export
    assert again.spec == "v3"
    assert again.card_v3 == parsed.card_v3
    assert again.original == export_card_json(parsed.card_v3, parsed.original, spec="v3")


def test_png_export_replaces_unpaired_surrogates_from_edits() -> None:
    card = normalize_card_v3({"name": "坏\ud800字"})

    again = parse_card_bytes(export_card_png(card, None, None))

    assert again.card_v3["data"]["name"] == "坏\ufffd字"


@pytest.mark.parametrize("stamp", ["¹²", "١٢", "²" * 20])
def test_non_ascii_digits_in_a_date_are_not_numbers(stamp: str) -> None:
    # str.isdigit() accepts superscripts, which int() refuses: a card must not crash the import.
    doc = {"spec": "chara_card_v3", "data": {"name": "x", "creation_date": stamp}}

    data = parse_card_json(doc).card_v3["data"]

    assert data["creation_date"] == 0
