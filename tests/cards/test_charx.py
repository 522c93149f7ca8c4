"""CHARX cards: card.json + embedded assets, avatar choice, zip-bomb and traversal defences."""

from __future__ import annotations

import io
import json
import struct
import zipfile

import pytest

from apps.cards import CardError, Limits, export_card_json, minimal_png, parse_card_bytes
from apps.cards.charx import CharxReader, safe_member_path

ICON = minimal_png(2, 2, (200, 30, 30, 255))
BG = minimal_png(1, 1, (0, 0, 255, 255))

CARD = {
    "spec": "chara_card_v3",
    "spec_version": "3.0",
    "data": {
        "name": "白骨精",
        "description": "白虎岭上的妖精，善于变化。",
        "first_mes": "长老，吃斋饭吗？",
        "assets": [
            {
                "type": "background",
                "uri": "embeded://assets/background/images/白虎岭.png",
                "name": "白虎岭",
                "ext": "png",
            },
            {"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"},
            {"type": "icon", "uri": "embeded://assets/icon/images/missing.png", "name": "缺失", "ext": "png"},
            {"type": "icon", "uri": "embeded://assets/icon/images/主图.png", "name": "主图", "ext": "png"},
            {"type": "icon", "uri": "embeded://assets/icon/images/second.png", "name": "second", "ext": "png"},
        ],
        "extensions": {"risuai": {"保留": True}},
        "group_only_greetings": [],
    },
    "自定义顶层": 1,
}


def make_zip(members: dict[str, bytes], *, compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def charx(card: dict = CARD, **extra: bytes) -> bytes:
    members = {
        "card.json": json.dumps(card, ensure_ascii=False).encode("utf-8"),
        "assets/icon/images/主图.png": ICON,
        "assets/icon/images/second.png": BG,
        "assets/background/images/白虎岭.png": BG,
    }
    members.update(extra)
    return make_zip(members)


def test_charx_with_icon_asset() -> None:
    parsed = parse_card_bytes(charx(), filename="baigujing.charx")

    assert parsed.source_format == "charx"
    assert parsed.spec == "v3"
    assert parsed.original == CARD
    assert parsed.card_v3["data"]["description"] == "白虎岭上的妖精，善于变化。"
    # first icon asset that resolves inside the archive (ccdefault: has nothing to point to in a CHARX)
    assert parsed.avatar_png == ICON
    assert [(a.type, a.name, a.path, a.data) for a in parsed.assets] == [
        ("background", "白虎岭", "assets/background/images/白虎岭.png", BG),
        ("icon", "main", None, None),
        ("icon", "缺失", "assets/icon/images/missing.png", None),
        ("icon", "主图", "assets/icon/images/主图.png", ICON),
        ("icon", "second", "assets/icon/images/second.png", BG),
    ]
    assert parsed.warnings == ("Asset '缺失' points to a missing or unsafe path 'assets/icon/images/missing.png'.",)
    exported = export_card_json(parsed.card_v3, parsed.original, spec="v3")
    assert exported["自定义顶层"] == 1
    assert exported["data"]["extensions"] == {"risuai": {"保留": True}}


def test_charx_without_icon_has_no_avatar() -> None:
    card = {"spec": "chara_card_v3", "spec_version": "3.0", "data": {"name": "无图"}}

    parsed = parse_card_bytes(make_zip({"card.json": json.dumps(card).encode()}))

    assert parsed.avatar_png is None
    assert [(a.type, a.uri) for a in parsed.assets] == [("icon", "ccdefault:")]


def test_charx_without_card_json() -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(make_zip({"readme.txt": b"hi"}))

    assert (info.value.code, info.value.message) == ("not_a_card", "The CHARX archive has no card.json at its root.")


def test_charx_with_bad_card_json() -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(make_zip({"card.json": b"{oops"}))

    assert info.value.code == "bad_json"


def test_path_traversal_members_and_uris_are_ignored() -> None:
    # given an archive with a traversal member and a card asset pointing outside the archive root
    card = {
        "spec": "chara_card_v3",
        "data": {
            "name": "穿越者",
            "assets": [
                {"type": "icon", "uri": "embeded://../../etc/passwd", "name": "evil", "ext": "png"},
                {"type": "icon", "uri": "embeded:///abs/icon.png", "name": "abs", "ext": "png"},
                {"type": "icon", "uri": "embeded://assets/../../icon.png", "name": "evil2", "ext": "png"},
            ],
        },
    }
    data = make_zip(
        {
            "card.json": json.dumps(card).encode(),
            "../icon.png": ICON,
            "/abs/icon.png": ICON,
            "C:\\icon.png": ICON,
        }
    )

    parsed = parse_card_bytes(data)

    assert parsed.avatar_png is None
    assert [a.data for a in parsed.assets] == [None, None, None]


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("card.json", "card.json"),
        ("./assets//icon/a.png", "assets/icon/a.png"),
        ("assets\\icon\\a.png", "assets/icon/a.png"),
        ("../a", None),
        ("a/../../b", None),
        ("/etc/passwd", None),
        ("C:/x", None),
        ("a\0b", None),
        ("", None),
    ],
)
def test_safe_member_path(name: str, safe: str | None) -> None:
    assert safe_member_path(name) == safe


def test_zip_bomb_highly_compressible_member() -> None:
    # given a 20 MB member of zeros (compresses ~1000:1)
    data = charx(**{"assets/other/zeros.bin": b"\0" * (20 * 1024 * 1024)})
    assert len(data) < 200_000

    with pytest.raises(CardError) as info:
        parse_card_bytes(data)

    assert (info.value.code, info.value.message) == (
        "zip_bomb",
        "A CHARX archive member has a suspicious compression ratio.",
    )


def test_zip_bomb_total_declared_size() -> None:
    limits = Limits(max_zip_total_bytes=300_000, max_zip_ratio=10_000)
    data = charx(**{f"assets/other/{i}.bin": bytes(100_000) for i in range(4)})

    with pytest.raises(CardError) as info:
        parse_card_bytes(data, limits=limits)

    assert info.value.code == "zip_bomb"


def _lie_about_size(data: bytes, name: bytes, declared: int) -> bytes:
    """Patch the local and central headers of member ``name`` to declare ``declared`` bytes."""
    out = bytearray(data)
    local = out.find(b"PK\x03\x04")
    while local != -1:
        name_len = struct.unpack_from("<H", out, local + 26)[0]
        if bytes(out[local + 30 : local + 30 + name_len]) == name:
            struct.pack_into("<I", out, local + 22, declared)
        local = out.find(b"PK\x03\x04", local + 4)
    central = out.find(b"PK\x01\x02")
    while central != -1:
        name_len = struct.unpack_from("<H", out, central + 28)[0]
        if bytes(out[central + 46 : central + 46 + name_len]) == name:
            struct.pack_into("<I", out, central + 24, declared)
        central = out.find(b"PK\x01\x02", central + 4)
    return bytes(out)


def test_lying_header_is_not_trusted() -> None:
    # given card.json declared as 10 bytes although it inflates to much more
    big = json.dumps({"spec": "chara_card_v3", "data": {"name": "骗子", "description": "长" * 5000}}).encode()
    data = _lie_about_size(make_zip({"card.json": big}), b"card.json", 10)

    # when / then: the read stops at the declared size and the archive is rejected
    with pytest.raises(CardError) as info:
        parse_card_bytes(data)

    assert info.value.code in ("bad_zip", "zip_bomb")


def test_bounded_read_stops_at_entry_cap() -> None:
    limits = Limits(max_zip_entry_bytes=10_000_000, max_json_bytes=1000)
    card = {"spec": "chara_card_v3", "data": {"name": "长", "description": "长" * 2000}}

    with pytest.raises(CardError) as info:
        parse_card_bytes(make_zip({"card.json": json.dumps(card).encode()}), limits=limits)

    assert info.value.code == "too_large"


def test_too_many_entries() -> None:
    data = make_zip({"card.json": json.dumps(CARD).encode(), **{f"x/{i}.txt": b"" for i in range(30)}})

    with pytest.raises(CardError) as info:
        parse_card_bytes(data, limits=Limits(max_zip_entries=20))

    assert (info.value.code, info.value.message) == (
        "too_many_entries",
        "The CHARX archive has 31 entries; at most 20 are accepted.",
    )


def test_corrupt_zip() -> None:
    data = bytearray(make_zip({"card.json": json.dumps(CARD).encode() * 3}))
    start = data.find(b"card.json") + len(b"card.json")
    data[start + 5 : start + 40] = b"\xff" * 35

    with pytest.raises(CardError) as info:
        parse_card_bytes(bytes(data))

    assert info.value.code == "bad_zip"


def test_truncated_zip() -> None:
    with pytest.raises(CardError) as info:
        parse_card_bytes(b"PK\x03\x04" + b"\0" * 40)

    assert info.value.code == "bad_zip"


def test_reader_counts_actual_bytes_against_total_budget() -> None:
    limits = Limits(max_zip_total_bytes=250_000, max_zip_ratio=10_000)
    data = make_zip({"a.bin": bytes(120_000), "b.bin": bytes(120_000), "c.bin": b"x"})

    with CharxReader(data, limits=limits) as archive:
        assert archive.read("a.bin") == bytes(120_000)
        assert archive.read("b.bin") == bytes(120_000)
        assert archive.read("nope.bin") is None
        assert archive.read("../a.bin") is None
        assert archive.read("c.bin") == b"x"
        with pytest.raises(CardError) as info:
            archive.read("a.bin")  # a second read still counts: 360,001 bytes > 250,000

    assert info.value.code == "zip_bomb"


def test_stored_member_crc_is_checked() -> None:
    data = bytearray(make_zip({"card.json": json.dumps(CARD).encode()}, compression=zipfile.ZIP_STORED))
    at = data.find(b'"spec"')
    data[at + 1] ^= 0x20

    with pytest.raises(CardError) as info:
        parse_card_bytes(bytes(data))

    assert info.value.code == "bad_zip"
